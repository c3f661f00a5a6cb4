"""Virtual keys end to end: a real gunicorn gateway (2 gevent workers, --debug) on SQLite and on
the real PostgreSQL, the seed's own curl examples, then the keys used through the openai SDK.

One gateway per database serves the whole module (each test makes its own keys). PostgreSQL runs
in a schema of its own, dropped afterwards; the server is required when CI=true, elsewhere its
tests are skipped with the reason.
"""

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import openai
import pytest
import requests
import yaml

from gateway.access import keys as key_module
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

MASTER = "sk-1234"  # the master key of LiteLLM's docs
from tests.pg import schema_url as pg_schema
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")
HELLO = [{"role": "user", "content": "this is a test request, write a short poem"}]
SEED_MODELS = ["gpt-3.5-turbo", "gpt-4", "claude-2", "my-free-tier"]
# How long a change may take to reach every worker: the lookup cache, plus polling slack.
WINDOW = key_module.CACHE_SECONDS + 1.5

# ---- the seed's examples, verbatim (LiteLLM's proxy docs, "Managing Auth - Virtual Keys") ----------
# Only scheme, host and port are replaced. The first example abbreviates --header/--data to --h/--d,
# which curl refuses ("option --h: is ambiguous"); those two spellings are expanded, nothing else.
SEED_GENERATE = """curl 'http://0.0.0.0:8000/key/generate' \\
--h 'Authorization: Bearer sk-1234' \\
--d '{"models": ["gpt-3.5-turbo", "gpt-4", "claude-2"], "duration": "20m"}'"""
# The virtual keys page's later form of the same call.
SEED_GENERATE_PAGE = """curl 'http://0.0.0.0:8000/key/generate' \\
--header 'Authorization: Bearer sk-1234' \\
--header 'Content-Type: application/json' \\
--data-raw '{"models": ["gpt-3.5-turbo", "gpt-4", "claude-2"], "duration": "20m","metadata": {"user": "ishaan@berri.ai"}}'"""
SEED_ALIASES = """curl -X POST "https://0.0.0.0:8000/key/generate" \\
-H "Authorization: Bearer sk-1234" \\
-H "Content-Type: application/json" \\
-d '{
\t"models": ["my-free-tier"], \n\t"aliases": {"gpt-3.5-turbo": "my-free-tier"}, \n\t"duration": "30min"
}'"""
SEED_INFO = """curl 'http://0.0.0.0:8000/key/info?key=<user-key>' \\
     -X GET \\
     -H 'Authorization: Bearer <your-master-key>'"""


# ---- the gateway under test --------------------------------------------------------------------

