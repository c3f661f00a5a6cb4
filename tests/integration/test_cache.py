"""Response caching end to end: a real gunicorn gateway (2 gevent workers) in front of the fake
OpenAI, called with the openai SDK (`with_raw_response` for the headers), once with the in-process
cache and once with a real Redis (a private redis-server of this module: nothing to clean up, no
other run can see its entries; CI fails without the binary, elsewhere the Redis tests are skipped).

Workers. The in-process cache lives in each worker, so on a 2-worker gateway an identical call that
lands on the other worker misses: by design, not a bug. Which worker accepts a new connection is the
kernel's choice, so "the second call hits" would be a coin toss, and running the local gateway with
1 worker would never show the split. Instead every call here is sent to a chosen worker: connections
are opened until that worker has accepted one (the worker holding the server end of a connection is
found in /proc: the connection's socket inode in /proc/net/tcp, then the worker with a descriptor on
it), the call goes over that kept-alive connection, and is checked to have been served there. So:

- the behaviour tests send all calls of a test to one worker on the local backend, and alternate
  them over both workers on Redis: one set of expectations fits both, and every Redis hit was stored
  by the other worker;
- `test_identical_calls_on_both_workers` sends N identical calls alternately to both workers: with
  Redis the upstream is called exactly once, with the local cache exactly once per worker (twice).

Every test uses prompts of its own (uuid), so no entry of another test is ever found.
"""

import contextlib
import os
import time
import uuid
from dataclasses import dataclass

import openai
import pytest
import requests
import yaml

from gateway.cache import REDIS_RETRY_SECONDS
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port
from tests.integration.conftest import openai_config
from tests.integration.redis_server import RedisServer

pytestmark = pytest.mark.integration

MASTER = "sk-master-cache-0123456789"
CHAT, EMBED = "gpt-3.5-turbo", "text-embedding-3-small"
WORKERS = 2
CONFIG_TTL = 60
REDIS_NAMESPACE = "it-cache"
CALL_TIMEOUT = 30
PIN_TIMEOUT = 30  # seconds to get a kept-alive connection onto every worker
ROW_TIMEOUT = 10  # a spend row is written once the response has gone out
RESUME_TIMEOUT = REDIS_RETRY_SECONDS * 3  # caching back after Redis returns
BACKENDS = ["local", "redis"]
KINDS = ["chat", "stream", "embed"]


def fresh(tag):
    return f"{tag} {uuid.uuid4().hex}"


# ---- which worker served a call ----------------------------------------------------------------

def worker_pids(master):
    """The gunicorn workers: the processes whose parent is the master."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            found.append(int(entry))
    return sorted(found)


def _server_socket_inode(server_port, client_port):
    """The inode of the gateway's end of the established connection from `client_port`."""
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if (state == "01" and int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port):
                return inode
    return None


def _holder(pids, inode):
    """Which of `pids` has a descriptor on the socket `inode`."""
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                pass
    return None


# ---- the gateway under test --------------------------------------------------------------------

@dataclass
class Reply:
    """One call through the SDK: headers, the worker that served it, and what came back."""

    kind: str
    status: int
    headers: object  # case-insensitive, as the SDK gives them
    worker: int
    content: object  # chat text, or the embedding vectors
    body: object  # the parsed answer as a dict, or a stream's chunks as dicts

    @property
    def cache(self):
        return self.headers.get("x-cache")

    @property
    def cache_key(self):
        return self.headers.get("x-litellm-cache-key")

    @property
    def request_id(self):
        return self.headers["x-request-id"]


