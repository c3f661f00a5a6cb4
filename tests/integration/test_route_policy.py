"""Who may call what: every route of the live app x {no key, master key, a proxy_admin user's key, a
proxy_admin_viewer's key, an internal user's key, an internal_user_viewer's key (admin of this team),
the key of a team admin of this team, of a team admin of another team, of a team member, of another
tenant (a member of another team), keys without a user}, checked against the rules of issue #13 item 8
written out here (`may`), through a real gunicorn gateway on SQLite; a route without a policy fails
here; and hostile Authorization headers get a fast 401 from a real gunicorn gateway on both databases.

The other tests run in-process (Flask test client, SQLite in tmp_path) for speed. PostgreSQL is
required when CI=true; elsewhere its test is skipped with the reason.
"""

import contextlib
import os
import time
import uuid

import pytest
import requests
from sqlalchemy import text

from gateway.app import create_app
from gateway.access.auth import ROUTE_POLICY
from gateway.access.policy import ACCESS
from gateway.access.policy import may_enter
from gateway.config.settings import from_dict

pytestmark = pytest.mark.integration

MASTER = "sk-1234"
from tests.fakes.openai_server import wav_bytes
from tests.pg import schema as pg_schema
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
POLICIES = {"public", "api", "self", "admin", "keys", "read", "scoped", "ui"}
UI_OPEN = {"ui.login", "ui.static"}  # the admin UI's pages shown without a session
HELLO = [{"role": "user", "content": "hello"}]


def demo_settings(**general):
    return from_dict({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
                      "general_settings": general}, source="test_route_policy")


def endpoints(app):
    """Every endpoint the app serves, but Flask's own `static`."""
    return {rule.endpoint for rule in app.url_map.iter_rules() if rule.endpoint != "static"}


def missing_policies(app):
    return sorted(endpoints(app) - set(ROUTE_POLICY))


@pytest.fixture
def app(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'keys.sqlite'}")
    return create_app(demo_settings(master_key=MASTER))


@pytest.fixture
def client(app):
    return app.test_client()


def bearer(key):
    return {"Authorization": f"Bearer {key}"} if key else {}


# ---- every route has exactly one policy ------------------------------------------------------------

def test_every_route_has_a_policy(app):
    assert missing_policies(app) == [], "add these endpoints to gateway.access.auth.ROUTE_POLICY"
    assert sorted(set(ROUTE_POLICY) - endpoints(app)) == [], "ROUTE_POLICY names endpoints that do not exist"
    assert set(ROUTE_POLICY.values()) <= POLICIES


def test_a_new_route_without_a_policy_is_caught_and_closed(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'keys.sqlite'}")
    app = create_app(demo_settings(master_key=MASTER))
    app.add_url_rule("/brand-new", "brand_new", lambda: "secret")
    assert missing_policies(app) == ["brand_new"]  # the check above would fail for it
    client = app.test_client()
    key = client.post("/key/generate", json={}, headers=bearer(MASTER)).get_json()["key"]
    # Until it gets an entry, the route is for the master key only.
    assert client.get("/brand-new").status_code == 401
    assert client.get("/brand-new", headers=bearer(key)).status_code == 403
    assert client.get("/brand-new", headers=bearer(MASTER)).status_code == 200


