"""The admin UI's Teams, Users, Organizations, Models, Health and Settings pages through Flask's
test client (SQLite and PostgreSQL): what each role sees and may do is what the management routes
allow it, and no page shows a secret."""

import re

import pytest

from gateway.app import create_app
from gateway.config.settings import from_dict
from gateway.infra.redact import MARK
from gateway.infra.redact import masked
from tests.unit.ui.test_ui_pages import ADMIN
from tests.unit.ui.test_ui_pages import MASTER
from tests.unit.ui.test_ui_pages import api_user_key
from tests.unit.ui.test_ui_pages import csrf_of
from tests.unit.ui.test_ui_pages import database_url  # noqa: F401  (the SQLite / PostgreSQL fixture)
from tests.unit.ui.test_ui_pages import sign_in

PROVIDER_KEY = "sk-provider-secret-0123456789"
PAGES = ("/ui/keys", "/ui/logs", "/ui/usage", "/ui/teams", "/ui/users", "/ui/organizations", "/ui/models",
         "/ui/health", "/ui/settings")


@pytest.fixture
def app(database_url, tmp_path):  # noqa: F811
    app = create_app(from_dict({
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}},
                       {"model_name": "gpt", "litellm_params": {
                           "model": "openai/gpt-4o", "api_key": PROVIDER_KEY,
                           "api_base": "http://user:hunter2pass@127.0.0.1:9/v1"}}],
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite"), "redis_password": "redis-pw-123"},
        "general_settings": {"master_key": MASTER, "database_url": database_url, "store_model_in_db": True}},
        source="test"))
    yield app
    app.extensions["gateway"].store.get().engine.dispose()


@pytest.fixture
def admin(app):
    client = app.test_client()
    assert sign_in(client, key=MASTER).status_code == 302
    return client


def message(answer):
    found = re.search(r'id="message" role="alert">([^<]+)<', answer.text)
    return found.group(1) if found else None


def test_every_page_renders_for_the_admin_and_shows_no_secret(admin):
    for path in PAGES:
        answer = admin.get(path)
        assert answer.status_code == 200 and message(answer) is None, (path, message(answer))
        for secret in (MASTER, PROVIDER_KEY, "hunter2pass", "redis-pw-123"):
            assert secret not in answer.text, (path, secret)
    settings = admin.get("/ui/settings").text
    assert "&#34;master_key&#34;: &#34;[redacted]&#34;" in settings and "redis_password" in settings


def test_teams_members_and_blocks_as_the_admin(admin, app):
    csrf = csrf_of(admin.get("/ui/teams"))
    made = admin.post("/ui/teams", data={"csrf": csrf, "team_alias": "Alpha", "team_id": "alpha", "max_budget": "5"})
    assert made.status_code == 302 and made.headers["Location"].endswith("/ui/teams/alpha")
    added = admin.post("/ui/teams/alpha/members", data={"csrf": csrf, "action": "add", "user_id": "dana@example.com",
                                                        "role": "admin"})
    assert added.status_code == 302
    page = admin.get("/ui/teams/alpha").text
    assert "dana@example.com" in page and "$5" in page
    user_id = re.search(r'<tr data-user="([^"]+)">', page).group(1)
    assert admin.post("/ui/teams/alpha/members", data={"csrf": csrf, "action": "role", "user_id": user_id,
                                                       "role": "user"}).status_code == 302
    assert admin.post("/ui/teams/alpha/block", data={"csrf": csrf}).status_code == 302
    assert 'id="team-state">blocked' in admin.get("/ui/teams/alpha").text
    assert admin.post("/ui/teams/alpha/members", data={"csrf": csrf, "action": "remove",
                                                       "user_id": user_id}).status_code == 302
    assert "dana@example.com" not in admin.get("/ui/teams/alpha").text
    assert admin.post("/ui/teams", data={"csrf": csrf, "team_alias": "x", "max_budget": "lots"}).status_code == 400


