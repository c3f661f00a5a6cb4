"""Who may do what, beyond proxy admins (issue #13 item 8), through a real gunicorn + gevent gateway
(2 workers, SQLite) called with `requests`: team admins manage their team's members and keys,
members their own keys in the team, internal users their own keys and spend; and the field-level
rules every such write passes (no role, no team move, no budget or limit raise, no model grant),
each refused with a 403 in the OpenAI envelope naming the field."""

import uuid

import pytest
import requests

pytestmark = pytest.mark.integration

MASTER = "sk-1234"
HELLO = [{"role": "user", "content": "hello"}]
MODELS = ("gpt-4", "gpt-3.5-turbo", "claude-2")


class Gateway:
    def __init__(self, url):
        self.url = url
        self.session = requests.Session()

    def call(self, token, method, path, **kwargs):
        return self.session.request(method, self.url + path, headers={"Authorization": f"Bearer {token}"},
                                    timeout=30, **kwargs)

    def ok(self, token, method, path, **kwargs):
        resp = self.call(token, method, path, **kwargs)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        return resp.json()

    def admin(self, method, path, **kwargs):
        return self.ok(MASTER, method, path, **kwargs)

    def refused(self, token, method, path, param, **kwargs):
        """A 403 in the OpenAI envelope naming `param`."""
        resp = self.call(token, method, path, **kwargs)
        assert resp.status_code == 403, (path, kwargs, resp.status_code, resp.text)
        error = resp.json()["error"]
        assert error["type"] == "permission_error" and error["param"] == param, (path, kwargs, error)
        return error

    def chat(self, key, model="gpt-4"):
        return requests.post(self.url + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": model, "messages": HELLO}, timeout=30).status_code


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    from tests.integration.conftest import GatewayProcess
    from tests.integration.conftest import free_port
    import yaml
    tmp = tmp_path_factory.mktemp("team-roles")
    models = [{"model_name": name, "litellm_params": {"model": "demo/echo"}} for name in MODELS]
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": models, "general_settings": {"master_key": MASTER}}))
    proc = GatewayProcess(["--config", str(path), "--num_workers", "2"],
                          {"DATABASE_URL": f"sqlite:///{tmp / 'keys.sqlite'}"}, tmp / "gateway.log", free_port())
    try:
        proc.wait_ready()
        yield Gateway(proc.url)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def world(gw):
    """org-1 (gpt-4 and gpt-3.5-turbo, tpm 5000) owns team-a (budget 10, rpm 100, 4 parallel) whose
    admin is ann and member alice; bob is a member of team-b; ivan is an internal user of no team
    with a budget of 5 and gpt-3.5-turbo only. Each has a key it owns."""
    gw.admin("POST", "/organization/new", json={"organization_id": "org-1", "models": ["gpt-4", "gpt-3.5-turbo"],
                                                "tpm_limit": 5000})
    gw.admin("POST", "/team/new", json={"team_id": "team-a", "organization_id": "org-1", "max_budget": 10,
                                        "rpm_limit": 100, "max_parallel_requests": 4, "team_alias": "A",
                                        "members_with_roles": [{"role": "admin", "user_id": "ann"},
                                                               {"role": "user", "user_id": "alice"}]})
    gw.admin("POST", "/team/new", json={"team_id": "team-b",
                                        "members_with_roles": [{"role": "user", "user_id": "bob"}]})
    gw.admin("POST", "/user/update", json={"user_id": "ann", "user_alias": "Ann"})
    gw.admin("POST", "/user/new", json={"user_id": "ivan", "max_budget": 5, "models": ["gpt-3.5-turbo"],
                                        "auto_create_key": False})
    keys = {name: gw.admin("POST", "/key/generate", json={"user_id": name})["key"]
            for name in ("ann", "alice", "bob", "ivan")}
    return keys


def new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- what is allowed, really works ---------------------------------------------------------------

def test_a_team_admin_adds_a_member_and_makes_it_a_key_that_works(gw, world):
    ann = world["ann"]
    carl = new_id("carl")
    added = gw.ok(ann, "POST", "/team/member_add", json={"team_id": "team-a",
                                                         "member": {"role": "user", "user_id": carl}})
    assert carl in added["members"]
    made = gw.ok(ann, "POST", "/key/generate", json={"team_id": "team-a", "user_id": carl, "models": ["gpt-4"],
                                                     "max_budget": 5, "rpm_limit": 50})
    assert made["team_id"] == "team-a" and made["user_id"] == carl and made["key"].startswith("sk-")
    assert gw.chat(made["key"]) == 200
    info = gw.ok(ann, "GET", "/team/info", params={"team_id": "team-a"})
    assert made["token"] in {key["token"] for key in info["keys"]}
    assert gw.ok(ann, "POST", "/team/member_update", json={"team_id": "team-a", "user_id": carl,
                                                          "role": "admin"})["role"] == "admin"
    # A team key of no user (a service key) and the team's alias and metadata are the admin's too.
    service = gw.ok(ann, "POST", "/key/generate", json={"team_id": "team-a", "user_id": None})
    assert service["user_id"] is None and gw.chat(service["key"]) == 200
    for action in ("block", "unblock", "regenerate"):
        gw.ok(ann, "POST", f"/key/{action}", json={"key": made["token"]})
    team = gw.ok(ann, "POST", "/team/update", json={"team_id": "team-a", "team_alias": "A team",
                                                    "metadata": {"cost_center": "42"}})["data"]
    assert team["team_alias"] == "A team" and team["metadata"] == {"cost_center": "42"}
    gw.ok(ann, "POST", "/team/member_delete", json={"team_id": "team-a", "user_id": carl})
    assert carl not in gw.admin("GET", "/team/info", params={"team_id": "team-a"})["team_info"]["members"]
    # A plain member makes its own key in its team (its user_id is itself), and reads the team.
    own = gw.ok(world["alice"], "POST", "/key/generate", json={"team_id": "team-a", "models": ["gpt-4"]})
    assert own["user_id"] == "alice" and gw.chat(own["key"]) == 200
    assert gw.ok(world["alice"], "GET", "/team/info", params={"team_id": "team-a"})["team_id"] == "team-a"


def test_an_internal_user_makes_updates_and_deletes_its_own_key_and_not_anothers(gw, world):
    ivan = world["ivan"]
    made = gw.ok(ivan, "POST", "/key/generate", json={"key_alias": "mine", "models": ["gpt-3.5-turbo"]})
    assert made["user_id"] == "ivan" and made["team_id"] is None  # a key it makes is its own
    assert gw.chat(made["key"], "gpt-3.5-turbo") == 200
    assert gw.ok(ivan, "POST", "/key/update", json={"key": made["key"], "max_budget": 2,
                                                    "metadata": {"x": 1}})["max_budget"] == 2
    gw.ok(ivan, "POST", "/key/block", json={"key": made["token"]})
    assert gw.chat(made["key"], "gpt-3.5-turbo") == 403
    gw.ok(ivan, "POST", "/key/unblock", json={"key": made["token"]})
    regenerated = gw.ok(ivan, "POST", "/key/regenerate", json={"key": made["key"]})
    fresh = regenerated["key"]
    assert gw.chat(fresh, "gpt-3.5-turbo") == 200 and gw.chat(made["key"], "gpt-3.5-turbo") == 401
    assert gw.ok(ivan, "GET", "/key/info", params={"key": regenerated["token"]})["info"]["key_alias"] == "mine"
    assert gw.ok(ivan, "POST", "/key/delete", json={"keys": [fresh]})["deleted_keys"] == [regenerated["token"]]
    assert gw.chat(fresh, "gpt-3.5-turbo") == 401
    # Another's key: refused, and untouched.
    alices = gw.admin("POST", "/key/generate", json={"user_id": "alice", "team_id": "team-a"})
    for method, path, body in (("POST", "/key/update", {"key": alices["token"], "max_budget": 1}),
                               ("POST", "/key/delete", {"keys": [alices["token"]]}),
                               ("POST", "/key/regenerate", {"key": alices["token"]}),
                               ("POST", "/key/block", {"key": alices["token"]}),
                               ("POST", "/key/unblock", {"key": alices["token"]})):
        gw.refused(ivan, method, path, "key", json=body)
    assert gw.chat(alices["key"]) == 200
    assert gw.admin("GET", "/key/info", params={"key": alices["token"]})["info"]["max_budget"] is None
    gw.refused(ivan, "POST", "/key/generate", "user_id", json={"user_id": "alice"})
    # A viewer role writes nothing, not even its own keys.
    vic = gw.admin("POST", "/user/new", json={"user_id": new_id("vic"), "user_role": "internal_user_viewer"})
    assert gw.call(vic["key"], "POST", "/key/generate", json={}).status_code == 403
    assert gw.call(vic["key"], "POST", "/key/block", json={"key": vic["token"]}).status_code == 403
    assert gw.ok(vic["key"], "GET", "/key/info", params={"key": vic["token"]})["info"]["user_id"] == vic["user_id"]


# ---- field-level rules ---------------------------------------------------------------------------

def test_nobody_but_a_proxy_admin_writes_a_role_or_allowed_routes(gw, world):
    ivan, ann = world["ivan"], world["ann"]
    assert gw.call(ivan, "POST", "/user/update", json={"user_id": "ivan", "user_role": "proxy_admin"}
                   ).status_code == 403
    assert gw.call(ann, "POST", "/user/new", json={"user_id": new_id("u"), "user_role": "proxy_admin"}
                   ).status_code == 403
    gw.refused(ivan, "POST", "/key/generate", "user_role", json={"user_role": "proxy_admin"})
    gw.refused(ann, "POST", "/key/generate", "allowed_routes",
               json={"team_id": "team-a", "allowed_routes": ["/user/update"]})
    gw.refused(ann, "POST", "/team/member_add", "user_role",
               json={"team_id": "team-a", "member": {"user_id": new_id("u"), "user_role": "proxy_admin"}})
    gw.refused(ann, "POST", "/key/update", "user_role", json={"key": world["ann"], "user_role": "proxy_admin"})
    for name in ("ivan", "ann"):
        assert gw.admin("GET", "/user/info", params={"user_id": name})["user_info"]["user_role"] == "internal_user"
    assert gw.call(ivan, "GET", "/user/list").json()["users"][0]["user_role"] == "internal_user"


def test_no_key_or_user_moves_to_a_team_the_caller_does_not_administer(gw, world):
    ann, alice, bob = world["ann"], world["alice"], world["bob"]
    alices = gw.ok(alice, "POST", "/key/generate", json={"team_id": "team-a"})
    gw.refused(alice, "POST", "/key/update", "team_id", json={"key": alices["key"], "team_id": "team-b"})
    gw.refused(ann, "POST", "/key/update", "team_id", json={"key": alices["token"], "team_id": "team-b"})
    gw.refused(ann, "POST", "/key/update", "team_id", json={"key": alices["token"], "team_id": None})
    gw.refused(ann, "POST", "/key/generate", "team_id", json={"team_id": "team-b"})
    gw.refused(bob, "POST", "/key/generate", "team_id", json={"team_id": "team-a"})
    gw.refused(ann, "POST", "/key/generate", "user_id", json={"team_id": "team-a", "user_id": "bob"})
    gw.refused(ann, "POST", "/key/update", "user_id", json={"key": alices["token"], "user_id": "bob"})
    gw.refused(ann, "POST", "/team/update", "organization_id", json={"team_id": "team-a", "organization_id": None})
    gw.refused(world["ivan"], "POST", "/team/member_add", "team_id",
               json={"team_id": "team-a", "member": {"user_id": "ivan"}})
    gw.refused(ann, "POST", "/team/member_add", "team_id", json={"team_id": "team-b", "member": {"user_id": "ann"}})
    gw.refused(ann, "POST", "/team/member_delete", "team_id", json={"team_id": "team-b", "user_id": "bob"})
    assert gw.call(ann, "POST", "/organization/member_add",
                   json={"organization_id": "org-1", "member": {"user_id": "ann"}}).status_code == 403
    key = gw.admin("GET", "/key/info", params={"key": alices["token"]})["info"]
    assert key["team_id"] == "team-a" and key["user_id"] == "alice"
    assert "bob" not in gw.admin("GET", "/team/info", params={"team_id": "team-a"})["team_info"]["members"]
    # Into a team it administers, its own personal key moves (and keeps working there).
    mine = gw.ok(ann, "POST", "/key/generate", json={"models": ["gpt-4"]})
    assert gw.ok(ann, "POST", "/key/update", json={"key": mine["key"], "team_id": "team-a"})["team_id"] == "team-a"
    assert gw.chat(mine["key"]) == 200


def test_no_budget_or_limit_above_the_levels_the_caller_is_bound_by(gw, world):
    ann, ivan = world["ann"], world["ivan"]
    for name, value in (("max_budget", 20), ("rpm_limit", 101), ("max_parallel_requests", 5),
                        ("tpm_limit", 6000)):  # tpm: the organization's 5000
        error = gw.refused(ann, "POST", "/key/generate", name, json={"team_id": "team-a", name: value})
        assert error["code"] == "limit_above_bound"
    at_bound = gw.ok(ann, "POST", "/key/generate", json={"team_id": "team-a", "max_budget": 10, "rpm_limit": 100,
                                                         "tpm_limit": 5000, "max_parallel_requests": 4})
    gw.refused(ann, "POST", "/key/update", "max_budget", json={"key": at_bound["key"], "max_budget": 10.5})
    gw.refused(ivan, "POST", "/key/generate", "max_budget", json={"max_budget": 6})  # its user's 5
    # The team's own bounds are the proxy admin's: every one named, nothing changed.
    for name, value in (("max_budget", 100), ("tpm_limit", 10), ("rpm_limit", 1000),
                        ("max_parallel_requests", 100), ("budget_duration", "1s"), ("models", ["claude-2"]),
                        ("blocked", False), ("organization_id", "org-1")):
        gw.refused(ann, "POST", "/team/update", name, json={"team_id": "team-a", name: value})
    team = gw.admin("GET", "/team/info", params={"team_id": "team-a"})["team_info"]
    assert (team["max_budget"], team["rpm_limit"], team["max_parallel_requests"], team["models"]) == (10, 100, 4, [])
    assert gw.call(ann, "POST", "/team/block", json={"team_id": "team-a"}).status_code == 403


def test_no_model_outside_what_the_levels_allow(gw, world):
    ann, ivan = world["ann"], world["ivan"]
    error = gw.refused(ann, "POST", "/key/generate", "models", json={"team_id": "team-a", "models": ["claude-2"]})
    assert error["code"] == "models_not_allowed"  # team-a allows what org-1 does: gpt-4, gpt-3.5-turbo
    made = gw.ok(ann, "POST", "/key/generate", json={"team_id": "team-a", "models": ["gpt-4"]})
    gw.refused(ann, "POST", "/key/update", "models", json={"key": made["key"], "models": ["gpt-4", "claude-2"]})
    gw.refused(ivan, "POST", "/key/generate", "models", json={"models": ["gpt-4"]})  # its user: gpt-3.5-turbo
    assert gw.admin("GET", "/key/info", params={"key": made["token"]})["info"]["models"] == ["gpt-4"]


# ---- what lists show -------------------------------------------------------------------------------

def test_lists_show_only_what_the_caller_may_see(gw, world):
    ann, alice, bob, ivan = world["ann"], world["alice"], world["bob"], world["ivan"]
    team_key = gw.admin("POST", "/key/generate", json={"team_id": "team-a", "user_id": "alice"})
    assert gw.chat(ivan, "gpt-3.5-turbo") == 200 and gw.chat(team_key["key"]) == 200

    def owners(token):
        return {(k["user_id"], k["team_id"]) for k in gw.ok(token, "GET", "/key/list")["keys"]}

    assert {owner for owner, _ in owners(ivan)} == {"ivan"}
    assert {owner for owner, _ in owners(alice)} == {"alice"}
    assert all(owner == "ann" or team == "team-a" for owner, team in owners(ann))
    assert ("alice", "team-a") in owners(ann) and not [o for o, t in owners(ann) if o in ("bob", "ivan")]
    assert [t["team_id"] for t in gw.ok(alice, "GET", "/team/list")] == ["team-a"]
    assert [t["team_id"] for t in gw.ok(bob, "GET", "/team/list")] == ["team-b"]
    assert gw.ok(ivan, "GET", "/team/list") == []
    assert {u["user_id"] for u in gw.ok(ann, "GET", "/user/list")["users"]} == {"ann", "alice"}
    assert {u["user_id"] for u in gw.ok(ivan, "GET", "/user/list")["users"]} == {"ivan"}
    # /team/info: a member sees its own keys of the team, the admin all of them; others nothing.
    assert {k["user_id"] for k in gw.ok(alice, "GET", "/team/info", params={"team_id": "team-a"})["keys"]} == {"alice"}
    assert team_key["token"] in {k["token"] for k in gw.ok(ann, "GET", "/team/info",
                                                             params={"team_id": "team-a"})["keys"]}
    gw.refused(bob, "GET", "/team/info", "team_id", params={"team_id": "team-a"})
    # /spend/logs: an internal user's own rows, whatever it asks.
    assert {r["user"] for r in gw.ok(ivan, "GET", "/spend/logs")} == {"ivan"}
    assert gw.ok(ivan, "GET", "/spend/logs", params={"api_key": team_key["key"]}) == []
    assert {r["user"] for r in gw.ok(ivan, "GET", "/spend/logs", params={"user_id": "alice"})} == {"ivan"}
    assert "alice" in {r["user"] for r in gw.admin("GET", "/spend/logs", params={"user_id": "alice"})}
