"""The admin UI through Flask's test client, on SQLite and PostgreSQL: sign-in (master key,
UI_USERNAME / UI_PASSWORD, a user's key), server-side sessions, CSRF and origin checks, the
security headers, text that would be markup rendered as text, and each role's view coming from the
route policy (the pages call the management routes as the signed-in caller). The same flows in a
real browser: tests/browser/."""

import contextlib
import csv
import io
import re

import pytest
from sqlalchemy import text

from gateway.app import create_app
from gateway.config.settings import from_dict
from tests.pg import schema_url as pg_schema

MASTER = "sk-master-ui-0123456789"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
XSS = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    with contextlib.ExitStack() as stack:
        yield (f"sqlite:///{tmp_path / 'ui.sqlite'}" if request.param == "sqlite"
               else stack.enter_context(pg_schema()))


@pytest.fixture
def app(database_url, tmp_path, monkeypatch):
    monkeypatch.delenv("UI_USERNAME", raising=False)
    monkeypatch.delenv("UI_PASSWORD", raising=False)
    monkeypatch.delenv("LITELLM_UI_SESSION_DURATION", raising=False)
    app = create_app(from_dict({
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")},
        "general_settings": {"master_key": MASTER, "database_url": database_url}}, source="test"))
    yield app
    app.extensions["gateway"].store.get().engine.dispose()


def csrf_of(page):
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text).group(1)


def sign_in(client, **form):
    page = client.get("/ui/login")
    return client.post("/ui/login", data={"csrf": csrf_of(page), **form})


@pytest.fixture
def admin(app):
    client = app.test_client()
    assert sign_in(client, key=MASTER).status_code == 302
    return client


def new_key(admin_client, **form):
    page = admin_client.get("/ui/keys")
    answer = admin_client.post("/ui/keys", data={"csrf": csrf_of(page), **form})
    found = re.search(r'id="new-key">(sk-[^<]+)<', answer.text)
    return answer, found.group(1) if found else None


def api_user_key(app, user_id, role="internal_user", team=None, team_role="user"):
    client = app.test_client()
    assert client.post("/user/new", json={"user_id": user_id, "user_role": role}, headers=ADMIN).status_code == 200
    if team is not None:
        client.post("/team/new", json={"team_id": team}, headers=ADMIN)
        assert client.post("/team/member_add", json={"team_id": team, "member": {"user_id": user_id,
                                                                                   "role": team_role}},
                           headers=ADMIN).status_code == 200
    answer = client.post("/key/generate", json={"user_id": user_id, "key_alias": f"{user_id}-key"}, headers=ADMIN)
    return answer.get_json()["key"]


# ---- sign-in and sessions ------------------------------------------------------------------------------

def test_pages_send_a_caller_without_a_session_to_sign_in(app):
    client = app.test_client()
    for path in ("/ui/", "/ui/keys", "/ui/logs", "/ui/usage", "/ui/usage.csv", "/ui/keys/abc"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].endswith("/ui/login"), path


def test_the_master_key_signs_in_to_a_server_side_session_in_a_strict_httponly_cookie(app, database_url):
    client = app.test_client()
    answer = sign_in(client, key=MASTER)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/ui/keys")
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here; over HTTPS it is Secure (next test)
    token = re.match(r"gateway_ui=([^;]+);", cookie).group(1)
    assert client.get("/ui/keys").status_code == 200
    # The database holds the token's hash and who signed in, never the token or the master key.
    with app.extensions["gateway"].store.get().engine.connect() as connection:
        rows = [tuple(r) for r in connection.execute(text("SELECT id, kind, key_hash FROM gateway_ui_sessions"))]
    assert len(rows) == 1 and rows[0][1:] == ("admin", None)
    assert token not in repr(rows) and MASTER not in repr(rows)


def test_the_session_cookie_is_secure_over_https(app):
    client = app.test_client()
    page = client.get("/ui/login", base_url="https://gateway.example")
    answer = client.post("/ui/login", data={"csrf": csrf_of(page), "key": MASTER}, base_url="https://gateway.example")
    assert answer.status_code == 302 and "Secure" in answer.headers["Set-Cookie"]