class CacheGateway:
    """A running gateway with caching on; each call is sent to a worker of the test's choosing."""

    def __init__(self, proc, backend, redis_server, cache_params):
        self.proc, self.url, self.port = proc, proc.url, proc.port
        self.backend, self.cache_params = backend, cache_params
        self.redis = None
        if redis_server is not None:
            import redis
            self.redis = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=2)
        deadline = time.monotonic() + PIN_TIMEOUT
        while len(worker_pids(proc.proc.pid)) < WORKERS:
            assert time.monotonic() < deadline, f"fewer than {WORKERS} workers:\n{proc.log()}"
            time.sleep(0.05)
        self.workers = worker_pids(proc.proc.pid)
        assert len(self.workers) == WORKERS, self.workers
        # Local: one worker's cache per test. Redis: alternate, so every hit crossed workers.
        self.rotation = self.workers if backend == "redis" else self.workers[:1]
        self._turn = 0

    @classmethod
    def start(cls, tmp, fake, backend, redis_server=None, **cache_params):
        params = {"type": backend, "ttl": CONFIG_TTL, **cache_params}
        if backend == "redis":
            params.setdefault("namespace", REDIS_NAMESPACE)
            params.update(host="127.0.0.1", port=redis_server.port)
        config = openai_config(fake, master_key=MASTER, cache=True, cache_params=params)
        # The failure triggers fail on purpose: no retries, no cooldown between tests.
        config["router_settings"] = {"num_retries": 0, "allowed_fails": 1000}
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        proc = GatewayProcess(["--config", str(path), "--num_workers", str(WORKERS)], {},
                              tmp / "gateway.log", free_port())
        try:
            proc.wait_ready()
            return cls(proc, backend, redis_server, params)
        except BaseException:
            proc.stop()
            raise

    def close(self):
        if self.redis is not None:
            self.redis.close()
        self.proc.stop()

    # -- connections pinned to workers -------------------------------------------------------------

    def worker_of(self, response):
        """The worker holding the server end of the connection `response` came over."""
        client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        deadline = time.monotonic() + 2
        while True:
            inode = _server_socket_inode(self.port, client_port)
            pid = _holder(self.workers, inode) if inode else None
            if pid is not None:
                return pid
            assert time.monotonic() < deadline, f"no worker holds the connection from port {client_port}"
            time.sleep(0.02)

    @contextlib.contextmanager
    def pinned(self, worker):
        """An HTTP client (the SDK's own kind) whose one kept-alive connection `worker` accepted.

        A fresh one per call: the SDK drops the connection after a stream's [DONE].
        """
        deadline = time.monotonic() + PIN_TIMEOUT
        while True:
            conn = openai.DefaultHttpxClient(timeout=CALL_TIMEOUT)
            resp = conn.get(self.url + "/health/liveliness")
            assert resp.status_code == 200, resp.text
            if self.worker_of(resp) == worker:
                break
            conn.close()
            assert time.monotonic() < deadline, f"no connection reached worker {worker}:\n{self.proc.log()}"
        try:
            yield conn
        finally:
            conn.close()

    def next_worker(self):
        worker = self.rotation[self._turn % len(self.rotation)]
        self._turn += 1
        return worker

    def client(self, conn, key=MASTER):
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=CALL_TIMEOUT, http_client=conn)

    # -- calls -------------------------------------------------------------------------------------

    def call(self, kind, text, *, key=MASTER, worker=None, **params):
        """One call of `kind` (chat, stream, embed) with `text` as the prompt or input."""
        worker = self.next_worker() if worker is None else worker
        with self.pinned(worker) as conn:
            client = self.client(conn, key)
            if kind == "embed":
                raw = client.embeddings.with_raw_response.create(**{"model": EMBED, "input": text, **params})
            else:
                params = {"model": CHAT, "messages": [{"role": "user", "content": text}], **params}
                if kind == "stream":
                    params["stream"] = True
                raw = client.chat.completions.with_raw_response.create(**params)
            served = self.worker_of(raw.http_response)
            parsed = raw.parse()
            if kind == "stream":
                body = [chunk.model_dump() for chunk in parsed]
                content = "".join(c["choices"][0]["delta"]["content"] or "" for c in body if c["choices"])
            else:
                body = parsed.model_dump()
                content = ([d.embedding for d in parsed.data] if kind == "embed"
                           else parsed.choices[0].message.content)
        assert served == worker, f"sent to worker {worker}, served by {served}"
        return Reply(kind, raw.status_code, raw.headers, served, content, body)

    def pair(self, kind, text, **params):
        """The same call twice: (first, second)."""
        return self.call(kind, text, **params), self.call(kind, text, **params)

    # -- admin routes and the backend --------------------------------------------------------------

    def admin(self, method, path, **kwargs):
        resp = requests.request(method, self.url + path, headers={"Authorization": f"Bearer {MASTER}"},
                                timeout=CALL_TIMEOUT, **kwargs)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def new_key(self):
        return self.admin("POST", "/key/generate", json={})["key"]

    def row(self, request_id):
        """The /spend/logs row of one request, once written."""
        deadline = time.monotonic() + ROW_TIMEOUT
        while True:
            rows = self.admin("GET", "/spend/logs", params={"request_id": request_id})
            if rows:
                assert len(rows) == 1, rows
                return rows[0]
            assert time.monotonic() < deadline, f"no spend row for {request_id} after {ROW_TIMEOUT}s"
            time.sleep(0.1)

    def stored_ttl(self, reply, namespace=None):
        """Redis only: seconds left on the entry `reply` came from or went to (-2: no such key)."""
        namespace = namespace or self.cache_params["namespace"]
        return self.redis.ttl(f"gateway:cache:{namespace}:{reply.cache_key}")

    def log_count(self, text):
        return self.proc.log().count(text)


