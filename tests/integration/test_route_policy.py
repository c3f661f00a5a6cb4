"""Who may call what: every route of the live app x {no key, master key, a proxy_admin user's key, a
proxy_admin_viewer's key, an internal user's key, another tenant's (team's) internal user's key, a
key without a user}, checked against gateway.auth.ROUTE_POLICY and its roles; a route without a
policy fails here; and hostile Authorization headers get a fast 401 from a real gunicorn gateway on
both databases.

The matrix runs in-process (Flask test client, SQLite in tmp_path) for speed. PostgreSQL is
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
from gateway.config.settings import from_dict

pytestmark = pytest.mark.integration

MASTER = "sk-1234"
from tests.pg import schema as pg_schema
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
POLICIES = {"public", "api", "self", "admin", "keys", "read"}
CALLERS = ("no key", "master key", "proxy admin", "viewer", "internal user", "other tenant", "virtual key",
           "another virtual key")
ROLE_OF = {"master key": "proxy_admin", "proxy admin": "proxy_admin", "viewer": "proxy_admin_viewer",
           "internal user": "internal_user", "other tenant": "internal_user"}
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
    """Opening a route is a deliberate change: the public set and the key routes are pinned."""
    assert {e for e, p in ROUTE_POLICY.items() if p == "public"} == {"health.liveliness", "health.readiness"}
    assert ROUTE_POLICY["health.health"] == "admin"
    assert ROUTE_POLICY["keys.info"] == "self" and ROUTE_POLICY["users.info"] == "self"
    assert ROUTE_POLICY["keys.list_keys"] == "read"  # proxy admins and their viewers
    assert {p for e, p in ROUTE_POLICY.items() if e.startswith("keys.") and e not in ("keys.info", "keys.list_keys")
            } == {"keys"}
    assert ROUTE_POLICY["spend.logs"] == "read"
    # LiteLLM's global spend reports are about everyone: proxy admins and their viewers only.
    assert {p for e, p in ROUTE_POLICY.items() if e.startswith("reports.")} == {"read"}
    # Every management route that writes is for proxy admins only; reads for them and their viewers.
    for endpoint, policy in ROUTE_POLICY.items():
        if endpoint.split(".")[0] in ("users", "teams", "organizations", "customers"):
            reading = endpoint.split(".")[1] in ("info", "list_users", "list_teams", "list_organizations",
                                                 "list_customers")
            assert policy in (("read", "self") if reading else ("keys",)), endpoint
    assert ROUTE_POLICY["metrics.metrics"] == "admin"  # opened only by general_settings.metrics_public


# ---- the matrix ------------------------------------------------------------------------------------

def _throwaway(client):
    return client.post("/key/generate", json={}, headers=bearer(MASTER)).get_json()["key"]


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


def _membership(client):
    user = _user(client)
    return {"team_id": _team(client, member=user), "user_id": user}


def _recipe(client, endpoint, subject):
    """(query, JSON body) for a call to endpoint that the master key may make successfully; `subject`
    is the internal user's key and user id (what "self" routes are asked about)."""
    recipes = {
        "chat": lambda: (None, {"model": "demo", "messages": HELLO}),
        "completions": lambda: (None, {"model": "demo", "prompt": "hello"}),
        "embeddings": lambda: (None, {"model": "demo", "input": "hello"}),
        "models": lambda: (None, None),
        "health": lambda: (None, None),
        "keys.generate": lambda: (None, {"duration": "1h"}),
        "keys.info": lambda: ({"key": subject["key"]}, None),
        "keys.list_keys": lambda: (None, None),
        "keys.update": lambda: (None, {"key": _throwaway(client), "metadata": {"m": 1}}),
        "keys.delete": lambda: (None, {"keys": [_throwaway(client)]}),
        "keys.regenerate": lambda: (None, {"key": _throwaway(client)}),
        "keys.block": lambda: (None, {"key": _throwaway(client)}),
        "keys.unblock": lambda: (None, {"key": _throwaway(client)}),
        "spend.logs": lambda: ({"api_key": subject["key"], "limit": 5}, None),
        "reports.spend_report": lambda: ({"start_date": "2024-01-01", "end_date": "2099-12-31"}, None),
        "reports": lambda: (None, None),
        "metrics": lambda: (None, None),
        "users.new": lambda: (None, {"auto_create_key": False}),
        "users.info": lambda: ({"user_id": subject["user_id"]}, None),
        "users.update": lambda: (None, {"user_id": _user(client), "user_alias": "x"}),
        "users.delete": lambda: (None, {"user_ids": [_user(client)]}),
        "users.list_users": lambda: (None, None),
        "teams.new": lambda: (None, {}),
        "teams.info": lambda: ({"team_id": "team-a"}, None),
        "teams.update": lambda: (None, {"team_id": _team(client), "team_alias": "x"}),
        "teams.delete": lambda: (None, {"team_ids": [_team(client)]}),
        "teams.list_teams": lambda: (None, None),
        "teams.member_add": lambda: (None, {"team_id": _team(client), "member": {"user_id": _new_id()}}),
        "teams.member_delete": lambda: (None, _membership(client)),
        "teams.member_update": lambda: (None, {**_membership(client), "role": "admin"}),
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
    }
    make = recipes.get(endpoint) or recipes.get(endpoint.split(".")[0])
    assert make is not None, f"no request recipe for {endpoint}: add one to this test"
    return make()