def test_a_wrong_key_or_password_is_refused_with_a_message(app, monkeypatch):
    client = app.test_client()
    answer = sign_in(client, key="sk-not-a-key-of-this-gateway")
    assert answer.status_code == 401 and "Invalid API key" in answer.text
    assert "gateway_ui=" not in answer.headers.get("Set-Cookie", "")
    monkeypatch.setenv("UI_USERNAME", "admin")
    monkeypatch.setenv("UI_PASSWORD", "correct horse battery")
    assert sign_in(client, username="admin", password="wrong").status_code == 401
    assert sign_in(client, username="admin", password="correct horse battery").status_code == 302
    assert client.get("/ui/keys").status_code == 200


def test_password_sign_in_is_off_unless_both_variables_are_set(app, monkeypatch):
    monkeypatch.setenv("UI_USERNAME", "admin")
    client = app.test_client()
    assert 'id="login-password"' not in client.get("/ui/login").text
    assert sign_in(client, username="admin", password="").status_code == 401


def test_sign_out_ends_the_session_on_the_server(app):
    client = app.test_client()
    answer = sign_in(client, key=MASTER)
    token = re.match(r"gateway_ui=([^;]+);", answer.headers["Set-Cookie"]).group(1)
    page = client.get("/ui/keys")
    assert client.post("/ui/logout", data={"csrf": csrf_of(page)}).status_code == 302
    # The old cookie, sent again (as a stolen copy would be), is refused.
    replay = app.test_client()
    replay.set_cookie("gateway_ui", token, path="/ui")
    assert replay.get("/ui/keys").status_code == 302


def test_an_expired_session_is_refused(app):
    from datetime import datetime
    from datetime import timedelta
    from datetime import timezone

    from gateway.ui.web import _sessions
    with app.test_request_context("/ui/keys"):
        sessions = _sessions()
        token = sessions.start("admin")
        later = datetime.now(timezone.utc) + timedelta(seconds=sessions.seconds + 1)
        assert sessions.find(token) == ("admin", None)
        assert sessions.find(token, now=later) is None


def test_a_key_without_a_user_cannot_sign_in_and_a_blocked_users_key_loses_its_session(app):
    client = app.test_client()
    bare = client.post("/key/generate", json={}, headers=ADMIN).get_json()["key"]
    answer = sign_in(client, key=bare)
    assert answer.status_code == 401 and "no user" in answer.text
    key = api_user_key(app, "ana")
    user = app.test_client()
    assert sign_in(user, key=key).status_code == 302 and user.get("/ui/keys").status_code == 200
    assert client.post("/key/block", json={"key": key}, headers=ADMIN).status_code == 200
    assert user.get("/ui/keys").status_code == 302  # the key's rules are read again on every page


# ---- forms: CSRF and origin ----------------------------------------------------------------------------