def model_for(kind):
    return EMBED if kind == "embed" else CHAT


def caches(replies):
    return [reply.cache for reply in replies]


def assert_controls_not_sent_upstream(fake):
    """The gateway's cache controls are its own: never forwarded to the provider."""
    for sent in list(fake.requests):
        body = sent.get("json") or {}
        assert "cache" not in body and "caching" not in body, sent


# ---- fixtures ----------------------------------------------------------------------------------

def private_redis_server():
    """A redis-server of our own; CI must have the binary, elsewhere the test is skipped."""
    try:
        return RedisServer()
    except RuntimeError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def module_redis():
    with private_redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def launch(tmp_path_factory, fake_openai):
    """launch(backend, redis_server=None, **cache_params): a CacheGateway, stopped with the module."""
    started = []

    def start(backend, redis_server=None, **cache_params):
        tmp = tmp_path_factory.mktemp(f"cache-{backend}")
        started.append(CacheGateway.start(tmp, fake_openai, backend, redis_server, **cache_params))
        return started[-1]

    yield start
    for gw in started:
        gw.close()


@pytest.fixture(scope="module", params=BACKENDS)
def gw(request, launch):
    """One gateway per backend for the module's behaviour tests."""
    redis_server = request.getfixturevalue("module_redis") if request.param == "redis" else None
    return launch(request.param, redis_server)


@pytest.fixture
def start_cached(request, launch):
    """start_cached(backend, **cache_params): a gateway of the test's own (Redis: the module's)."""
    def start(backend, **cache_params):
        redis_server = request.getfixturevalue("module_redis") if backend == "redis" else None
        return launch(backend, redis_server, **cache_params)
    return start


# ---- hits --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_second_identical_call_is_a_hit(gw, fake_openai, kind):
    first, second = gw.pair(kind, fresh(f"hit {kind}"))
    assert (first.status, second.status) == (200, 200)
    assert caches([first, second]) == ["MISS", "HIT"]
    assert first.cache_key == second.cache_key and len(first.cache_key) == 64
    assert fake_openai.count(model_for(kind)) == 1
    assert second.body == first.body  # the stored answer, ids and all
    if kind == "embed":
        assert len(second.content) == 1 and len(second.content[0]) > 0
    else:
        assert second.content.startswith("Hello from fake upstream: hit")
    if kind == "stream":
        assert second.headers["content-type"].startswith("text/event-stream")
        assert len(second.body) > 2
        assert all(chunk["usage"] is None for chunk in second.body)  # not asked for
    if gw.backend == "redis":
        assert first.worker != second.worker  # stored by one worker, found by the other
        assert 0 < gw.stored_ttl(first) <= CONFIG_TTL