def test_sensitive_routes_keep_their_policies():
    """Opening a route is a deliberate change: the public set, the scoped routes and their grants are pinned."""
    assert {e for e, p in ROUTE_POLICY.items() if p == "public"} == {"health.liveliness", "health.readiness"}
    assert ROUTE_POLICY["health.health"] == "admin"
    assert ROUTE_POLICY["keys.info"] == "self" and ROUTE_POLICY["users.info"] == "self"
    scoped = {e for e, p in ROUTE_POLICY.items() if p == "scoped"}
    assert scoped == {"keys.generate", "keys.update", "keys.delete", "keys.list_keys", "keys.regenerate",
                      "keys.block", "keys.unblock", "spend.logs", "users.list_users", "teams.info",
                      "teams.update", "teams.list_teams", "teams.member_add", "teams.member_delete",
                      "teams.member_update"}
    assert scoped | {"keys.info", "users.info"} == set(ACCESS)  # the one table covers every scoped route
    # Users, organizations and end users are written by proxy admins only; teams made, deleted and
    # blocked by them only; organizations and end users read by them and their viewers.
    # LiteLLM's global spend reports are about everyone: proxy admins and their viewers only.
    assert {p for e, p in ROUTE_POLICY.items() if e.startswith("reports.")} == {"read"}
    for endpoint, policy in ROUTE_POLICY.items():
        if endpoint in scoped or endpoint.split(".")[0] not in ("users", "teams", "organizations", "customers"):
            continue
        reading = endpoint.split(".")[1] in ("info", "list_users", "list_teams", "list_organizations",
                                             "list_customers")
        assert policy in (("read", "self") if reading else ("keys",)), endpoint
    # Nobody but a proxy admin writes through a viewer role; a key without a user enters no scoped route.
    for endpoint, grant in ACCESS.items():
        assert may_enter(endpoint, "proxy_admin") and not may_enter(endpoint, None)
        if grant.write:
            assert not may_enter(endpoint, "proxy_admin_viewer") and not may_enter(endpoint, "internal_user_viewer")
    assert ROUTE_POLICY["metrics.metrics"] == "admin"  # opened only by general_settings.metrics_public
    # Model facts are for any key (the view narrows them to its models); the route list is an admin's.
    assert ROUTE_POLICY["model_info.model_info"] == ROUTE_POLICY["model_info.model_group_info"] == "api"
    assert ROUTE_POLICY["model_info.routes"] == "admin"
    # The admin UI's pages, and only they, sign in by session (no API key opens them).
    assert {e for e, p in ROUTE_POLICY.items() if p == "ui"} == {e for e in ROUTE_POLICY if e.startswith("ui.")}


# ---- the matrix ------------------------------------------------------------------------------------

# The callers beyond no key and the master key: users with every role, team admins and members of two
# teams (team-a is "this team"), and keys without a user. (user id, role, {team: role in the team})
PEOPLE = {
    "proxy admin": ("root", "proxy_admin", {}),
    "viewer": ("auditor", "proxy_admin_viewer", {}),
    "internal user": ("ivan", "internal_user", {}),
    "user viewer": ("vera", "internal_user_viewer", {"team-a": "admin"}),  # a team admin that only reads
    "team admin": ("ann", "internal_user", {"team-a": "admin"}),
    "other team admin": ("tom", "internal_user", {"team-b": "admin"}),
    "team member": ("alice", "internal_user", {"team-a": "user"}),
    "other tenant": ("bob", "internal_user", {"team-b": "user"}),
}
CALLERS = ("no key", "master key", *PEOPLE, "virtual key", "another virtual key")
SELF = object()  # a key's owner that is the caller itself (a key made without a user_id)
LISTS = {"keys.list_keys", "users.list_users", "teams.list_teams", "spend.logs"}  # filtered for non-admins
READS = {e for e in ROUTE_POLICY if e.split(".")[1] in ("info", "list_keys", "list_users", "list_teams",
                                                        "list_organizations", "list_customers", "logs")
         or e.startswith("reports.") or e == "health.config_view"}


class Form:
    """A multipart/form-data body for a recipe (audio uploads): text fields and (name, bytes, type) files."""

    def __init__(self, fields, files):
        self.fields, self.files = fields, files

    def flask(self):
        """The Flask test client's keywords for it: the body encoded here with a fixed boundary
        (Werkzeug's own is sometimes 71 characters, one past RFC 2046's limit, which the gateway
        refuses; a test must not fail on the draw)."""
        from urllib3.filepost import encode_multipart_formdata
        fields = dict(self.fields)
        fields.update({k: (v[0], v[1], v[2]) for k, v in self.files.items()})
        body, content_type = encode_multipart_formdata(fields, boundary="gateway-test-boundary-0123456789")
        return {"data": body, "content_type": content_type}


WAV = wav_bytes(1, rate=8000)


# Routes of one stored Responses API answer: its owner's alone.
STORED_RESPONSES = {"responses.get_response", "responses.delete_response", "responses.list_input_items"}


def _stored_response(client):
    """The id of a response the master key made and stored."""
    resp = client.post("/v1/responses", json={"model": "demo", "input": "hello"}, headers=bearer(MASTER))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["id"]