def test_a_team_admin_manages_its_members_and_nothing_above_it(app, admin):
    key = api_user_key(app, "tina", team="t-own", team_role="admin")
    api_user_key(app, "otto", team="t-other")
    client = app.test_client()
    sign_in(client, key=key)
    teams = client.get("/ui/teams").text
    assert "t-own" in teams and "t-other" not in teams
    csrf = csrf_of(client.get("/ui/teams"))
    app.test_client().post("/user/new", json={"user_id": "newbie"}, headers=ADMIN)
    assert client.post("/ui/teams/t-own/members", data={"csrf": csrf, "action": "add", "user_id": "newbie"}
                       ).status_code == 302
    assert "newbie" in client.get("/ui/teams/t-own").text
    refused = client.post("/ui/teams/t-other/members", data={"csrf": csrf, "action": "add", "user_id": "newbie"})
    assert refused.status_code == 403
    blocked = client.post("/ui/teams/t-own/block", data={"csrf": csrf})
    assert blocked.status_code == 403 and "role internal_user may not call this route" in message(blocked)
    made = client.post("/ui/teams", data={"csrf": csrf, "team_alias": "mine"})
    assert made.status_code == 403
    assert client.get("/ui/settings").status_code == 403 and client.get("/ui/health").status_code == 403


def test_a_viewer_reads_the_pages_and_changes_nothing(app, admin):
    key = api_user_key(app, "val", role="proxy_admin_viewer")
    viewer = app.test_client()
    sign_in(viewer, key=key)
    for path in ("/ui/teams", "/ui/users", "/ui/organizations", "/ui/models", "/ui/settings"):
        assert viewer.get(path).status_code == 200, path
    csrf = csrf_of(viewer.get("/ui/teams"))
    for path, form in (("/ui/teams", {"team_alias": "v"}), ("/ui/users", {"user_id": "v2"}),
                       ("/ui/organizations", {"organization_alias": "v"}),
                       ("/ui/models", {"model_name": "v", "model": "openai/v"})):
        answer = viewer.post(path, data={"csrf": csrf, **form})
        assert answer.status_code == 403 and "may not call this route" in message(answer), path
    assert "v2" not in admin.get("/ui/users").text


def test_users_and_organizations_are_added_and_listed(admin):
    csrf = csrf_of(admin.get("/ui/users"))
    assert admin.post("/ui/users", data={"csrf": csrf, "user_id": "ulla", "user_email": "ulla@example.com",
                                         "user_role": "internal_user_viewer"}).status_code == 302
    users = admin.get("/ui/users").text
    assert "ulla@example.com" in users and "internal_user_viewer" in users
    assert admin.post("/ui/organizations", data={"csrf": csrf, "organization_id": "acme",
                                                 "organization_alias": "Acme"}).status_code == 302
    assert "Acme" in admin.get("/ui/organizations").text


def test_a_database_model_is_added_without_showing_its_key_and_deleted(admin):
    csrf = csrf_of(admin.get("/ui/models"))
    secret = "sk-db-model-secret-0123456789"
    added = admin.post("/ui/models", data={"csrf": csrf, "model_name": "extra", "model": "openai/gpt-4o-mini",
                                           "api_base": "http://127.0.0.1:9/v1", "api_key": secret})
    assert added.status_code == 302
    page = admin.get("/ui/models").text
    assert "extra" in page and secret not in page and "database" in page
    model_id = re.search(r'/ui/models/([^/"]+)/delete', page).group(1)
    assert admin.post(f"/ui/models/{model_id}/delete", data={"csrf": csrf}).status_code == 302
    assert ">extra<" not in admin.get("/ui/models").text
    config_model = admin.post("/ui/models/not-a-db-model/delete", data={"csrf": csrf})
    assert config_model.status_code in (400, 404) and message(config_model)


