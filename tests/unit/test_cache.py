"""Response caching through the app: keys, isolation, per-request controls, streams, spend, Redis.

The in-process cache and the real Redis (a namespace of its own per test; CI fails without Redis).
Calls that reach the router are counted, so a hit is a call that did not.
"""

import json
import logging
import time
import uuid

import pytest

from gateway import cache as cache_module
from gateway.app import create_app
from gateway.config.settings import ConfigError
from gateway.config.settings import from_dict
from tests.unit.routing.test_state import REDIS_HOST
from tests.unit.routing.test_state import REDIS_PORT
from tests.unit.routing.test_state import redis_client  # noqa: F401  (fixture: the real Redis)

MASTER = "sk-master-cache-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]


def make_app(tmp_path, **cache_params):
    settings = from_dict({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x", "input_cost_per_token": 0.5,
                                                               "output_cost_per_token": 1.0}},
                       {"model_name": "e", "litellm_params": {"model": "demo/embed"}}],
        "router_settings": {"model_group_alias": {"m-alias": "m"}},
        "litellm_settings": {"cache": True, "cache_params": cache_params},
        "general_settings": {"master_key": MASTER, "database_url": f"sqlite:///{tmp_path / 'c.sqlite'}"}})
    app = create_app(settings)
    gateway = app.extensions["gateway"]
    calls = []
    real = gateway.router.call

    def counted(endpoint, body, stream, *args, **kwargs):
        calls.append(body.get("model"))
        return real(endpoint, body, stream, *args, **kwargs)
    gateway.router.call = counted
    app.upstream_calls = calls
    return app


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, type="local")


def post(app, path="/v1/chat/completions", key=MASTER, **body):
    body.setdefault("model", "m")
    if path.endswith("chat/completions"):
        body.setdefault("messages", HELLO)
    resp = app.test_client().post(path, json=body, headers={"Authorization": f"Bearer {key}"})
    data = resp.get_data()
    resp.close()
    return resp, data


def new_key(app, **rules):
    resp = app.test_client().post("/key/generate", json=rules, headers={"Authorization": f"Bearer {MASTER}"})
    return resp.get_json()["key"]


def test_second_identical_call_is_a_hit(app):
    first, data1 = post(app, max_tokens=5)
    second, data2 = post(app, max_tokens=5)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert data1 == data2 and len(app.upstream_calls) == 1
    assert first.headers["x-litellm-cache-key"] == second.headers["x-litellm-cache-key"]
    assert float(second.headers["x-litellm-response-cost"]) == 0.0
    assert float(first.headers["x-litellm-response-cost"]) > 0


@pytest.mark.parametrize("change", [{"max_tokens": 6}, {"temperature": 0.3}, {"messages": [{"role": "user", "content": "x"}]},
                                    {"seed": 7}, {"response_format": {"type": "json_object"}},
                                    {"stream": True}])
def test_anything_that_changes_the_answer_misses(app, change):
    post(app, max_tokens=5)
    resp, _ = post(app, **{"max_tokens": 5, **change})
    assert resp.headers["x-cache"] == "MISS" and len(app.upstream_calls) == 2


def test_controls_and_tracking_fields_do_not_split_the_cache(app):
    post(app, max_tokens=5, metadata={"a": 1}, user="u1", num_retries=2)
    resp, _ = post(app, max_tokens=5, metadata={"b": 2}, user="u2")
    assert resp.headers["x-cache"] == "HIT"


def test_an_alias_of_the_same_group_hits(app):
    post(app, max_tokens=5)
    resp, _ = post(app, model="m-alias", max_tokens=5)
    assert resp.headers["x-cache"] == "HIT"


def test_keys_never_see_each_others_answers(app):
    a, b = new_key(app), new_key(app)
    post(app, key=a, max_tokens=5)
    assert post(app, key=a, max_tokens=5)[0].headers["x-cache"] == "HIT"
    assert post(app, key=b, max_tokens=5)[0].headers["x-cache"] == "MISS"
    assert post(app, key=MASTER, max_tokens=5)[0].headers["x-cache"] == "MISS"