def _throwaway(client, owner=None, team=None):
    body = {}
    if owner:
        body["user_id"] = owner
    if team:
        body["team_id"] = team
    return client.post("/key/generate", json=body, headers=bearer(MASTER)).get_json()["key"]


def _made(client, path, body, field):
    resp = client.post(path, json=body, headers=bearer(MASTER))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()[field]


def _new_id():
    return f"x-{uuid.uuid4().hex[:10]}"


def _user(client):
    return _made(client, "/user/new", {"user_id": _new_id(), "auto_create_key": False}, "user_id")


def _team(client, member=None):
    body = {"team_id": _new_id()}
    if member:
        body["members_with_roles"] = [{"role": "user", "user_id": member}]
    return _made(client, "/team/new", body, "team_id")


def _org(client):
    return _made(client, "/organization/new", {"organization_id": _new_id()}, "organization_id")


def _customer(client):
    return _made(client, "/customer/new", {"user_id": _new_id()}, "user_id")


def _db_model(client, model_id=None):
    """A model stored in the database (store_model_in_db), new unless `model_id` names one."""
    body = {"model_name": _new_id(), "litellm_params": {"model": "demo/echo"},
            "model_info": {"id": model_id or _new_id()}}
    made = client.post("/model/new", json=body, headers=bearer(MASTER))
    assert made.status_code == 200 or (model_id and made.status_code == 400), made.get_data(as_text=True)
    return body["model_info"]["id"]


MATRIX_MODEL = "route-matrix-model"  # the stored model PATCH /model/<id>/update changes


def _member_of_a(client):
    """A new user, a member of team-a (what member_delete / member_update act on)."""
    user = _new_id()
    client.post("/team/member_add", json={"team_id": "team-a", "member": {"role": "user", "user_id": user}},
                headers=bearer(MASTER))
    return {"team_id": "team-a", "user_id": user}


# Key subjects: a key of team-a's member, a personal key of the internal user, a team-a key of no user.
KEY_SUBJECTS = (("alice", "team-a"), ("ivan", None), (None, "team-a"))


def _key_recipes(client, action):
    if action == "generate":
        return [(None, {"duration": "1h"}, {"owner": SELF, "team": None}),
                (None, {"team_id": "team-a"}, {"owner": SELF, "team": "team-a"}),
                (None, {"team_id": "team-a", "user_id": "alice"}, {"owner": "alice", "team": "team-a"}),
                (None, {"team_id": "team-b", "user_id": "bob"}, {"owner": "bob", "team": "team-b"})]
    recipes = []
    for owner, team in KEY_SUBJECTS:
        subject = {"owner": owner, "team": team}
        if action == "info":
            recipes.append(({"key": _throwaway(client, owner, team)}, None, subject))
        elif action == "update":
            recipes.append((None, {"key": _throwaway(client, owner, team), "metadata": {"m": 1}}, subject))
        elif action == "delete":
            recipes.append((None, {"keys": [_throwaway(client, owner, team)]}, subject))
        else:  # regenerate, block, unblock
            recipes.append((None, {"key": _throwaway(client, owner, team)}, subject))
    return recipes