def test_health_shows_each_deployment_and_checks_them_on_request(admin):
    page = admin.get("/ui/health").text
    assert "sqlite connected" in page or "postgresql connected" in page
    assert "demo/echo" in page and "openai/gpt-4o" in page and "hunter2pass" not in page
    assert re.findall(r'class="last-check">([^<]*)<', page) == ["never", "never"]
    checked = admin.post("/ui/health", data={"csrf": csrf_of(admin.get("/ui/health"))}).text
    assert re.findall(r'class="check">([^<]*)<', checked) == ["healthy", "unhealthy"]
    assert PROVIDER_KEY not in checked and "hunter2pass" not in checked
    for path in ("/ui/health", "/ui/models"):  # the last check, kept in the shared state for every worker
        later = admin.get(path).text
        assert [text.split(" at ")[0] for text in re.findall(r'class="last-check">([^<]*)<', later)] == [
            "healthy", "unhealthy"], path


def test_masked_hides_credential_fields_urls_and_known_secrets():
    config = {"master_key": "sk-1234567890", "nested": {"redis_password": "pw", "token": None},
              "url": "postgresql://u:secretpw@db:5432/x", "note": "uses sk-abcdef123456 and s3cr3t-value",
              "list": ["s3cr3t-value"], "flag": False}
    shown = masked(config, secrets=["s3cr3t-value"])
    assert shown["master_key"] == MARK and shown["nested"] == {"redis_password": MARK, "token": None}
    assert "secretpw" not in shown["url"] and "db:5432" in shown["url"]
    assert shown["note"] == f"uses {MARK} and {MARK}" and shown["list"] == [MARK] and shown["flag"] is False


def test_a_team_and_a_database_model_are_edited_and_a_team_admin_may_change_its_alias_only(app, admin):
    csrf = csrf_of(admin.get("/ui/teams"))
    admin.post("/ui/teams", data={"csrf": csrf, "team_id": "edit-me"})
    assert admin.post("/ui/teams/edit-me/edit", data={"csrf": csrf, "team_alias": "Edited", "max_budget": "7.5",
                                                      "rpm_limit": "30", "models": "demo"}).status_code == 302
    page = admin.get("/ui/teams/edit-me").text
    assert "Edited" in page and "$7.50" in page and "rpm 30" in page
    key = api_user_key(app, "tadmin", team="edit-me", team_role="admin")
    team_admin = app.test_client()
    sign_in(team_admin, key=key)
    tcsrf = csrf_of(team_admin.get("/ui/teams"))
    shown = {"team_alias": "Renamed", "max_budget": "7.5", "rpm_limit": "30", "models": "demo", "tpm_limit": "",
             "budget_duration": ""}  # the whole form, as the browser sends it: only the alias changed
    assert team_admin.post("/ui/teams/edit-me/edit", data={"csrf": tcsrf, **shown}).status_code == 302
    assert "Renamed" in team_admin.get("/ui/teams/edit-me").text
    refused = team_admin.post("/ui/teams/edit-me/edit", data={"csrf": tcsrf, **shown, "max_budget": "100"})
    assert refused.status_code == 403 and "max_budget" in message(refused)
    secret = "sk-db-model-secret-0123456789"
    admin.post("/ui/models", data={"csrf": csrf, "model_name": "editable", "model": "openai/gpt-4o-mini",
                                   "api_base": "http://127.0.0.1:9/v1", "api_key": secret})
    page = admin.get("/ui/models").text
    model_id = re.search(r'/ui/models/([^/"]+)/edit', page).group(1)
    assert admin.post(f"/ui/models/{model_id}/edit", data={"csrf": csrf, "api_base": "http://127.0.0.1:7/v1",
                                                           "rpm": "42"}).status_code == 302
    page = admin.get("/ui/models").text
    assert "http://127.0.0.1:7/v1" in page and 'value="42"' in page and secret not in page
    bad = admin.post(f"/ui/models/{model_id}/edit", data={"csrf": csrf, "rpm": "many"})
    assert bad.status_code == 400 and "rpm must be a number" in message(bad)