def test_shared_cache_is_an_operator_choice(tmp_path):
    app = make_app(tmp_path, type="local", shared=True)
    a, b = new_key(app), new_key(app)
    post(app, key=a, max_tokens=5)
    assert post(app, key=b, max_tokens=5)[0].headers["x-cache"] == "HIT"


def test_per_request_controls(app):
    assert post(app, max_tokens=5, caching=False)[0].headers.get("x-cache") is None
    assert post(app, max_tokens=5, cache={"no-store": True})[0].headers["x-cache"] == "MISS"
    assert post(app, max_tokens=5)[0].headers["x-cache"] == "MISS"  # nothing was stored
    assert post(app, max_tokens=5)[0].headers["x-cache"] == "HIT"
    assert post(app, max_tokens=5, cache={"no-cache": True})[0].headers["x-cache"] == "MISS"
    assert post(app, max_tokens=5, caching=False)[0].headers.get("x-cache") is None
    assert len(app.upstream_calls) == 5  # every call but the hit
    assert post(app, max_tokens=5, cache={"namespace": "other"})[0].headers["x-cache"] == "MISS"
    assert post(app, max_tokens=5, cache={"namespace": "other"})[0].headers["x-cache"] == "HIT"


def test_ttl_and_s_maxage(app):
    post(app, max_tokens=5, cache={"ttl": 1})
    assert post(app, max_tokens=5)[0].headers["x-cache"] == "HIT"
    assert post(app, max_tokens=5, cache={"s-maxage": 0.0, "no-store": True})[0].headers["x-cache"] == "MISS"
    time.sleep(1.1)
    assert post(app, max_tokens=5)[0].headers["x-cache"] == "MISS"


@pytest.mark.parametrize("bad", [{"ttl": -1}, {"s-maxage": "x"}, {"namespace": 3}, "no-cache"])
def test_bad_cache_controls_are_400(app, bad):
    resp, data = post(app, max_tokens=5, cache=bad)
    assert resp.status_code == 400 and json.loads(data)["error"]["param"].startswith("cache")


@pytest.fixture(params=["local", "redis"])
def any_backend(request, tmp_path):
    """The in-process cache and the real Redis (a namespace of this test's own)."""
    if request.param == "local":
        return make_app(tmp_path, type="local")
    request.getfixturevalue("redis_client")
    return make_app(tmp_path, type="redis", host=REDIS_HOST, port=REDIS_PORT, namespace=f"test-{uuid.uuid4().hex}")


@pytest.mark.parametrize("field, value", [
    ("ttl", 1e300), ("ttl", 10 ** 12), ("ttl", cache_module.MAX_SECONDS + 1), ("ttl", -1), ("ttl", "60"),
    ("ttl", True), ("ttl", [60]), ("s-maxage", 1e300), ("s-maxage", -0.5), ("s-maxage", "x"),
    ("namespace", 3), ("namespace", "n" * 129), ("namespace", "two\nlines"), ("namespace", "a b"),
    ("namespace", "caf\u00e9"), ("no-cache", "true"), ("no-cache", 1), ("no-store", "yes"), ("no-store", 0)])
def test_out_of_range_cache_controls_are_400_naming_the_field(any_backend, field, value):
    """`{"ttl": 1e300}` made Redis refuse the SET, and the cache stepped aside for everyone."""
    resp, data = post(any_backend, max_tokens=5, cache={field: value})
    error = json.loads(data)["error"]
    assert resp.status_code == 400 and error["param"] == f"cache.{field}" and f"cache.{field}" in error["message"]
    assert any_backend.upstream_calls == []


@pytest.mark.parametrize("value", ["false", 0, {}])
def test_caching_must_be_a_boolean(app, value):
    resp, data = post(app, max_tokens=5, caching=value)
    assert resp.status_code == 400 and json.loads(data)["error"]["param"] == "caching"