def _recipes(client, endpoint):
    """[(query, JSON body, subject)] for calls to endpoint that the master key may make successfully;
    `subject` names what the call touches (a key's owner and team, a user, a team)."""
    group, action = endpoint.split(".")
    if group == "keys" and action != "list_keys":
        return _key_recipes(client, action)
    if group == "ui":
        return [(None, None, {})]
    if endpoint == "users.info":
        return [({"user_id": user}, None, {"user": user}) for user in ("ivan", "alice")]
    team_a = {"team": "team-a"}
    recipes = {
        "chat": lambda: (None, {"model": "demo", "messages": HELLO}),
        "completions": lambda: (None, {"model": "demo", "prompt": "hello"}),
        "messages.create_message": lambda: (None, {"model": "demo", "max_tokens": 16, "messages": HELLO}),
        "messages.count_message_tokens": lambda: (None, {"model": "demo", "messages": HELLO}),
        "responses.create_response": lambda: (None, {"model": "demo", "input": "hello", "store": False}),
        "responses": lambda: (None, None),
        "surfaces.images": lambda: (None, {"model": "demo", "prompt": "a cat"}),
        "surfaces.images_for": lambda: (None, {"prompt": "a cat"}),
        "surfaces.moderations": lambda: (None, {"model": "demo", "input": "hello"}),
        "surfaces.rerank": lambda: (None, {"model": "demo", "query": "hello", "documents": ["hello", "bye"]}),
        "audio.transcriptions": lambda: (None, Form({"model": "demo"}, {"file": ("a.wav", WAV, "audio/wav")})),
        "audio.translations": lambda: (None, Form({"model": "demo"}, {"file": ("a.wav", WAV, "audio/wav")})),
        "audio.transcriptions_for": lambda: (None, Form({}, {"file": ("a.wav", WAV, "audio/wav")})),
        "audio.translations_for": lambda: (None, Form({}, {"file": ("a.wav", WAV, "audio/wav")})),
        "audio.speech": lambda: (None, {"model": "demo", "input": "hello", "voice": "alloy"}),
        "audio.speech_for": lambda: (None, {"input": "hello", "voice": "alloy"}),
        "embeddings": lambda: (None, {"model": "demo", "input": "hello"}),
        "models": lambda: (None, None),
        "model_info": lambda: (None, None),
        "health": lambda: (None, None),
        "keys.list_keys": lambda: (None, None),
        "spend.logs": lambda: ({"limit": 5}, None),
        "reports.spend_report": lambda: ({"start_date": "2024-01-01", "end_date": "2099-12-31"}, None),
        "reports": lambda: (None, None),
        "metrics": lambda: (None, None),
        "users.new": lambda: (None, {"auto_create_key": False}),
        "users.update": lambda: (None, {"user_id": _user(client), "user_alias": "x"}),
        "users.delete": lambda: (None, {"user_ids": [_user(client)]}),
        "users.list_users": lambda: (None, None),
        "teams.new": lambda: (None, {}),
        "teams.info": lambda: ({"team_id": "team-a"}, None),
        "teams.update": lambda: (None, {"team_id": "team-a", "team_alias": "a"}),
        "teams.delete": lambda: (None, {"team_ids": [_team(client)]}),
        "teams.list_teams": lambda: (None, None),
        "teams.member_add": lambda: (None, {"team_id": "team-a", "member": {"user_id": _new_id()}}),
        "teams.member_delete": lambda: (None, _member_of_a(client)),
        "teams.member_update": lambda: (None, {**_member_of_a(client), "role": "admin"}),
        "teams.block": lambda: (None, {"team_id": _team(client)}),
        "teams.unblock": lambda: (None, {"team_id": _team(client)}),
        "organizations.new": lambda: (None, {"organization_alias": "o"}),
        "organizations.info": lambda: ({"organization_id": _org(client)}, None),
        "organizations.update": lambda: (None, {"organization_id": _org(client), "max_budget": 1}),
        "organizations.delete": lambda: (None, {"organization_ids": [_org(client)]}),
        "organizations.list_organizations": lambda: (None, None),
        "organizations.member_add": lambda: (None, {"organization_id": _org(client),
                                                    "member": {"user_id": _new_id(), "role": "internal_user"}}),
        "customers.new": lambda: (None, {"user_id": _new_id()}),
        "customers.info": lambda: ({"end_user_id": _customer(client)}, None),
        "customers.update": lambda: (None, {"user_id": _customer(client), "alias": "x"}),
        "customers.delete": lambda: (None, {"user_ids": [_customer(client)]}),
        "customers.list_customers": lambda: (None, None),
        "customers.block": lambda: (None, {"user_ids": [_customer(client)]}),
        "customers.unblock": lambda: (None, {"user_ids": [_customer(client)]}),
        "model_admin.new": lambda: (None, {"model_name": _new_id(), "litellm_params": {"model": "demo/echo"}}),
        "model_admin.update": lambda: (None, {"model_info": {"id": _db_model(client, MATRIX_MODEL)},
                                              "litellm_params": {"rpm": 100}}),
        "model_admin.patch": lambda: (None, {"litellm_params": {"rpm": 50}}),
        "model_admin.delete": lambda: (None, {"id": _db_model(client)}),
    }
    make = recipes.get(endpoint) or recipes.get(group)
    assert make is not None, f"no request recipe for {endpoint}: add one to this test"
    query, body = make()
    return [(query, body, team_a if group == "teams" else {})]