ALLOWED = {"admin": {"proxy_admin"}, "keys": {"proxy_admin"}, "read": {"proxy_admin", "proxy_admin_viewer"}}


def expected(policy, caller):
    """(status class or exact status, error code) a cell must answer."""
    if policy == "public":
        return 200, None
    if caller == "no key":
        return 401, "missing_api_key"
    if policy == "api":
        return "2xx", None
    role = ROLE_OF.get(caller)
    if policy == "self":  # asked about the internal user: itself, proxy admins and viewers may read it
        return (200, None) if caller == "internal user" or role in ALLOWED["read"] else (403, None)
    if role in ALLOWED[policy]:
        return "2xx", None
    return 403, "master_key_required" if role is None else "role_not_allowed"


@pytest.fixture
def tenants(client):
    """The callers' keys: users with every role (the internal users in two teams) and plain keys."""
    for team in ("team-a", "team-b"):
        client.post("/team/new", json={"team_id": team}, headers=bearer(MASTER))
    tokens = {"no key": None, "master key": MASTER}
    for caller, user_id, team in (("proxy admin", "root", None), ("viewer", "auditor", None),
                                  ("internal user", "alice", "team-a"), ("other tenant", "bob", "team-b")):
        body = {"user_id": user_id, "user_role": ROLE_OF[caller], "teams": [team] if team else []}
        resp = client.post("/user/new", json=body, headers=bearer(MASTER))
        assert resp.status_code == 200, resp.get_data(as_text=True)
        tokens[caller] = resp.get_json()["key"]
    tokens["virtual key"] = client.post("/key/generate", json={"key_alias": "a"}, headers=bearer(MASTER)).get_json()["key"]
    tokens["another virtual key"] = client.post("/key/generate", json={"key_alias": "b"},
                                                headers=bearer(MASTER)).get_json()["key"]
    return tokens


def test_route_matrix(app, client, tenants):
    subject = {"key": tenants["internal user"], "user_id": "alice"}
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"]
    assert len(rules) >= len(ROUTE_POLICY)
    wrong, cells, granted = [], 0, []
    for rule in rules:
        path = rule.rule.replace("<path:model>", "demo")
        policy = ROUTE_POLICY[rule.endpoint]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for caller in CALLERS:
                query, body = _recipe(client, rule.endpoint, subject)
                resp = client.open(path, method=method, query_string=query, json=body,
                                   headers=bearer(tenants[caller]))
                cells += 1
                status, code = expected(policy, caller)
                ok = 200 <= resp.status_code < 300 if status == "2xx" else resp.status_code == status
                got_code = (resp.get_json(silent=True) or {}).get("error", {}).get("code") \
                    if resp.status_code >= 400 else None
                if not ok or (code is not None and got_code != code):
                    wrong.append(f"{method} {rule.rule} [{policy}] as {caller}: {resp.status_code} {got_code}, "
                                 f"expected {status} {code or ''}")
                if resp.status_code < 300:
                    granted.append((rule.endpoint, caller))
    assert not wrong, "\n".join(wrong)
    assert cells >= len(CALLERS) * len(ROUTE_POLICY)
    # Viewers read but never write; users without an admin role write nothing of the hierarchy.
    writes = {e for e, p in ROUTE_POLICY.items() if p in ("keys", "admin")}
    assert not [cell for cell in granted if cell[0] in writes and cell[1] not in ("master key", "proxy admin")]
    # The keys the matrix used are intact (the mutating cells used throwaway keys and objects).
    for caller in CALLERS[1:]:
        assert client.get("/models", headers=bearer(tenants[caller])).status_code == 200, caller


def test_an_internal_user_reads_only_itself_and_its_own_keys(client, tenants):
    alice, bob = tenants["internal user"], tenants["other tenant"]
    own = client.get("/user/info", headers=bearer(alice)).get_json()  # no user_id: the caller's own
    assert own["user_id"] == "alice" and own["user_info"]["user_role"] == "internal_user"
    assert client.get("/user/info", query_string={"user_id": "bob"}, headers=bearer(alice)).status_code == 403
    second = client.post("/key/generate", json={"user_id": "alice"}, headers=bearer(MASTER)).get_json()
    assert client.get("/key/info", query_string={"key": second["token"]}, headers=bearer(alice)).status_code == 200
    assert client.get("/key/info", query_string={"key": second["token"]}, headers=bearer(bob)).status_code == 403
    assert client.get("/user/info", headers=bearer(tenants["virtual key"])).status_code == 403
    # Nobody but a proxy admin writes a role, least of all its own (LiteLLM CVE-2026-47101).
    for token in (alice, tenants["viewer"]):
        resp = client.post("/user/update", json={"user_id": "alice", "user_role": "proxy_admin"},
                           headers=bearer(token))
        assert resp.status_code == 403
    assert client.get("/user/info", headers=bearer(alice)).get_json()["user_info"]["user_role"] == "internal_user"


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
        closed = policy in ("keys", "self", "read")
        query, body = _recipe(client, rule.endpoint, {"key": "sk-" + "x" * 43, "user_id": "u"}) if not closed \
            else (None, {})
        resp = client.open(path, method=method, query_string=query, json=body)
        if closed:
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