def test_a_form_without_the_csrf_token_or_from_another_origin_is_refused(admin):
    token = csrf_of(admin.get("/ui/keys"))
    assert admin.post("/ui/keys", data={"key_alias": "x"}).status_code == 403
    assert admin.post("/ui/keys", data={"key_alias": "x", "csrf": "0" * 64}).status_code == 403
    assert admin.post("/ui/keys", data={"key_alias": "x", "csrf": token},
                      headers={"Origin": "https://evil.example"}).status_code == 403
    assert admin.post("/ui/keys", data={"key_alias": "x", "csrf": token},
                      headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert admin.post("/ui/keys", data={"key_alias": "x", "csrf": token},
                      headers={"Origin": "http://localhost"}).status_code == 200


def test_the_sign_in_form_needs_its_csrf_token_too(app):
    client = app.test_client()
    client.get("/ui/login")
    assert client.post("/ui/login", data={"key": MASTER}).status_code == 403


def test_a_header_cannot_carry_a_ui_caller_to_the_api(app):
    answer = app.test_client().get("/key/list", headers={"Gateway.Ui.Caller": "master", "gateway-ui-caller": "x"})
    assert answer.status_code == 401


# ---- pages ---------------------------------------------------------------------------------------------

def test_every_page_carries_the_security_headers_and_no_inline_script(admin):
    for path in ("/ui/login", "/ui/keys", "/ui/logs", "/ui/usage"):
        answer = admin.get(path)
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["Cache-Control"] == "no-store"
        assert re.search(r"<script(?![^>]*\bsrc=)", answer.text) is None, path  # every script is a file
        assert " style=" not in answer.text and "<style" not in answer.text and "javascript:" not in answer.text


def test_a_new_key_is_shown_once_then_only_its_hint(admin):
    answer, key = new_key(admin, key_alias="billing", max_budget="0.05", models="demo", budget_duration="30d")
    assert answer.status_code == 200 and key is not None
    listed = admin.get("/ui/keys")
    assert key not in listed.text and f"sk-...{key[-4:]}" in listed.text and "billing" in listed.text
    assert "$0.05" in listed.text


def test_markup_in_every_field_renders_as_text(admin, app):
    answer, key = new_key(admin, key_alias=XSS, metadata='{"note": "%s"}' % XSS.replace('"', '\\"'),
                          user_id=XSS[:40], team_id="")
    page = admin.get("/ui/keys").text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    token = re.search(r'data-token="([0-9a-f]{64})"', page).group(1)
    detail = admin.get(f"/ui/keys/{token}").text
    assert "<script>alert(1)" not in detail and "<img src=x" not in detail and "&#34;" in detail


def test_bad_form_values_are_said_on_the_page(admin):
    answer, key = new_key(admin, key_alias="x", max_budget="lots")
    assert answer.status_code == 400 and key is None and "max_budget must be a number" in answer.text
    answer, key = new_key(admin, key_alias="x", metadata="{not json")
    assert answer.status_code == 400 and "metadata must be a JSON object" in answer.text
    answer, key = new_key(admin, key_alias="x", duration="soon")
    assert answer.status_code == 400 and key is None and "duration" in answer.text


def test_block_unblock_edit_regenerate_and_delete(admin, app):
    _, key = new_key(admin, key_alias="ops")
    page = admin.get("/ui/keys")
    token = re.search(r'data-token="([0-9a-f]{64})"', page.text).group(1)
    csrf = csrf_of(page)
    call = app.test_client()
    chat = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    assert call.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert admin.post(f"/ui/keys/{token}/block", data={"csrf": csrf}).status_code == 302
    assert "blocked" in admin.get("/ui/keys?state=blocked").text
    refused = call.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "key_blocked"
    assert admin.post(f"/ui/keys/{token}/unblock", data={"csrf": csrf}).status_code == 302
    assert admin.post(f"/ui/keys/{token}", data={"csrf": csrf, "key_alias": "ops-2", "rpm_limit": "7",
                                                  "models": "demo", "max_budget": ""}).status_code == 302
    detail = admin.get(f"/ui/keys/{token}").text
    assert 'value="ops-2"' in detail and 'value="7"' in detail
    regenerated = admin.post(f"/ui/keys/{token}/regenerate", data={"csrf": csrf})
    fresh = re.search(r'id="new-key">(sk-[^<]+)<', regenerated.text).group(1)
    assert fresh != key
    assert call.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    token = re.search(r'data-token="([0-9a-f]{64})"', admin.get("/ui/keys?q=ops-2").text).group(1)
    assert admin.post(f"/ui/keys/{token}/delete", data={"csrf": csrf}).status_code == 302
    assert "ops-2" not in admin.get("/ui/keys").text


def test_a_user_sees_its_own_keys_and_is_told_what_its_role_may_not_see(app, admin):
    new_key(admin, key_alias="someone-elses")
    key = api_user_key(app, "bo")
    user = app.test_client()
    sign_in(user, key=key)
    page = user.get("/ui/keys").text
    assert "bo-key" in page and "someone-elses" not in page
    usage = user.get("/ui/usage")
    assert usage.status_code == 403 and "may not call this route" in usage.text
    # Its own key: it may block it (policy: own keys), never another's.
    other = re.search(r'data-token="([0-9a-f]{64})"[^<]*<td class="alias"><a[^>]*>someone-elses',
                      admin.get("/ui/keys").text).group(1)
    refused = user.post(f"/ui/keys/{other}/block", data={"csrf": csrf_of(user.get('/ui/keys'))})
    assert refused.status_code in (403, 404) and "someone-elses" not in refused.text


def test_a_viewer_reads_everything_and_changes_nothing(app, admin):
    new_key(admin, key_alias="visible-to-viewer")
    key = api_user_key(app, "vi", role="proxy_admin_viewer")
    viewer = app.test_client()
    sign_in(viewer, key=key)
    page = viewer.get("/ui/keys")
    assert "visible-to-viewer" in page.text
    answer = viewer.post("/ui/keys", data={"csrf": csrf_of(page), "key_alias": "nope"})
    assert answer.status_code == 403 and "may not call this route" in answer.text
    assert viewer.get("/ui/usage").status_code == 200


def test_logs_and_usage_show_a_call_and_its_cost(app, admin):
    _, key = new_key(admin, key_alias="spender")
    call = app.test_client()
    answer = call.post("/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                       headers={"Authorization": f"Bearer {key}"})
    request_id = answer.headers["x-request-id"]
    app.extensions["gateway"].spend.ledger.flush()
    logs = admin.get("/ui/logs").text
    assert request_id[:12] in logs and "spender" in logs
    detail = admin.get(f"/ui/logs/{request_id}").text
    assert request_id in detail and "success" in detail
    for by in ("team", "end_user", "key", "model"):
        assert admin.get(f"/ui/usage?by={by}").status_code == 200
    assert "spender" in admin.get("/ui/usage?by=key").text
    assert ">echo<" in admin.get("/ui/usage?by=model").text  # the model that served it
    exported = admin.get("/ui/usage.csv?by=key")
    assert exported.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == ["day", "key", "spend_usd"] and rows[1][1] == "spender"


def test_logs_page_on_past_the_newest_rows(app, admin):
    client = app.test_client()
    chat = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    ids = [client.post("/v1/chat/completions", json=chat, headers=ADMIN).headers["x-request-id"] for _ in range(53)]
    app.extensions["gateway"].spend.ledger.flush()
    first = admin.get("/ui/logs").text
    older = re.search(r'href="([^"]+)" id="older"', first).group(1).replace("&amp;", "&")
    second = admin.get(older).text
    seen = set(re.findall(r'class="request" href="/ui/logs/([A-Za-z0-9_]+)"', first + second))
    assert seen == set(ids) and 'id="older"' not in second


def test_a_bad_filter_is_said_on_the_page(admin):
    answer = admin.get("/ui/logs?start_date=yesterday")
    assert answer.status_code == 400 and "start_date" in answer.text
    answer = admin.get("/ui/usage?start_date=2026-13-40")
    assert answer.status_code != 200 and "start_date" in answer.text


def test_csv_cells_never_start_a_formula():
    from gateway.ui.usage import _cell
    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _cell("-1+1") == "'-1+1" and _cell("team") == "team"


def test_without_a_master_key_the_ui_says_how_to_turn_it_on(tmp_path):
    app = create_app(from_dict({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}]},
                               source="test"))
    answer = app.test_client().get("/ui/login")
    assert answer.status_code == 503 and "master_key" in answer.text