def may(endpoint, caller, subject):
    """Whether `caller` may make this call: the rules of issue #13 item 8, written out independently
    of gateway.access.policy (the oracle the matrix checks the gateway against)."""
    if caller == "master key":
        return True
    if caller not in PEOPLE:
        return False  # a key without a user: only /key/info about itself (tested on its own below)
    me, role, teams = PEOPLE[caller]
    if role == "proxy_admin":
        return True
    admin_of = {team for team, r in teams.items() if r == "admin"}
    member_of = set(teams)
    if endpoint not in READS and role.endswith("_viewer"):
        return False  # viewers never write
    if role == "proxy_admin_viewer":
        return endpoint in READS
    if endpoint in LISTS:
        return True  # answered, narrowed to what the caller may see (tested below)
    group, action = endpoint.split(".")
    if group == "keys":
        owner = me if subject["owner"] is SELF else subject["owner"]
        team = subject["team"]
        if action == "generate":
            if team is None:
                return owner == me
            return team in admin_of or (team in member_of and owner == me)
        return owner == me or team in admin_of
    if endpoint == "users.info":
        return subject["user"] == me
    if endpoint == "teams.info":
        return subject["team"] in member_of
    if endpoint in ("teams.update", "teams.member_add", "teams.member_delete", "teams.member_update"):
        return subject["team"] in admin_of
    return False


def expected(policy, endpoint, caller, subject, method="GET"):
    """(status class or exact status, error code) a cell must answer."""
    if policy == "public":
        return 200, None
    if policy == "ui":  # an API key is no session: the sign-in page, or a form refused without its token
        return (200 if endpoint in UI_OPEN else 302, None) if method == "GET" else (403, None)
    if caller == "no key":
        return 401, "missing_api_key"
    if endpoint in STORED_RESPONSES and caller != "master key":
        return 404, "response_not_found"  # the master key's stored response is its own
    if policy == "api":
        return "2xx", None
    if may(endpoint, caller, subject):
        return "2xx", None
    if policy in ("self", "scoped"):
        return 403, None  # refused by the route's policy or by the view, with the caller's scope
    return 403, "master_key_required" if caller not in PEOPLE else "role_not_allowed"


def make_tenants(client):
    """The callers' keys: users with every role, members of two teams, and plain keys."""
    for team in ("team-a", "team-b"):
        client.post("/team/new", json={"team_id": team}, headers=bearer(MASTER))
    tokens = {"no key": None, "master key": MASTER}
    for caller, (user_id, role, teams) in PEOPLE.items():
        resp = client.post("/user/new", json={"user_id": user_id, "user_role": role}, headers=bearer(MASTER))
        assert resp.status_code == 200, resp.get_data(as_text=True)
        tokens[caller] = resp.get_json()["key"]
        for team, team_role in teams.items():
            resp = client.post("/team/member_add", json={"team_id": team, "member": {"role": team_role,
                                                                                      "user_id": user_id}},
                               headers=bearer(MASTER))
            assert resp.status_code == 200, resp.get_data(as_text=True)
    tokens["virtual key"] = client.post("/key/generate", json={"key_alias": "a"},
                                        headers=bearer(MASTER)).get_json()["key"]
    tokens["another virtual key"] = client.post("/key/generate", json={"key_alias": "b"},
                                                headers=bearer(MASTER)).get_json()["key"]
    return tokens


@pytest.fixture
def tenants(client):
    return make_tenants(client)