def test_a_cached_stream_keeps_its_usage_for_who_asks(gw, fake_openai):
    text = fresh("usage")
    plain = gw.call("stream", text)
    asked = gw.call("stream", text, stream_options={"include_usage": True})
    assert caches([plain, asked]) == ["MISS", "HIT"]
    assert fake_openai.count(CHAT) == 1
    usage = asked.body[-1]["usage"]
    assert asked.body[-1]["choices"] == [] and usage["completion_tokens"] == len(plain.content.split())
    assert usage["prompt_tokens"] > 0
    assert asked.content == plain.content


@pytest.mark.parametrize("change, expected", [
    (lambda text: {"temperature": 0.9}, "MISS"),
    (lambda text: {"max_tokens": 3}, "MISS"),
    (lambda text: {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]},
     "MISS"),
    (lambda text: {"stream": True}, "MISS"),
    (lambda text: {"user": "someone-else", "extra_body": {"metadata": {"tag": "x"}}}, "HIT"),
], ids=["temperature", "max_tokens", "messages", "stream", "user-and-metadata-do-not-count"])
def test_what_changes_the_answer_misses(gw, fake_openai, change, expected):
    text, base = fresh("params"), {"temperature": 0.2, "max_tokens": 20}
    changed = {**base, **change(text)}
    kind = "stream" if changed.pop("stream", False) else "chat"
    first = gw.call("chat", text, **base)
    other = gw.call(kind, text, **changed)
    again = gw.call("chat", text, **base)
    assert caches([first, other, again]) == ["MISS", expected, "HIT"]
    assert fake_openai.count(CHAT) == (2 if expected == "MISS" else 1)
    assert (other.cache_key == first.cache_key) == (expected == "HIT")


def test_virtual_keys_never_share_answers(gw, fake_openai):
    text, keys = fresh("keys"), [gw.new_key(), gw.new_key(), MASTER]
    replies = [reply for key in keys for reply in gw.pair("chat", text, key=key)]
    assert caches(replies) == ["MISS", "HIT"] * 3
    assert fake_openai.count(CHAT) == 3
    assert len({reply.cache_key for reply in replies}) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_cache_hits_across_keys(start_cached, fake_openai, backend):
    shared = start_cached(backend, shared=True, **({"namespace": "it-cache-shared"} if backend == "redis" else {}))
    text = fresh("shared")
    replies = [shared.call("chat", text, key=key) for key in (shared.new_key(), shared.new_key(), MASTER)]
    assert caches(replies) == ["MISS", "HIT", "HIT"]
    assert fake_openai.count(CHAT) == 1
    assert len({reply.cache_key for reply in replies}) == 1


# ---- per-request controls ----------------------------------------------------------------------

def test_caching_false_neither_reads_nor_writes(gw, fake_openai):
    text, off = fresh("off"), {"extra_body": {"caching": False}}
    replies = [gw.call("chat", text, **off), gw.call("chat", text), gw.call("chat", text, **off),
               gw.call("chat", text)]
    assert caches(replies) == [None, "MISS", None, "HIT"]  # not cached at all: no x-cache header
    assert fake_openai.count(CHAT) == 3
    assert_controls_not_sent_upstream(fake_openai)


def test_no_store_and_no_cache(gw, fake_openai):
    text = fresh("controls")
    no_store, no_cache = {"extra_body": {"cache": {"no-store": True}}}, {"extra_body": {"cache": {"no-cache": True}}}
    replies = [gw.call("chat", text, **no_store),  # answered, not kept
               gw.call("chat", text),  # so this one misses, and is kept
               gw.call("chat", text),
               gw.call("chat", text, **no_cache),  # does not read, still refreshes the entry
               gw.call("chat", text)]
    assert caches(replies) == ["MISS", "MISS", "HIT", "MISS", "HIT"]
    assert fake_openai.count(CHAT) == 3
    assert_controls_not_sent_upstream(fake_openai)