def test_a_rows_details_say_its_retries_fallbacks_and_error(tmp_path, database_url):
    """The ledger keeps how a call went; the Logs page's row details show it."""
    dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port: connection refused
    app = create_app(from_dict({
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}},
                       {"model_name": "down", "litellm_params": {"model": "openai/gpt-4o", "api_base": dead,
                                                                 "api_key": "sk-unused-0123456789"}}],
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite"), "num_retries": 1,
                            "fallbacks": [{"down": ["demo"]}], "cooldown_time": 0},
        "general_settings": {"master_key": MASTER, "database_url": database_url}}, source="test"))
    try:
        call = app.test_client()
        chat = {"model": "down", "messages": [{"role": "user", "content": "hi"}]}
        saved = call.post("/v1/chat/completions", json=chat, headers=ADMIN)
        failed = call.post("/v1/chat/completions", json={**chat, "fallbacks": []}, headers={
            **ADMIN, "x-litellm-disable-fallbacks": "true"})
        assert saved.status_code == 200 and failed.status_code >= 500
        app.extensions["gateway"].spend.ledger.flush()
        admin = app.test_client()
        sign_in(admin, key=MASTER)
        details = admin.get(f"/ui/logs/{saved.headers['x-request-id']}").text
        assert re.search(r'id="log-retries">1<', details) and re.search(r'id="log-fallbacks">1<', details)
        error = admin.get(f"/ui/logs/{failed.headers['x-request-id']}").text
        assert re.search(r'id="log-error">5\d\d [a-z_]+: [^<]*connect', error, re.I), error[-800:]
        assert "sk-unused" not in error
    finally:
        app.extensions["gateway"].store.get().engine.dispose()