class HttpClient:
    """The Flask test client's calls (open, get, post), made with `requests` to a running gateway."""

    class Answer:
        def __init__(self, resp):
            self.resp, self.status_code = resp, resp.status_code

        def get_json(self, silent=False):
            try:
                return self.resp.json()
            except ValueError:
                if silent:
                    return None
                raise

        def get_data(self, as_text=False):
            return self.resp.text if as_text else self.resp.content

    def __init__(self, url):
        self.url = url
        self.session = requests.Session()

    def open(self, path, method="GET", query_string=None, json=None, headers=None):
        if isinstance(json, Form):
            return self.Answer(self.session.request(method, self.url + path, params=query_string, data=json.fields,
                                                    files=json.files, headers=headers, timeout=30,
                                                    allow_redirects=False))
        return self.Answer(self.session.request(method, self.url + path, params=query_string, json=json,
                                                headers=headers, timeout=30, allow_redirects=False))

    def get(self, path, query_string=None, headers=None):
        return self.open(path, "GET", query_string=query_string, headers=headers)

    def post(self, path, json=None, headers=None):
        return self.open(path, "POST", json=json, headers=headers)


@pytest.fixture
def http(start_gateway, tmp_path):
    """A real gunicorn + gevent gateway (2 workers) on SQLite, called with `requests` (models in
    the database on, so the model management routes answer their callers)."""
    config = {"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
              "general_settings": {"master_key": MASTER, "store_model_in_db": True}}
    gw = start_gateway(config, args=["--num_workers", "2"],
                       env={"DATABASE_URL": f"sqlite:///{tmp_path / 'keys.sqlite'}"})
    return HttpClient(gw.url)


def test_route_matrix(app, http):
    """Every route x every caller (and, for key routes, keys of a member of team-a, of the internal
    user, and of team-a without a user) through a real gunicorn gateway: 0 unauthorized 2xx, and
    every authorized call answered."""
    client = http
    tenants = make_tenants(client)
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"]
    assert len(rules) >= len(ROUTE_POLICY)
    wrong, cells, granted = [], 0, []
    for rule in rules:
        path = rule.rule.replace("<path:model>", "demo").replace("<path:filename>", "ui.css")
        path = path.replace("<token>", "0" * 64).replace("<action>", "block").replace("<request_id>", "req_0")
        path = path.replace("<team_id>", "team-a").replace("<model_id>", "m0")
        if "<path:model_id>" in path:
            path = path.replace("<path:model_id>", _db_model(client, MATRIX_MODEL))
        policy = ROUTE_POLICY[rule.endpoint]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for caller in CALLERS:
                for query, body, subject in _recipes(client, rule.endpoint):
                    if "<response_id>" in rule.rule:  # a response the master key stored (DELETE takes it)
                        path = rule.rule.replace("<response_id>", _stored_response(client))
                    resp = client.open(path, method=method, query_string=query, json=body,
                                       headers=bearer(tenants[caller]))
                    cells += 1
                    status, code = expected(policy, rule.endpoint, caller, subject, method)
                    ok = 200 <= resp.status_code < 300 if status == "2xx" else resp.status_code == status
                    error = (resp.get_json(silent=True) or {}).get("error", {}) if resp.status_code >= 400 else {}
                    # Anthropic's routes answer Anthropic's envelope: a type and a message, no code
                    anthropic = rule.endpoint.startswith("messages.")
                    page = policy == "ui"  # the admin UI answers pages, not JSON errors
                    if not ok or (code is not None and not anthropic and error.get("code") != code) or (
                            resp.status_code == 403 and not page and error.get("type") != "permission_error"):
                        wrong.append(f"{method} {rule.rule} [{policy}] as {caller} on {subject}: "
                                     f"{resp.status_code} {error.get('code')}, expected {status} {code or ''}")
                    if resp.status_code < 300:
                        granted.append((rule.endpoint, caller))
    assert not wrong, f"{len(wrong)} wrong cells:\n" + "\n".join(wrong)
    assert cells >= len(CALLERS) * len(ROUTE_POLICY)
    # Viewers read but never write; keys without a user call models and read themselves only.
    writes = set(ROUTE_POLICY) - READS - UI_OPEN - {e for e, p in ROUTE_POLICY.items() if p in ("api", "public")}
    assert not [cell for cell in granted if cell[0] in writes and cell[1] in ("viewer", "user viewer")]
    assert not [cell for cell in granted if cell[1].endswith("virtual key")
                and ROUTE_POLICY[cell[0]] not in ("api", "public") and cell[0] not in UI_OPEN]
    # The keys the matrix used are intact (the mutating cells used throwaway keys and objects).
    for caller in CALLERS[1:]:
        assert client.get("/models", headers=bearer(tenants[caller])).status_code == 200, caller