def test_per_request_ttl_expires(gw, fake_openai):
    text, ttl = fresh("ttl"), 2
    first = gw.call("chat", text, extra_body={"cache": {"ttl": ttl}})
    stored_at = time.monotonic()
    assert gw.call("chat", text).cache == "HIT"
    if gw.backend == "redis":
        assert 0 < gw.stored_ttl(first) <= ttl
    time.sleep(max(0.0, stored_at + ttl + 0.5 - time.monotonic()))
    assert gw.call("chat", text).cache == "MISS"
    assert fake_openai.count(CHAT) == 2


def test_s_maxage_refuses_older_entries(gw, fake_openai):
    text = fresh("maxage")
    assert gw.call("chat", text).cache == "MISS"
    time.sleep(1.2)

    def max_age(seconds):
        return gw.call("chat", text, extra_body={"cache": {"s-maxage": seconds}}).cache
    # Too old for 1 s: answered upstream and stored anew, which the next 1 s call accepts.
    assert [max_age(60), max_age(1), max_age(1)] == ["HIT", "MISS", "HIT"]
    assert fake_openai.count(CHAT) == 2


def test_namespace_keeps_entries_apart(gw, fake_openai):
    text = fresh("namespace")

    def in_namespace(name):
        return gw.call("chat", text, **({"extra_body": {"cache": {"namespace": name}}} if name else {}))
    replies = [in_namespace(None), in_namespace("team-a"), in_namespace("team-a"), in_namespace(None),
               in_namespace("team-b")]
    assert caches(replies) == ["MISS", "MISS", "HIT", "HIT", "MISS"]
    assert fake_openai.count(CHAT) == 3
    if gw.backend == "redis":
        assert gw.stored_ttl(replies[1], namespace="team-a") > 0
        assert gw.stored_ttl(replies[0]) > 0


# ---- spend -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_a_hit_is_billed_zero(gw, kind):
    key = gw.new_key()
    miss, hit = gw.pair(kind, fresh(f"bill {kind}"), key=key)
    assert caches([miss, hit]) == ["MISS", "HIT"]
    miss_row, hit_row = gw.row(miss.request_id), gw.row(hit.request_id)
    assert (miss_row["cache_hit"], hit_row["cache_hit"]) == (False, True)
    assert (miss_row["stream"], hit_row["stream"]) == (kind == "stream", kind == "stream")
    assert miss_row["spend"] > 0 and hit_row["spend"] == 0
    assert hit_row["status"] == "success"
    if kind != "stream":  # a stream's cost is known only at its end: no header
        assert float(miss.headers["x-litellm-response-cost"]) == pytest.approx(miss_row["spend"], rel=1e-9)
        assert float(hit.headers["x-litellm-response-cost"]) == 0
    info = gw.admin("GET", "/key/info", params={"key": key})["info"]
    assert info["spend"] == pytest.approx(miss_row["spend"], rel=1e-9)


# ---- what is never cached ----------------------------------------------------------------------

@pytest.mark.parametrize("kind, model, error", [
    ("chat", "fail-400", openai.BadRequestError),
    # Two content chunks, then an in-band {"error": ...} event: a failed answer, not one to replay.
    ("stream", "stream-error", openai.APIError),
], ids=["error-status", "error-event-in-stream"])
def test_a_failed_call_is_not_cached(gw, fake_openai, kind, model, error):
    text = fresh("fails")
    for _ in range(2):
        with pytest.raises(error):
            gw.call(kind, text, model=model, worker=gw.rotation[0])
    assert fake_openai.count(model) == 2, "the failed answer was served again from the cache"


def test_a_stream_cut_by_the_client_is_not_cached(gw, fake_openai, monkeypatch):
    worker = gw.rotation[0]
    monkeypatch.setattr(fake_openai, "stream_interval", 0.1)
    monkeypatch.setattr(fake_openai, "slow_stream_chunks", 8)
    text = fresh("cut")
    with gw.pinned(worker) as conn:
        cut = gw.client(conn).chat.completions.create(
            model="slow-stream", messages=[{"role": "user", "content": text}], stream=True)
        chunks = iter(cut)
        next(chunks), next(chunks)
        cut.close()  # the client hangs up mid-stream
    assert fake_openai.wait_for_disconnect(5), fake_openai.disconnects
    full = [gw.call("stream", text, model="slow-stream", worker=worker) for _ in range(2)]
    assert caches(full) == ["MISS", "HIT"]
    assert full[1].content == "".join(f"tick{k} " for k in range(8)) + f"Hello from fake upstream: {text}"
    assert fake_openai.count("slow-stream") == 2