def test_a_key_made_with_aliases_and_config_serves_them(admin, app):
    _, key = new_key(admin, key_alias="aliased", aliases='{"fast": "demo"}', config='{"num_retries": 0}')
    answer = app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                    json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200
    token = re.search(r'data-token="([0-9a-f]{64})"', admin.get("/ui/keys?q=aliased").text).group(1)
    detail = admin.get(f"/ui/keys/{token}").text
    assert 'value="{&#34;fast&#34;: &#34;demo&#34;}"' in detail
    bad, made = new_key(admin, key_alias="x", aliases="[1")
    assert bad.status_code == 400 and made is None and "aliases must be a JSON object" in bad.text


def test_a_database_that_cannot_be_reached_is_a_503_page(tmp_path):
    app = create_app(from_dict({
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")},
        "general_settings": {"master_key": MASTER,
                             "database_url": "postgresql+psycopg2://postgres@127.0.0.1:9/nothing"}}, source="test"))
    client = app.test_client()
    answer = sign_in(client, key=MASTER)
    assert answer.status_code == 503 and "<h1>That did not work</h1>" in answer.text and "Traceback" not in answer.text
    client.set_cookie("gateway_ui", "x" * 43, path="/ui")
    answer = client.get("/ui/keys")
    assert answer.status_code == 503 and "unavailable" in answer.text


def test_failed_sign_ins_are_throttled_per_address(app):
    from gateway.ui.web import SIGN_IN_FAILURES
    client = app.test_client()
    for _ in range(SIGN_IN_FAILURES):
        assert sign_in(client, key="sk-guess-0123456789abcdef").status_code == 401
    throttled = sign_in(client, key=MASTER)  # even the right key waits out the minute
    assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text
    other = app.test_client()
    page = other.get("/ui/login", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.post("/ui/login", data={"csrf": csrf_of(page), "key": MASTER},
                      environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 302


def test_an_owner_renames_its_key_with_the_whole_form_though_a_limit_is_above_its_own(app, admin):
    client = app.test_client()
    client.post("/user/new", json={"user_id": "capped", "rpm_limit": 10}, headers=ADMIN)
    made = client.post("/key/generate", json={"user_id": "capped", "key_alias": "mine", "rpm_limit": 50},
                       headers=ADMIN).get_json()  # a proxy admin may set it above the user's
    owner = app.test_client()
    sign_in(owner, key=made["key"])
    page = owner.get(f"/ui/keys/{made['token']}")
    form = dict(re.findall(r'<input name="([a-z_]+)" id="f-[a-z_]+" value="([^"]*)"', page.text))
    assert form["rpm_limit"] == "50"
    saved = owner.post(f"/ui/keys/{made['token']}", data={"csrf": csrf_of(page), **form, "key_alias": "renamed"})
    assert saved.status_code == 302 and 'value="renamed"' in owner.get(f"/ui/keys/{made['token']}").text
    raised = owner.post(f"/ui/keys/{made['token']}", data={"csrf": csrf_of(page), **form, "rpm_limit": "60"})
    assert raised.status_code == 403 and "rpm_limit" in raised.text