def test_an_internal_user_reads_only_itself_and_its_own_keys(client, tenants):
    ivan, bob = tenants["internal user"], tenants["other tenant"]
    own = client.get("/user/info", headers=bearer(ivan)).get_json()  # no user_id: the caller's own
    assert own["user_id"] == "ivan" and own["user_info"]["user_role"] == "internal_user"
    assert client.get("/user/info", query_string={"user_id": "bob"}, headers=bearer(ivan)).status_code == 403
    second = client.post("/key/generate", json={"user_id": "ivan"}, headers=bearer(MASTER)).get_json()
    assert client.get("/key/info", query_string={"key": second["token"]}, headers=bearer(ivan)).status_code == 200
    assert client.get("/key/info", query_string={"key": second["token"]}, headers=bearer(bob)).status_code == 403
    assert client.get("/user/info", headers=bearer(tenants["virtual key"])).status_code == 403
    # Nobody but a proxy admin writes a role, least of all its own (LiteLLM CVE-2026-47101).
    for token in (ivan, tenants["viewer"], tenants["team admin"]):
        resp = client.post("/user/update", json={"user_id": "ivan", "user_role": "proxy_admin"},
                           headers=bearer(token))
        assert resp.status_code == 403
    assert client.get("/user/info", headers=bearer(ivan)).get_json()["user_info"]["user_role"] == "internal_user"


def test_key_info_answers_only_about_the_caller(client):
    key_a = _throwaway(client)
    key_b = _throwaway(client)
    own = client.get("/key/info", headers=bearer(key_a)).get_json()
    assert own["info"]["key_name"] == "sk-..." + key_a[-4:]
    by_hash = client.get("/key/info", query_string={"key": own["key"]}, headers=bearer(key_a))
    assert by_hash.status_code == 200
    for other in (key_b, client.get("/key/info", headers=bearer(key_b)).get_json()["key"]):
        resp = client.get("/key/info", query_string={"key": other}, headers=bearer(key_a))
        assert resp.status_code == 403 and key_b not in resp.get_data(as_text=True)


def test_without_a_master_key_calls_are_open_and_key_routes_closed(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'keys.sqlite'}")
    app = create_app(demo_settings())
    client = app.test_client()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        policy = ROUTE_POLICY[rule.endpoint]
        path = rule.rule.replace("<path:model>", "demo")
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        closed = policy in ("keys", "self", "read", "scoped")
        query, body = _recipes(client, rule.endpoint)[0][:2] if not closed else (None, {})
        sent = body.flask() if isinstance(body, Form) else {"json": body}
        path = path.replace("<path:filename>", "ui.css").replace("<token>", "0" * 64).replace("<action>", "block")
        path = path.replace("<team_id>", "team-a").replace("<model_id>", "m0")
        resp = client.open(path.replace("<response_id>", "resp_missing").replace("<request_id>", "req_0"),
                           method=method, query_string=query, **sent)
        if policy == "ui":  # the admin UI says it needs a master key; a form is refused before that
            assert resp.status_code == (200 if rule.endpoint == "ui.static" else 503 if method == "GET" else 403)
        elif rule.endpoint in STORED_RESPONSES:
            assert resp.status_code == 404, rule.rule  # nothing stored: the database is never opened
        elif closed:
            assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "no_master_key", rule.rule
        else:
            assert resp.status_code == 200, (rule.rule, resp.get_data(as_text=True)[:300])
    assert not os.path.exists(tmp_path / "keys.sqlite")  # no key store without a master key


# ---- hostile Authorization headers on a real gunicorn gateway ------------------------------------