def test_controls_at_their_bounds_are_served(any_backend):
    top = cache_module.MAX_SECONDS
    for controls in ({"ttl": top}, {"ttl": 0}, {"s-maxage": top}, {"s-maxage": 0}, {"namespace": "n" * 128},
                     {"namespace": "team-a.v2:x/y_z"}, {"namespace": ""}, {"no-cache": False, "no-store": False},
                     {"no-cache": None}, {"ttl": None}):
        resp, data = post(any_backend, max_tokens=5, cache=controls)
        assert resp.status_code == 200, (controls, data)
    assert post(any_backend, max_tokens=5, caching=True)[0].headers["x-cache"] == "HIT"  # stored with ttl=top


def test_a_command_redis_refuses_does_not_take_the_cache_down(tmp_path, redis_client):
    """Only a connection failure sets the cache aside; a refused command is that call's problem."""
    namespace = f"test-{uuid.uuid4().hex}"
    app = make_app(tmp_path, type="redis", host=REDIS_HOST, port=REDIS_PORT, namespace=namespace)
    first, _ = post(app, max_tokens=5)
    key = f"gateway:cache:{namespace}:{first.headers['x-litellm-cache-key']}"
    redis_client.delete(key)
    redis_client.rpush(key, "not a cache entry")  # GET on a list: WRONGTYPE, a ResponseError
    assert post(app, max_tokens=5)[0].headers["x-cache"] == "MISS"
    assert post(app, max_tokens=6)[0].headers["x-cache"] == "MISS"
    assert post(app, max_tokens=6)[0].headers["x-cache"] == "HIT"  # Redis was not set aside
    backend = app.extensions["gateway"].cache.backend
    redis_client.rpush(key + ":list", "x")
    assert backend.get(key + ":list") is None and backend.get(key) is not None  # SET replaced the list
    redis_client.delete(key, key + ":list", *redis_client.scan_iter(match=f"gateway:cache:{namespace}:*"))


def test_a_stream_is_served_from_cache_as_a_stream(app):
    def events(data):
        return [line[6:] for line in data.decode().splitlines() if line.startswith("data: ")]
    first, data1 = post(app, max_tokens=4, stream=True)
    second, data2 = post(app, max_tokens=4, stream=True)
    assert second.headers["x-cache"] == "HIT" and second.mimetype == "text/event-stream"
    assert events(data1) == events(data2) and events(data2)[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events(data2)[:-1])  # not asked for
    asked, data3 = post(app, max_tokens=4, stream=True, stream_options={"include_usage": True})
    assert asked.headers["x-cache"] == "HIT"
    assert json.loads(events(data3)[-2])["usage"]["completion_tokens"] == 4
    assert len(app.upstream_calls) == 1


def test_embeddings_are_cached(app):
    first, data1 = post(app, "/v1/embeddings", model="e", input="hello")
    second, data2 = post(app, "/v1/embeddings", model="e", input="hello")
    assert second.headers["x-cache"] == "HIT" and data1 == data2


def test_supported_call_types_limit_what_is_cached(tmp_path):
    app = make_app(tmp_path, type="local", supported_call_types=["embedding"])
    post(app, max_tokens=5)
    assert post(app, max_tokens=5)[0].headers.get("x-cache") is None
    post(app, "/v1/embeddings", model="e", input="x")
    assert post(app, "/v1/embeddings", model="e", input="x")[0].headers["x-cache"] == "HIT"


def test_a_hit_costs_nothing_and_is_marked_in_the_spend_row(app):
    key = new_key(app, max_budget=100)
    post(app, key=key, max_tokens=5)
    post(app, key=key, max_tokens=5, stream=True)
    post(app, key=key, max_tokens=5)
    post(app, key=key, max_tokens=5, stream=True)
    logs = app.test_client().get("/spend/logs", query_string={"api_key": key},
                                 headers={"Authorization": f"Bearer {MASTER}"}).get_json()
    assert [(r["cache_hit"], r["stream"]) for r in reversed(logs)] == [
        (False, False), (False, True), (True, False), (True, True)]
    assert [r["spend"] for r in logs if r["cache_hit"]] == [0.0, 0.0]
    assert all(r["spend"] > 0 for r in logs if not r["cache_hit"])
    info = app.test_client().get("/key/info", headers={"Authorization": f"Bearer {key}"}).get_json()["info"]
    assert info["spend"] == pytest.approx(sum(r["spend"] for r in logs))


