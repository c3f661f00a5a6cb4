"""Users, teams, organizations and end users through a real gunicorn + gevent gateway (2 workers, on
SQLite and on PostgreSQL), called as LiteLLM's docs show (curl, `requests`, the `openai` SDK)."""

import contextlib
import json
import subprocess
import uuid

import openai
import pytest
import requests
import yaml

from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port
from tests.pg import schema_url as pg_schema

pytestmark = pytest.mark.integration

MASTER = "sk-1234"
MODELS = ("gpt-3.5-turbo", "gpt-4", "claude-2")
HELLO = [{"role": "user", "content": "hello"}]


class Gateway:
    """The running gateway and a few ways to call it."""

    def __init__(self, proc):
        self.url = proc.url

    def admin(self, method, path, **kwargs):
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {MASTER}"},
                                timeout=30, **kwargs)

    def ok(self, method, path, **kwargs):
        resp = self.admin(method, path, **kwargs)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        return resp.json()

    def curl(self, script):
        """A curl command written as LiteLLM's docs write them (their host and port replaced)."""
        script = script.replace("http://0.0.0.0:4000", self.url)
        done = subprocess.run(["bash", "-c", script + " --silent --show-error --fail-with-body"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (script, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def chat(self, key, model="gpt-4"):
        """One call on a new connection (so calls spread over both workers): (status, error code)."""
        resp = requests.post(self.url + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": model, "messages": HELLO}, timeout=30)
        code = resp.json().get("error", {}).get("code") if resp.status_code >= 400 else None
        return resp.status_code, code

    def statuses(self, key, model="gpt-4", n=8):
        return {self.chat(key, model) for _ in range(n)}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"hierarchy-{request.param}")
    general = {"master_key": MASTER}
    env = {}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            general["database_url"] = stack.enter_context(pg_schema())
        else:
            env["DATABASE_URL"] = f"sqlite:///{tmp / 'keys.sqlite'}"
        models = [{"model_name": name, "litellm_params": {"model": "demo/echo"}} for name in MODELS]
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump({"model_list": models, "general_settings": general}))
        proc = GatewayProcess(["--config", str(path), "--num_workers", "2"], env, tmp / "gateway.log", free_port())
        stack.callback(proc.stop)  # before the schema is dropped
        proc.wait_ready()
        yield Gateway(proc)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- the routes as LiteLLM's docs call them --------------------------------------------------------

def test_management_routes_as_the_docs_call_them(gw):
    org = gw.curl("""curl --location 'http://0.0.0.0:4000/organization/new' \\
    --header 'Authorization: Bearer sk-1234' \\
    --header 'Content-Type: application/json' \\
    --data '{"organization_alias": "my-secret-org", "models": ["gpt-4", "gpt-3.5-turbo"], "max_budget": 100}'""")
    org_id = org["organization_id"]
    assert org["organization_alias"] == "my-secret-org" and org["max_budget"] == 100

    team = gw.curl(f"""curl --location 'http://0.0.0.0:4000/team/new' \\
    --header 'Authorization: Bearer sk-1234' \\
    --header 'Content-Type: application/json' \\
    --data '{{"team_alias": "my-new-team", "organization_id": "{org_id}", "max_budget": 10,
              "members_with_roles": [{{"role": "admin", "user_id": "user-1234"}}]}}'""")
    team_id = team["team_id"]
    assert team["members_with_roles"] == [{"role": "admin", "user_id": "user-1234", "user_email": None}]

    email = f"{unique('krrish')}@berri.ai"
    user = gw.curl(f"""curl --location 'http://0.0.0.0:4000/user/new' \\
    --header 'Authorization: Bearer sk-1234' \\
    --header 'Content-Type: application/json' \\
    --data '{{"user_email": "{email}", "user_role": "internal_user", "max_budget": 10}}'""")
    assert user["user_email"] == email and user["user_role"] == "internal_user" and user["key"].startswith("sk-")

    added = gw.curl(f"""curl -X POST 'http://0.0.0.0:4000/team/member_add' \\
    -H 'Authorization: Bearer sk-1234' \\
    -H 'Content-Type: application/json' \\
    -d '{{"team_id": "{team_id}", "member": {{"role": "user", "user_id": "{user['user_id']}"}}}}'""")
    assert {m["user_id"] for m in added["members_with_roles"]} == {"user-1234", user["user_id"]}

    key = gw.curl(f"""curl 'http://0.0.0.0:4000/key/generate' \\
    --header 'Authorization: Bearer sk-1234' \\
    --header 'Content-Type: application/json' \\
    --data '{{"team_id": "{team_id}", "user_id": "{user['user_id']}"}}'""")
    assert key["team_id"] == team_id

    info = gw.curl(f"""curl --location 'http://0.0.0.0:4000/team/info?team_id={team_id}' \\
    --header 'Authorization: Bearer sk-1234'""")
    assert [k["token"] for k in info["keys"]] == [key["token"]]
    assert info["team_info"]["organization_id"] == org_id
    user_info = gw.curl(f"""curl -X GET 'http://0.0.0.0:4000/user/info?user_id={user['user_id']}' \\
    -H 'Authorization: Bearer sk-1234'""")
    assert user_info["user_info"]["teams"] == [team_id] and len(user_info["keys"]) == 2
    org_info = gw.curl(f"""curl --location 'http://0.0.0.0:4000/organization/info?organization_id={org_id}' \\
    --header 'Authorization: Bearer sk-1234'""")
    assert org_info["teams"][0]["team_id"] == team_id
    gw.curl(f"""curl --location --request PATCH 'http://0.0.0.0:4000/organization/update' \\
    --header 'Authorization: Bearer sk-1234' \\
    --header 'Content-Type: application/json' \\
    --data '{{"organization_id": "{org_id}", "max_budget": 200}}'""")
    assert gw.ok("GET", "/organization/info", params={"organization_id": org_id})["max_budget"] == 200
    assert team_id in {t["team_id"] for t in gw.curl("""curl --location 'http://0.0.0.0:4000/team/list' \\
    --header 'Authorization: Bearer sk-1234'""")}
    listed = gw.curl("""curl -X GET 'http://0.0.0.0:4000/user/list?page=1&page_size=100' \\
    -H 'Authorization: Bearer sk-1234'""")
    assert user["user_id"] in {u["user_id"] for u in listed["users"]}

    end_user = unique("ishaan-jaff")
    made = gw.curl(f"""curl --location 'http://0.0.0.0:4000/customer/new' \\
    --header 'Authorization: Bearer sk-1234' \\
    --header 'Content-Type: application/json' \\
    --data '{{"user_id": "{end_user}", "max_budget": 0.5, "budget_duration": "30d"}}'""")
    assert made["user_id"] == end_user and made["budget_reset_at"] is not None
    assert gw.curl(f"""curl -X GET 'http://0.0.0.0:4000/customer/info?end_user_id={end_user}' \\
    -H 'Authorization: Bearer sk-1234'""")["max_budget"] == 0.5
    assert gw.ok("GET", "/end_user/info", params={"end_user_id": end_user})["user_id"] == end_user  # alias
    assert gw.curl(f"""curl -X POST 'http://0.0.0.0:4000/customer/block' \\
    -H 'Authorization: Bearer sk-1234' \\
    -d '{{"user_ids": ["{end_user}"]}}'""")["blocked_users"][0]["blocked"] is True
    deleted = gw.curl(f"""curl --location 'http://0.0.0.0:4000/customer/delete' \\
    --header 'Authorization: Bearer sk-1234' \\
    --header 'Content-Type: application/json' \\
    --data '{{"user_ids": ["{end_user}"]}}'""")
    assert deleted["deleted_customers"] == 1
    assert gw.admin("GET", "/customer/info", params={"end_user_id": end_user}).status_code == 404


def test_errors_carry_the_envelope_and_litellms_statuses(gw):
    team_id = unique("dup")
    gw.ok("POST", "/team/new", json={"team_id": team_id})
    again = gw.admin("POST", "/team/new", json={"team_id": team_id})
    assert again.status_code == 400 and "already exists" in again.json()["error"]["message"]
    email = f"{unique('dup')}@x.io"
    gw.ok("POST", "/user/new", json={"user_email": email, "auto_create_key": False})
    clash = gw.admin("POST", "/user/new", json={"user_email": email.upper()})
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "user_exists"
    for method, path, kwargs in (("GET", "/team/info", {"params": {"team_id": "nope"}}),
                                 ("GET", "/user/info", {"params": {"user_id": "nope"}}),
                                 ("POST", "/team/delete", {"json": {"team_ids": ["nope"]}}),
                                 ("POST", "/key/generate", {"json": {"team_id": "nope"}})):
        resp = gw.admin(method, path, **kwargs)
        assert resp.status_code == 404, (path, resp.text)
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    bad = gw.admin("POST", "/team/new", json={"team_id": "t", "rpm_limit": 2**31})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rpm_limit"
    html = gw.ok("POST", "/team/new", json={"team_alias": "<script>alert(1)</script>"})
    resp = gw.admin("GET", "/team/info", params={"team_id": html["team_id"]})
    assert resp.headers["Content-Type"].startswith("application/json")  # never rendered as HTML


# ---- what keys inherit, on both workers at once ----------------------------------------------------

@pytest.mark.parametrize("change", ["block", "delete"])
def test_a_team_key_is_refused_once_its_team_is_blocked_or_deleted(gw, change):
    team_id = gw.ok("POST", "/team/new", json={"team_alias": "t"})["team_id"]
    key = gw.ok("POST", "/key/generate", json={"team_id": team_id})["key"]
    for _ in range(3):
        assert gw.statuses(key) == {(200, None)}  # cached on both workers
    if change == "block":
        gw.ok("POST", "/team/block", json={"team_id": team_id})
        for _ in range(3):  # every call after the answer, on either worker
            assert gw.statuses(key) == {(403, "team_blocked")}
        gw.ok("POST", "/team/unblock", json={"team_id": team_id})
        assert gw.statuses(key) == {(200, None)}
    else:
        assert gw.ok("POST", "/team/delete", json={"team_ids": [team_id]}) == {"deleted_teams": [team_id]}
        for _ in range(3):
            assert gw.statuses(key) == {(401, "invalid_api_key")}


def test_effective_models_are_the_keys_within_the_teams_within_the_organizations(gw):
    org_id = gw.ok("POST", "/organization/new", json={"models": ["gpt-4", "gpt-3.5-turbo"]})["organization_id"]
    team_id = gw.ok("POST", "/team/new", json={"organization_id": org_id, "models": ["gpt-4", "claude-2"]})["team_id"]
    key = gw.ok("POST", "/key/generate", json={"team_id": team_id})["key"]
    assert gw.statuses(key, "gpt-4", 4) == {(200, None)}
    assert gw.statuses(key, "gpt-3.5-turbo", 4) == {(403, "model_not_allowed")}  # not the team's
    assert gw.statuses(key, "claude-2", 4) == {(403, "model_not_allowed")}  # not the organization's
    client = openai.OpenAI(base_url=gw.url, api_key=key, max_retries=0, timeout=30)
    assert [m.id for m in client.models.list()] == ["gpt-4"]
    gw.ok("PATCH", "/organization/update", json={"organization_id": org_id, "models": []})  # all, now
    assert gw.statuses(key, "claude-2", 4) == {(200, None)}
    gw.ok("POST", "/organization/update", json={"organization_id": org_id, "blocked": True})
    assert gw.statuses(key, "gpt-4", 4) == {(403, "organization_blocked")}


def test_user_new_returns_a_working_key_that_dies_with_its_user(gw):
    user = gw.ok("POST", "/user/new", json={"user_alias": "sdk", "models": ["gpt-4"]})
    client = openai.OpenAI(base_url=gw.url, api_key=user["key"], max_retries=0, timeout=30)
    answer = client.chat.completions.create(model="gpt-4", messages=HELLO)
    assert answer.choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError):  # outside the user's models
        client.chat.completions.create(model="claude-2", messages=HELLO)
    own = requests.get(gw.url + "/user/info", headers={"Authorization": f"Bearer {user['key']}"}, timeout=30)
    assert own.status_code == 200 and own.json()["user_id"] == user["user_id"]
    assert gw.ok("POST", "/user/delete", json={"user_ids": [user["user_id"]]}) == {"deleted_users": [user["user_id"]]}
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4", messages=HELLO)