HOSTILE = [
    ("sql injection", "Bearer x' OR (SELECT pg_sleep(8)) IS NOT NULL --"),
    ("sql injection shaped like a key", "Bearer sk-' OR (SELECT pg_sleep(8)) IS NOT NULL --"),
    ("8 KB of a", "a" * 8000),
    ("8 KB bearer", "Bearer " + "a" * 8000),
    ("non-ASCII as UTF-8", "Bearer clé-ünïcode".encode("utf-8")),
    ("non-ASCII as latin-1", "Bearer clé-ünïcode".encode("latin-1")),
    ("sk- and 200 characters", "Bearer sk-" + "a" * 200),
    ("sk- alone", "Bearer sk-"),
    ("well-formed unknown key", "Bearer sk-" + "Q" * 43),
    ("no scheme", "sk-" + "Q" * 43),
    ("Basic scheme", "Basic " + "QQ==" * 10),
]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_hostile_authorization_headers_get_a_fast_401(start_gateway, tmp_path, database):
    with contextlib.ExitStack() as stack:
        general = {"master_key": MASTER}
        env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'keys.sqlite'}"}
        if database == "postgresql":
            url, admin, schema = stack.enter_context(pg_schema())
            general["database_url"] = url
        config = {"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
                  "general_settings": general}
        gw = start_gateway(config, env=env)
        stack.callback(gw.stop)  # before the schema goes
        good = requests.post(gw.url + "/key/generate", json={}, headers=bearer(MASTER), timeout=10).json()["key"]
        chat = {"model": "demo", "messages": HELLO}
        assert requests.post(gw.url + "/chat/completions", json=chat, headers=bearer(good), timeout=10).ok

        slow = []
        for name, value in HOSTILE:
            for path, method, body in (("/chat/completions", "POST", chat), ("/key/info", "GET", None),
                                       ("/key/list", "GET", None)):
                started = time.monotonic()
                resp = requests.request(method, gw.url + path, json=body, headers={"Authorization": value},
                                        timeout=30)
                took = time.monotonic() - started
                assert resp.status_code == 401, (name, path, resp.status_code, resp.text[:300])
                assert resp.json()["error"]["type"] == "invalid_request_error"
                if took >= 1.0:
                    slow.append((name, path, round(took, 2)))
            resp = requests.post(gw.url + "/chat/completions", json=chat, timeout=30,
                                 headers={"api-key": value if isinstance(value, bytes) else value.split()[-1]})
            assert resp.status_code == 401, (name, "api-key", resp.status_code)
        assert not slow, slow

        # Nothing broke: the gateway and its key store still work...
        assert requests.post(gw.url + "/chat/completions", json=chat, headers=bearer(good), timeout=10).ok
        listed = requests.get(gw.url + "/key/list", headers=bearer(MASTER), timeout=10).json()["keys"]
        assert len(listed) == 1
        if database == "postgresql":  # ...and so does the server: no sleeping query, the table intact
            with admin.connect() as connection:
                started = time.monotonic()
                assert connection.execute(text("SELECT 1")).scalar() == 1
                assert time.monotonic() - started < 1.0
                sleeping = connection.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%pg_sleep%' "
                    "AND pid <> pg_backend_pid()")).scalar()
                assert sleeping == 0
                count = connection.execute(text(f'SELECT count(*) FROM "{schema}".gateway_keys')).scalar()
                assert count == 1


def test_8_kib_authorization_headers_get_the_json_401_too(start_gateway, tmp_path):
    """8 KiB of 'a' is past gunicorn's default header-field limit (8190 bytes): today gunicorn
    answers 431 with an HTML page instead of the gateway's OpenAI-style 401."""
    config = {"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
              "general_settings": {"master_key": MASTER}}
    gw = start_gateway(config, env={"DATABASE_URL": f"sqlite:///{tmp_path / 'keys.sqlite'}"})
    for value in ("a" * 8192, "Bearer " + "a" * 8192, "Bearer sk-" + "a" * 8192):
        started = time.monotonic()
        resp = requests.get(gw.url + "/v1/models", headers={"Authorization": value}, timeout=30)
        assert time.monotonic() - started < 1.0
        assert resp.status_code == 401, (len(value), resp.status_code, resp.text[:100])
        assert resp.json()["error"]["type"] == "invalid_request_error"
    # Far bigger headers may be refused by the server itself, but fast, and the gateway carries on.
    started = time.monotonic()
    resp = requests.get(gw.url + "/v1/models", headers={"Authorization": "Bearer " + "a" * 65536}, timeout=30)
    assert 400 <= resp.status_code < 500 and time.monotonic() - started < 1.0
    assert requests.get(gw.url + "/v1/models", headers=bearer(MASTER), timeout=10).status_code == 200