# ---- two workers -------------------------------------------------------------------------------

def test_identical_calls_on_both_workers(gw, fake_openai):
    """N identical calls alternating over both workers: Redis is one cache for all of them; the
    in-process cache is one per worker, so each worker asks the upstream exactly once."""
    text, n = fresh("workers"), 8
    replies = [gw.call("chat", text, worker=gw.workers[i % WORKERS]) for i in range(n)]
    assert {reply.worker for reply in replies} == set(gw.workers)
    if gw.backend == "redis":
        assert caches(replies) == ["MISS"] + ["HIT"] * (n - 1)
        assert fake_openai.count(CHAT) == 1
        assert all(reply.body == replies[0].body for reply in replies)
    else:
        assert caches(replies) == ["MISS", "MISS"] + ["HIT"] * (n - 2)
        assert fake_openai.count(CHAT) == WORKERS
        for reply in replies[WORKERS:]:  # each worker replays the answer it stored itself
            assert reply.body == replies[gw.workers.index(reply.worker)].body


def test_readiness_names_the_cache(gw):
    """LiteLLM's /health/readiness reports the cache type ("redis", "local"), None without one."""
    ready = requests.get(gw.url + "/health/readiness", timeout=CALL_TIMEOUT).json()
    assert ready["cache"] == gw.backend, ready


# ---- Redis going away --------------------------------------------------------------------------

def test_redis_outage_calls_go_on_uncached_then_caching_resumes(launch, fake_openai):
    with private_redis_server() as server:
        gw = launch("redis", server)
        w0, w1 = gw.workers
        text = fresh("outage")
        assert caches([gw.call("chat", text, worker=w) for w in (w0, w1)]) == ["MISS", "HIT"]

        server.stop()

        def outage_round(kinds):
            """Calls alternating over both workers: each must succeed quickly and uncached."""
            for i, kind in enumerate(kinds):
                started = time.monotonic()
                reply = gw.call(kind, text, worker=gw.workers[i % WORKERS])
                assert time.monotonic() - started < 2.0, "an outage must not stall calls"
                assert (reply.status, reply.cache) == (200, "MISS")
                assert reply.content.startswith("Hello from fake upstream: outage")
        outage_round(["chat", "chat", "stream", "stream", "chat", "chat"])
        assert fake_openai.count(CHAT) == 1 + 6  # every call went upstream
        # Said once by each worker (each has its own Redis connection), not once per call...
        assert gw.log_count("Redis unreachable") == WORKERS, gw.proc.log()
        time.sleep(REDIS_RETRY_SECONDS + 0.5)
        outage_round(["chat", "chat"])  # ...nor again when the retry after a few seconds fails
        assert fake_openai.count(CHAT) == 1 + 8
        assert gw.log_count("Redis unreachable") == WORKERS, gw.proc.log()

        server.start()  # same port, empty
        deadline = time.monotonic() + RESUME_TIMEOUT
        while True:  # stored by one worker, found by the other: both are back
            again = fresh("resumed")
            pair = [gw.call("chat", again, worker=w) for w in (w0, w1)]
            if caches(pair) == ["MISS", "HIT"]:
                break
            assert time.monotonic() < deadline, f"caching not back {RESUME_TIMEOUT}s after Redis:\n{gw.proc.log()}"
            time.sleep(0.2)
        assert caches([gw.call("chat", again, worker=w) for w in (w1, w0)]) == ["HIT", "HIT"]
        assert 1 <= gw.log_count("Redis reachable again") <= WORKERS, gw.proc.log()
        gw.close()