class KeyGateway:
    """The running gateway, with the keys generated on it (checked against its log at the end)."""

    def __init__(self, proc, kind):
        self.proc = proc
        self.url = proc.url
        self.kind = kind
        self.keys = []

    def admin(self, method, path, **kwargs):
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {MASTER}"},
                                timeout=30, **kwargs)

    def generate(self, **body):
        resp = self.admin("POST", "/key/generate", json=body)
        assert resp.status_code == 200, resp.text
        key = resp.json()["key"]
        self.keys.append(key)
        return key

    def client(self, key):
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=30)

    def chat(self, key, model="gpt-4", **body):
        """One chat call on its own connection (so calls spread over both workers)."""
        return requests.post(self.url + "/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": model, "messages": HELLO, **body}, timeout=30)

    def curl(self, script, **placeholders):
        """Run a documented curl command against this gateway; its JSON answer."""
        script = script.replace("https://0.0.0.0:8000", self.url).replace("http://0.0.0.0:8000", self.url)
        for name, value in placeholders.items():
            script = script.replace(name, value)
        done = subprocess.run(["bash", "-c", script + " --silent --show-error --fail-with-body"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, (script, done.stdout, done.stderr)
        return json.loads(done.stdout)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(request, tmp_path_factory, fake_openai):
    tmp = tmp_path_factory.mktemp(f"keys-{request.param}")
    general = {"master_key": MASTER}
    env = {}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            general["database_url"] = stack.enter_context(pg_schema())  # via general_settings
        else:
            env["DATABASE_URL"] = f"sqlite:///{tmp / 'keys.sqlite'}"  # via the environment
        upstream = {"api_base": fake_openai.url + "/v1", "api_key": fake_openai.api_key}
        models = [{"model_name": name, "litellm_params": {"model": "demo/echo"}} for name in SEED_MODELS]
        models += [{"model_name": name, "litellm_params": {"model": f"openai/{name}", **upstream}}
                   for name in ("slow", "slow-stream")]
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump({"model_list": models, "general_settings": general}))
        proc = GatewayProcess(["--config", str(path), "--num_workers", "2", "--debug"], env,
                              tmp / "gateway.log", free_port())
        stack.callback(proc.stop)  # stopped before the schema is dropped
        proc.wait_ready()
        yield KeyGateway(proc, request.param)


def error_of(resp):
    return resp.json()["error"]


def fire(calls):
    """Run the zero-argument callables at once; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def parse_time(value):
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"{value!r} has no UTC offset"
    return parsed


def assert_close(when, expected, seconds=10):
    assert abs((when - expected).total_seconds()) < seconds, (when, expected)


# ---- the seed's examples ------------------------------------------------------------------------

def test_seed_key_examples_with_curl(gw):
    now = datetime.now(timezone.utc)
    seed = SEED_GENERATE.replace("--h '", "--header '").replace("--d '", "--data '")
    first = gw.curl(seed)
    page = gw.curl(SEED_GENERATE_PAGE)
    aliased = gw.curl(SEED_ALIASES)
    for answer in (first, page, aliased):
        gw.keys.append(answer["key"])
        assert answer["key"].startswith("sk-") and len(answer["key"]) >= 46
    assert_close(parse_time(first["expires"]), now + timedelta(minutes=20))
    assert_close(parse_time(page["expires"]), now + timedelta(minutes=20))
    assert_close(parse_time(aliased["expires"]), now + timedelta(minutes=30))
    assert page["metadata"] == {"user": "ishaan@berri.ai"}

    info = gw.curl(SEED_INFO, **{"<user-key>": first["key"], "<your-master-key>": MASTER})["info"]
    assert info["spend"] == 0.0
    assert info["models"] == ["gpt-3.5-turbo", "gpt-4", "claude-2"]
    assert info["aliases"] == {} and info["config"] == {}
    info = gw.curl(SEED_INFO, **{"<user-key>": aliased["key"], "<your-master-key>": MASTER})["info"]
    assert info["models"] == ["my-free-tier"] and info["aliases"] == {"gpt-3.5-turbo": "my-free-tier"}

    # The keys work as documented: a call with each.
    assert gw.client(first["key"]).chat.completions.create(model="gpt-4", messages=HELLO).choices
    raw = gw.client(aliased["key"]).chat.completions.with_raw_response.create(model="gpt-3.5-turbo",
                                                                             messages=HELLO)
    assert raw.headers["x-litellm-model-group"] == "my-free-tier"
    # /key/info names the instant /key/generate answered (with its UTC offset).
    assert parse_time(info["expires"]) == parse_time(aliased["expires"])


# ---- models and aliases through the openai SDK --------------------------------------------------

def test_allowed_models_with_the_openai_sdk(gw):
    key = gw.generate(models=["gpt-3.5-turbo", "gpt-4", "claude-2"], duration="20m")
    client = gw.client(key)
    for model in ("gpt-3.5-turbo", "gpt-4", "claude-2"):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
        assert raw.status_code == 200 and raw.headers["x-litellm-model-group"] == model
        assert raw.parse().choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="my-free-tier", messages=HELLO)
    assert denied.value.status_code == 403 and denied.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError):
        client.completions.create(model="my-free-tier", prompt="hi")
    with pytest.raises(openai.PermissionDeniedError):
        client.embeddings.create(model="my-free-tier", input="hi")
    assert client.embeddings.create(model="gpt-4", input="hi").data
    stream = client.chat.completions.create(model="claude-2", messages=HELLO, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert sorted(m.id for m in client.models.list()) == ["claude-2", "gpt-3.5-turbo", "gpt-4"]
    # The master key still sees every model.
    assert sorted(m.id for m in gw.client(MASTER).models.list()) == sorted(SEED_MODELS + ["slow", "slow-stream"])


def test_alias_rewrites_the_model_before_routing(gw):
    key = gw.generate(models=["my-free-tier"], aliases={"gpt-3.5-turbo": "my-free-tier"}, duration="30min")
    client = gw.client(key)
    raw = client.chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=HELLO)
    assert raw.status_code == 200
    assert raw.headers["x-litellm-model-group"] == "my-free-tier"
    stream = client.chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=HELLO, stream=True)
    assert stream.headers["x-litellm-model-group"] == "my-free-tier"
    assert list(stream.parse())
    assert client.chat.completions.create(model="my-free-tier", messages=HELLO).choices
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="gpt-4", messages=HELLO)
    assert denied.value.code == "model_not_allowed"


def test_models_lists_allowed_names_not_aliases(gw):
    key = gw.generate(models=["my-free-tier"], aliases={"gpt-3.5-turbo": "my-free-tier"})
    listed = sorted(m.id for m in gw.client(key).models.list())
    assert listed == ["my-free-tier"]  # the model it may call; its alias is a name for it (as LiteLLM lists)


# ---- expiry, block, delete, regenerate: everywhere within the cache window ---------------------

def _statuses(gw, key, n=4):
    """n concurrent calls with key, each on a new connection: [(status, error code or None)]."""
    def one():
        resp = gw.chat(key)
        return resp.status_code, (error_of(resp).get("code") if resp.status_code != 200 else None)
    return fire([one] * n)


def _settle(gw, targets, changed_at):
    """Keep calling with each key for the cache window after the change (workers may disagree
    meanwhile), then every call must answer each key's target (status, code), round after round."""
    seen = {name: set() for name in targets}
    while time.monotonic() < changed_at + WINDOW:
        for name, (key, _) in targets.items():
            seen[name].update(_statuses(gw, key))
        time.sleep(0.1)
    for _ in range(3):
        for name, (key, target) in targets.items():
            answers = _statuses(gw, key, 6)
            assert set(answers) == {target}, f"{name}: {answers} {WINDOW:.1f} s after the change"
    return seen


def test_expired_blocked_deleted_and_regenerated_keys(gw):
    expiring = gw.generate(duration="1s")
    expiring_since = time.monotonic()
    blocked, deleted, regenerated = gw.generate(), gw.generate(), gw.generate()
    for key in (blocked, deleted, regenerated):  # cached in both workers now (most likely)
        for _ in range(3):
            assert set(_statuses(gw, key)) == {(200, None)}

    assert gw.admin("POST", "/key/block", json={"key": blocked}).json()["blocked"] is True
    deleted_hash = gw.admin("POST", "/key/delete", json={"keys": [deleted]}).json()["deleted_keys"]
    assert len(deleted_hash) == 1 and deleted not in json.dumps(deleted_hash)
    fresh = gw.admin("POST", "/key/regenerate", json={"key": regenerated}).json()["key"]
    changed_at = time.monotonic()
    gw.keys.append(fresh)
    assert set(_statuses(gw, fresh)) == {(200, None)}  # the new key works at once

    time.sleep(max(0.0, 2.0 - (time.monotonic() - expiring_since)))
    seen = _settle(gw, {"expired": (expiring, (401, "key_expired")),
                        "blocked": (blocked, (403, "key_blocked")),
                        "deleted": (deleted, (401, "invalid_api_key")),
                        "regenerated-old": (regenerated, (401, "invalid_api_key")),
                        "regenerated-new": (fresh, (200, None))}, changed_at)
    assert seen["regenerated-new"] == {(200, None)} and seen["expired"] == {(401, "key_expired")}

    with pytest.raises(openai.PermissionDeniedError) as denied:
        gw.client(blocked).chat.completions.create(model="gpt-4", messages=HELLO)
    assert denied.value.code == "key_blocked"
    with pytest.raises(openai.AuthenticationError) as expired:
        gw.client(expiring).chat.completions.create(model="gpt-4", messages=HELLO)
    assert expired.value.code == "key_expired"

    unblock_at = time.monotonic()
    assert gw.admin("POST", "/key/unblock", json={"key": blocked}).json()["blocked"] is False
    _settle(gw, {"unblocked": (blocked, (200, None))}, unblock_at)


# ---- per-key limits, exact across the two workers ------------------------------------------------

def test_rpm_limit_is_exact_across_two_workers(gw):
    key = gw.generate(rpm_limit=3)
    results = fire([lambda: gw.chat(key)] * 10)
    statuses = sorted(resp.status_code for resp in results)
    assert statuses == [200] * 3 + [429] * 7, [(r.status_code, r.text[:200]) for r in results]
    for resp in results:
        if resp.status_code == 429:
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
            assert error_of(resp)["type"] == "rate_limit_error"
    other = gw.generate(rpm_limit=3)  # limits are per key
    assert gw.chat(other).status_code == 200


def _raw_stream(gw, key, model="slow-stream"):
    """Open a streamed chat on a plain socket; returns the socket once the first bytes arrived."""
    body = json.dumps({"model": model, "messages": HELLO, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", gw.proc.port), timeout=10)
    sock.sendall(b"POST /chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first[:300]
    return sock


def test_max_parallel_requests_holds_and_releases(gw, fake_openai, monkeypatch):
    monkeypatch.setattr(fake_openai, "slow_seconds", 1.5)
    key = gw.generate(max_parallel_requests=1)

    # A plain call: the second call is refused while the first runs, accepted after.
    first = {}
    worker = threading.Thread(target=lambda: first.setdefault("resp", gw.chat(key, model="slow")))
    worker.start()
    deadline = time.monotonic() + 5
    while fake_openai.count("slow") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = gw.chat(key)
    worker.join(10)
    assert second.status_code == 429, second.text
    assert second.headers.get("Retry-After") and error_of(second)["type"] == "rate_limit_error"
    assert first["resp"].status_code == 200, first["resp"].text
    assert gw.chat(key).status_code == 200

    # A stream read to its end holds the slot while it runs and releases it.
    monkeypatch.setattr(fake_openai, "slow_stream_chunks", 5)
    with requests.post(gw.url + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, stream=True,
                       json={"model": "slow-stream", "messages": HELLO, "stream": True}, timeout=30) as resp:
        lines = resp.iter_lines()
        assert next(lines)
        assert gw.chat(key).status_code == 429
        assert b"data: [DONE]" in list(lines)
    assert _eventually_ok(gw, key, 2.0)

    # A client that hangs up mid-stream releases the slot too, long before the stream would end.
    monkeypatch.setattr(fake_openai, "slow_stream_chunks", 100)  # 10 s of chunks
    sock = _raw_stream(gw, key)
    assert gw.chat(key).status_code == 429
    sock.close()
    hung_up = time.monotonic()
    assert fake_openai.wait_for_disconnect(5), "the gateway never closed the upstream stream"
    assert _eventually_ok(gw, key, 3.0)
    assert time.monotonic() - hung_up < 5


def _eventually_ok(gw, key, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gw.chat(key).status_code == 200:
            return True
        time.sleep(0.05)
    return False


def test_spent_budget_is_refused_before_the_upstream(gw, fake_openai):
    key = gw.generate(max_budget=0)
    with pytest.raises(openai.RateLimitError) as refused:
        gw.client(key).chat.completions.create(model="slow", messages=HELLO)
    assert refused.value.status_code == 429
    assert refused.value.body["type"] == "budget_exceeded"
    assert fake_openai.count("slow") == 0


# ---- the key is a secret -------------------------------------------------------------------------

def test_keys_never_logged_listed_or_forwarded(gw, fake_openai, monkeypatch):
    monkeypatch.setattr(fake_openai, "slow_seconds", 0.01)
    monkeypatch.setattr(fake_openai, "slow_stream_chunks", 3)
    key = gw.generate(models=["slow", "slow-stream", "gpt-4"], metadata={"user": "ishaan@berri.ai"})
    client = gw.client(key)
    assert client.chat.completions.create(model="slow", messages=HELLO).choices
    assert list(client.chat.completions.create(model="slow-stream", messages=HELLO, stream=True))
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="claude-2", messages=HELLO)
    resp = requests.get(gw.url + "/key/info", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert resp.status_code == 200 and key not in resp.text
    assert gw.admin("POST", "/key/update", json={"key": key, "rpm_limit": 100}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        gw.client(key[:-1] + ("A" if key[-1] != "A" else "B")).models.list()

    listed = gw.admin("GET", "/key/list")
    assert listed.status_code == 200
    tokens = [item["token"] for item in listed.json()["keys"]]
    assert key_module.hash_key(key) in tokens and all(len(token) == 64 for token in tokens)
    log = gw.proc.log()
    assert "POST Request Sent from gateway" in log  # --debug is on: upstream calls are logged
    forwarded = json.dumps(fake_openai.requests)
    for secret in gw.keys:
        body = secret[len("sk-"):]
        assert body[:20] not in listed.text, "a key in /key/list"
        assert body[:20] not in log and body[-20:] not in log, "a key in the gateway log"
        assert body[:20] not in forwarded, "a key sent upstream"


# ---- issue #11 item 4: a change stops the old key at once on both workers --------------------------

def _warm(gw, key, rounds=4):
    """Call with the key on many new connections, so both workers have it cached."""
    for _ in range(rounds):
        assert set(_statuses(gw, key, 8)) == {(200, None)}


@pytest.mark.parametrize("change", ["regenerate", "delete", "block", "update"])
def test_a_change_stops_the_old_key_at_once_on_both_workers(gw, change):
    key = gw.generate()
    _warm(gw, key)
    if change == "regenerate":
        fresh = gw.admin("POST", "/key/regenerate", json={"key": key}).json()["key"]
        gw.keys.append(fresh)
        targets = {key: (401, "invalid_api_key"), fresh: (200, None)}
    elif change == "delete":
        assert gw.admin("POST", "/key/delete", json={"keys": [key]}).status_code == 200
        targets = {key: (401, "invalid_api_key")}
    elif change == "block":
        assert gw.admin("POST", "/key/block", json={"key": key}).status_code == 200
        targets = {key: (403, "key_blocked")}
    else:
        assert gw.admin("POST", "/key/update", json={"key": key, "models": ["claude-2"]}).status_code == 200
        targets = {key: (403, "model_not_allowed")}  # gpt-4 is no longer allowed
    for _ in range(6):  # every call after the answer, on either worker
        for name, target in targets.items():
            assert set(_statuses(gw, name, 8)) == {target}


# ---- issue #11 item 12: concurrent changes of one key ----------------------------------------------

def test_concurrent_regenerates_over_http_one_wins_and_its_key_works(gw):
    for _ in range(3):
        key = gw.generate()
        token = key_module.hash_key(key)
        answers = fire([lambda: gw.admin("POST", "/key/regenerate", json={"key": token})] * 8)
        statuses = sorted(resp.status_code for resp in answers)
        assert statuses.count(200) == 1 and set(statuses) <= {200, 404}, [a.text for a in answers]
        [won] = [resp.json()["key"] for resp in answers if resp.status_code == 200]
        gw.keys.append(won)
        assert set(_statuses(gw, won)) == {(200, None)}
        assert set(_statuses(gw, key)) == {(401, "invalid_api_key")}


def test_concurrent_changes_over_http_never_500(gw):
    for _ in range(5):
        key = gw.generate()
        token = key_module.hash_key(key)
        calls = [lambda: gw.admin("POST", "/key/update", json={"key": token, "rpm_limit": 50})] * 4 + [
            lambda: gw.admin("POST", "/key/block", json={"key": token}),
            lambda: gw.admin("POST", "/key/unblock", json={"key": token}),
            lambda: gw.admin("POST", "/key/regenerate", json={"key": token}),
            lambda: gw.admin("POST", "/key/delete", json={"keys": [token]})]
        answers = fire(calls)
        unexpected = [(a.status_code, a.text[:60]) for a in answers if a.status_code not in (200, 404)]
        assert not unexpected, str(unexpected)
        for resp in answers:
            if resp.status_code != 200:  # the key was regenerated or deleted by a call before it
                assert error_of(resp)["code"] == "key_not_found"
            elif str(resp.json().get("key", "")).startswith("sk-"):
                gw.keys.append(resp.json()["key"])


# ---- LiteLLM compatibility (issue #11) -------------------------------------------------------------

def test_answers_carry_token_id_and_updated_at(gw):
    answer = gw.admin("POST", "/key/generate", json={"key_alias": "compat"}).json()
    gw.keys.append(answer["key"])
    token = key_module.hash_key(answer["key"])
    assert answer["token_id"] == token == answer["token"]
    created = parse_time(answer["updated_at"])
    info = gw.admin("GET", "/key/info", params={"key": answer["key"]}).json()
    assert info["info"]["token_id"] == token and parse_time(info["info"]["updated_at"]) == created
    time.sleep(0.01)  # so the update's time stamp differs from the generate's
    updated = gw.admin("POST", "/key/update", json={"key": token, "rpm_limit": 3}).json()
    assert updated["token_id"] == token and parse_time(updated["updated_at"]) > created
    listed = {item["token_id"]: item for item in gw.admin("GET", "/key/list").json()["keys"]}
    assert listed[token]["updated_at"] == updated["updated_at"]


def test_key_info_of_another_key_asked_by_a_virtual_key(gw):
    mine, other = gw.generate(), gw.generate()
    me = {"Authorization": f"Bearer {mine}"}
    own = requests.get(gw.url + "/key/info", headers=me, timeout=10)
    assert own.status_code == 200 and own.json()["key"] == key_module.hash_key(mine)
    assert requests.get(gw.url + "/key/info", headers=me, params={"key": mine}, timeout=10).status_code == 200
    for name in (other, key_module.hash_key(other)):
        resp = requests.get(gw.url + "/key/info", headers=me, params={"key": name}, timeout=10)
        assert resp.status_code == 403 and other not in resp.text, resp.text
    for name in ("sk-" + "N" * 43, "0" * 64):
        resp = requests.get(gw.url + "/key/info", headers=me, params={"key": name}, timeout=10)
        assert resp.status_code == 404 and error_of(resp)["code"] == "key_not_found", resp.text


def test_duration_null_never_expires_and_absent_keeps_the_default(gw):
    forever = gw.admin("POST", "/key/generate", json={"duration": None}).json()
    gw.keys.append(forever["key"])
    assert forever["expires"] is None
    assert gw.admin("GET", "/key/info", params={"key": forever["key"]}).json()["info"]["expires"] is None
    default = gw.admin("POST", "/key/generate", json={}).json()
    gw.keys.append(default["key"])
    assert_close(parse_time(default["expires"]), datetime.now(timezone.utc) + timedelta(hours=1))
    assert set(_statuses(gw, forever["key"])) == {(200, None)}