@pytest.mark.parametrize("params, message", [
    ({"type": "memcached"}, "cache_params.type"), ({"ttl": 0}, "cache_params.ttl"),
    ({"supported_call_types": ["not_a_call_type"]}, "supported_call_types"), ({"namespace": 1}, "namespace"),
    ({"max_size_mb": 0}, "max_size_mb"), ({"ttl": 1e300}, "cache_params.ttl")])
def test_bad_cache_settings_stop_start_up(params, message):
    with pytest.raises(ConfigError, match=message):
        cache_module.build_cache(from_dict({"litellm_settings": {"cache": True, "cache_params": params}}))


def test_redis_is_the_default_when_redis_host_is_set():
    settings = from_dict({"litellm_settings": {"cache": True}})
    assert cache_module.build_cache(settings, environ={"REDIS_HOST": "127.0.0.1"}).backend.name == "redis"
    assert cache_module.build_cache(settings, environ={}).backend.name == "local"
    assert cache_module.build_cache(from_dict({})) is None


# ---- Redis ------------------------------------------------------------------------------------

def test_redis_cache_is_shared_between_instances(tmp_path, redis_client):
    namespace = f"test-{uuid.uuid4().hex}"
    one = make_app(tmp_path, type="redis", host=REDIS_HOST, port=REDIS_PORT, namespace=namespace, ttl=30)
    two = make_app(tmp_path, type="redis", host=REDIS_HOST, port=REDIS_PORT, namespace=namespace, ttl=30)
    post(one, max_tokens=5)
    resp, _ = post(two, max_tokens=5)
    assert resp.headers["x-cache"] == "HIT" and len(two.upstream_calls) == 0
    stored = list(redis_client.scan_iter(match=f"gateway:cache:{namespace}:*"))
    assert len(stored) == 1 and 0 < redis_client.ttl(stored[0]) <= 30
    redis_client.delete(*stored)


def test_redis_down_calls_go_on_uncached_and_it_says_so_once(tmp_path, caplog):
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    app = make_app(tmp_path, type="redis", host="127.0.0.1", port=dead_port)
    with caplog.at_level(logging.WARNING, logger="gateway.cache"):
        results = [post(app, max_tokens=5)[0] for _ in range(3)]
    assert [r.status_code for r in results] == [200, 200, 200]
    assert len(app.upstream_calls) == 3
    assert sum("Redis unreachable" in r.getMessage() for r in caplog.records) == 1


def test_local_cache_is_bounded_by_entries_and_bytes():
    local = cache_module.LocalCache(max_entries=3, max_bytes=100)
    for i in range(5):
        local.set(f"k{i}", b"x" * 10, 60)
    assert [local.get(f"k{i}") is not None for i in range(5)] == [False, False, True, True, True]
    local.get("k2")  # recently used: the last to go
    local.set("big", b"y" * 90, 60)  # 120 bytes: the least recently used go until 100 fit
    assert [k for k in ("k2", "k3", "k4", "big") if local.get(k) is not None] == ["k2", "big"]
    assert local._bytes == 100
    local.set("huge", b"z" * 101, 60)  # larger than the whole cache: not stored
    assert local.get("huge") is None and local.get("big") is not None


def test_litellm_call_type_names_of_uncached_surfaces_are_accepted_and_rerank_is_cached(tmp_path):
    from gateway.config.settings import from_dict
    settings = from_dict({"model_list": [{"model_name": "d", "litellm_params": {"model": "demo/x"}}],
                          "litellm_settings": {"cache": True, "cache_params": {"supported_call_types": [
                              "acompletion", "atranscription", "aspeech", "aimage_generation", "arerank",
                              "aresponses", "anthropic_messages"]}}})
    assert settings.litellm.cache.call_types == {"chat", "rerank", "messages"}
