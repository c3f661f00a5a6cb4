"""The app through Flask's in-process test client: routes, bodies, limits, auth, errors, streams."""

import dataclasses
import io

import orjson
import pytest

from gateway.app import create_app
from gateway.wire.upstream import ChunkStream
from gateway.config.settings import from_dict
from gateway.wire.sse import SSEDecoder

MASTER = "sk-master-test-0123456789"
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT_BODY = {"model": "demo", "messages": MESSAGES}
DEMO_MODEL = {"model_name": "demo", "litellm_params": {"model": "demo/echo"}}


def client_for(raw_config):
    return create_app(from_dict(raw_config, source="test")).test_client()


def post_json(client, path, body, **kwargs):
    return client.post(path, data=orjson.dumps(body), content_type="application/json", **kwargs)


def assert_envelope(resp, status, code=None, param=None):
    assert resp.status_code == status, resp.data
    assert resp.mimetype == "application/json"
    body = orjson.loads(resp.data)
    assert list(body) == ["error"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param
    assert resp.headers.get("x-request-id")
    return body["error"]


def sse_events(resp):
    decoder = SSEDecoder()
    events = decoder.feed(resp.data) + decoder.close()
    return [e.data for e in events]


# --- routes -----------------------------------------------------------------------------------------

ENDPOINT_BODIES = {
    "chat": {"messages": MESSAGES},
    "completions": {"prompt": "hi"},
    "embeddings": {"input": "hi"},
}
PATHS = {"chat": "chat/completions", "completions": "completions", "embeddings": "embeddings"}
OBJECTS = {"chat": "chat.completion", "completions": "text_completion", "embeddings": "list"}


@pytest.mark.parametrize("endpoint", list(PATHS))
@pytest.mark.parametrize("template, in_path", [
    ("/{path}", False),
    ("/v1/{path}", False),
    ("/engines/demo/{path}", True),
    ("/v1/engines/demo/{path}", True),
    ("/openai/deployments/demo/{path}?api-version=2024-02-01", True),
])
def test_every_post_route(client, endpoint, template, in_path):
    body = dict(ENDPOINT_BODIES[endpoint])
    # With the model in the path, the body's model (if any) does not matter.
    body["model"] = "not-a-model" if in_path else "demo"
    resp = post_json(client, template.format(path=PATHS[endpoint]), body)
    assert resp.status_code == 200, resp.data
    data = orjson.loads(resp.data)
    assert data["object"] == OBJECTS[endpoint]
    assert data["model"] == "echo"
    assert resp.headers["x-request-id"]


@pytest.mark.parametrize("endpoint", list(PATHS))
@pytest.mark.parametrize("template", ["/engines/nope/{path}", "/openai/deployments/nope/{path}?api-version=x"])
def test_unknown_model_in_the_path(client, endpoint, template):
    resp = post_json(client, template.format(path=PATHS[endpoint]), {**ENDPOINT_BODIES[endpoint], "model": "demo"})
    assert_envelope(resp, 404, code="model_not_found", param="model")


@pytest.mark.parametrize("path", ["/models", "/v1/models"])
def test_models_list(path):
    client = client_for({"model_list": [DEMO_MODEL, {"model_name": "b", "litellm_params": {"model": "demo/b"}}],
                         "router_settings": {"model_group_alias": {"alias-b": "b"}}})
    resp = client.get(path)
    assert resp.status_code == 200
    data = orjson.loads(resp.data)
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["demo", "b", "alias-b"]
    assert all(m["object"] == "model" for m in data["data"])


@pytest.mark.parametrize("path", ["/models/demo", "/v1/models/demo"])
def test_model_get(client, path):
    resp = client.get(path)
    assert resp.status_code == 200
    assert orjson.loads(resp.data)["id"] == "demo"


@pytest.mark.parametrize("path", ["/models/nope", "/v1/models/nope"])
def test_model_get_unknown(client, path):
    assert_envelope(client.get(path), 404, code="model_not_found")


@pytest.mark.parametrize("path", ["/health/liveliness", "/health/liveness"])
def test_liveliness(client, path):
    resp = client.get(path)
    assert resp.status_code == 200
    assert resp.headers["x-request-id"]


def test_readiness(client):
    resp = client.get("/health/readiness")
    assert resp.status_code == 200
    assert orjson.loads(resp.data)["status"] == "healthy"


def test_readiness_shows_this_workers_view_of_the_jobs_lease_without_a_database_query(tmp_path):
    settings = from_dict({"model_list": [DEMO_MODEL], "general_settings": {
        "master_key": MASTER, "database_url": f"sqlite:///{tmp_path / 'gw.sqlite'}",
        "spend_spool_dir": str(tmp_path / "spool"), "background_health_checks": True,
        "maximum_spend_logs_retention_period": "30d", "background_job_lease_seconds": 6}})
    app = create_app(settings)
    gateway = app.extensions["gateway"]
    jobs = orjson.loads(app.test_client().get("/health/readiness").data)["background_jobs"]
    assert jobs == {"leader": False, "lease_seconds": 6.0, "leases": {"background-jobs": None},
                    "jobs": ["health_check", "spend_log_retention"]}
    assert gateway.store.describe() == "not opened yet"  # readiness asked the database nothing
    assert gateway.jobs.keep() == 1  # what the lease loop does under gevent
    jobs = orjson.loads(app.test_client().get("/health/readiness").data)["background_jobs"]
    assert jobs["leader"] is True and jobs["leases"] == {"background-jobs": 1}
    gateway.store.get().engine.dispose()


def test_readiness_without_models_is_503():
    resp = client_for({}).get("/health/readiness")
    assert resp.status_code == 503


def test_chat_without_models_is_503():
    assert_envelope(post_json(client_for({}), "/v1/chat/completions", CHAT_BODY), 503)


# --- bodies -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Content-Type": "text/plain"},
    {"Content-Type": "application/x-www-form-urlencoded"},  # what `curl -d` sends by default
    {"Content-Type": "application/json; charset=utf-8"},
    {"Content-Type": "application/octet-stream"},
])
def test_body_is_json_whatever_the_content_type(client, headers):
    resp = client.post("/v1/chat/completions", data=orjson.dumps(CHAT_BODY), headers=headers)
    assert resp.status_code == 200, resp.data
    assert orjson.loads(resp.data)["choices"][0]["message"]["content"].endswith("You said: hi")


def test_trailing_commas_over_http(client):
    raw = b'{\n "model": "demo",\n "messages": [{"role": "user", "content": "a,]",},],\n}'
    resp = client.post("/v1/chat/completions", data=raw, content_type="application/json")
    assert resp.status_code == 200, resp.data
    assert orjson.loads(resp.data)["choices"][0]["message"]["content"].endswith("You said: a,]")


@pytest.mark.parametrize("raw", [b'{"model": "demo", "messages": [', b"", b"[]", b"\xff\xfe"])
def test_invalid_json_is_400(client, raw):
    resp = client.post("/v1/chat/completions", data=raw, content_type="application/json")
    assert_envelope(resp, 400, code="invalid_json")


@pytest.mark.parametrize("body, param", [
    ({"model": "demo", "messages": "hi"}, "messages"),
    ({"model": "demo", "messages": MESSAGES, "max_tokens": "2"}, "max_tokens"),
    ({"model": "demo"}, "messages"),
])
def test_validation_errors_over_http(client, body, param):
    assert_envelope(post_json(client, "/v1/chat/completions", body), 400, param=param)


SMALL_LIMIT = {"model_list": [DEMO_MODEL], "general_settings": {"max_request_size_mb": 0.001}}
BIG_BODY = orjson.dumps({"model": "demo", "messages": [{"role": "user", "content": "x" * 5000}]})
SMALL_BODY = orjson.dumps(CHAT_BODY)


def test_413_with_content_length():
    client = client_for(SMALL_LIMIT)
    assert len(BIG_BODY) > 1048
    assert_envelope(client.post("/v1/chat/completions", data=BIG_BODY, content_type="application/json"), 413)
    assert client.post("/v1/chat/completions", data=SMALL_BODY).status_code == 200


@pytest.mark.parametrize("body, status", [(BIG_BODY, 413), (SMALL_BODY, 200)])
def test_413_with_a_chunked_body(body, status):
    client = client_for(SMALL_LIMIT)
    resp = client.post("/v1/chat/completions", input_stream=io.BytesIO(body),
                       headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                       environ_base={"wsgi.input_terminated": True})
    assert resp.status_code == status, resp.data
    if status == 413:
        assert_envelope(resp, 413)


def test_default_limit_is_generous(client):
    body = {"model": "demo", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    assert post_json(client, "/v1/chat/completions", body).status_code == 200


# --- auth -------------------------------------------------------------------------------------------

@pytest.fixture
def keyed():
    return client_for({"model_list": [DEMO_MODEL], "general_settings": {"master_key": MASTER}})


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_api_key"),
    ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
    ({"Authorization": f"Bearer {MASTER[:-1]}"}, "invalid_api_key"),
    ({"Authorization": f"Bearer {MASTER}x"}, "invalid_api_key"),
    ({"Authorization": f"Bearer {MASTER.upper()}"}, "invalid_api_key"),
    ({"Authorization": MASTER}, "missing_api_key"),
    ({"Authorization": f"Basic {MASTER}"}, "missing_api_key"),
    ({"Authorization": "Bearer "}, "missing_api_key"),
    ({"api-key": "wrong"}, "invalid_api_key"),
    ({"api-key": ""}, "missing_api_key"),
])
@pytest.mark.parametrize("method, path", [("POST", "/v1/chat/completions"), ("POST", "/chat/completions"),
                                          ("POST", "/v1/embeddings"), ("GET", "/v1/models"),
                                          ("GET", "/models/demo")])
def test_master_key_rejects(keyed, headers, code, method, path):
    resp = keyed.open(path, method=method, data=orjson.dumps(CHAT_BODY) if method == "POST" else None,
                      headers=headers)
    err = assert_envelope(resp, 401, code=code)
    assert err["type"] == "invalid_request_error"
    assert MASTER not in resp.get_data(as_text=True)


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {MASTER}"},
    {"Authorization": f"bearer {MASTER}"},
    {"Authorization": f"Bearer  {MASTER} "},
    {"api-key": MASTER},
])
def test_master_key_accepts(keyed, headers):
    resp = post_json(keyed, "/v1/chat/completions", CHAT_BODY, headers=headers)
    assert resp.status_code == 200, resp.data
    assert keyed.get("/v1/models", headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/health/liveliness", "/health/liveness", "/health/readiness"])
def test_health_is_open_without_key(keyed, path):
    assert keyed.get(path).status_code == 200


def test_gateway_master_key_env_applies_to_the_app(monkeypatch):
    monkeypatch.setenv("GATEWAY_MASTER_KEY", MASTER)
    client = client_for({"model_list": [DEMO_MODEL]})
    assert post_json(client, "/v1/chat/completions", CHAT_BODY).status_code == 401
    ok = post_json(client, "/v1/chat/completions", CHAT_BODY, headers={"Authorization": f"Bearer {MASTER}"})
    assert ok.status_code == 200


def test_no_master_key_means_no_auth(client):
    resp = post_json(client, "/v1/chat/completions", CHAT_BODY, headers={"Authorization": "Bearer anything"})
    assert resp.status_code == 200


# --- request ids and error rendering ------------------------------------------------------------------

def test_request_id_on_every_response(keyed, monkeypatch):
    auth = {"Authorization": f"Bearer {MASTER}"}
    responses = [
        post_json(keyed, "/v1/chat/completions", CHAT_BODY, headers=auth),                 # 200
        post_json(keyed, "/v1/chat/completions", {**CHAT_BODY, "stream": True}, headers=auth),  # stream
        keyed.post("/v1/chat/completions", data=b"{", headers=auth),                       # 400
        post_json(keyed, "/v1/chat/completions", CHAT_BODY),                               # 401
        keyed.get("/no/such/route", headers=auth),                                         # 404
        post_json(keyed, "/v1/chat/completions", {**CHAT_BODY, "model": "x"}, headers=auth),  # 404 model
        keyed.get("/v1/chat/completions", headers=auth),                                   # 405
        keyed.get("/health/liveliness"),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert [r.status_code for r in responses] == [200, 200, 400, 401, 404, 404, 405, 200]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


def test_request_ids_differ_between_forked_workers():
    """Workers fork from one master: each must draw its own ids (the ledger replays by request id)."""
    import os
    import re

    from gateway.app import new_request_id
    new_request_id()  # the parent's generator is in use before the fork, as in gunicorn's master
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes its first ids and leaves at once
        os.write(write, " ".join(new_request_id() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    parent = [new_request_id() for _ in range(3)]
    assert len(child) == 3 and all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in child + parent)
    assert not set(child) & set(parent)


@pytest.mark.parametrize("method, path", [("GET", "/nope"), ("POST", "/v1/nope"), ("GET", "/v1/chat"),
                                          ("DELETE", "/v2/models")])
def test_unknown_route_is_a_404_envelope(client, method, path):
    err = assert_envelope(client.open(path, method=method), 404)
    assert err["type"] == "invalid_request_error"
    assert path in err["message"]


@pytest.mark.parametrize("method, path", [("GET", "/v1/chat/completions"), ("PUT", "/v1/embeddings"),
                                          ("POST", "/v1/models"), ("POST", "/health/liveliness")])
def test_wrong_method_is_a_405_envelope(client, method, path):
    assert_envelope(client.open(path, method=method), 405)


def test_405_names_the_allowed_methods(client):
    # RFC 9110 15.5.6: a 405 response MUST carry an Allow header listing the target's methods.
    resp = client.get("/v1/chat/completions")
    assert resp.status_code == 405
    assert "POST" in resp.headers.get("Allow", "")


def test_unexpected_exception_is_a_500_without_details(app, client, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret-ish detail")

    monkeypatch.setattr(app.extensions["gateway"].router, "call", boom)
    resp = post_json(client, "/v1/chat/completions", CHAT_BODY)
    err = assert_envelope(resp, 500)
    text = resp.get_data(as_text=True)
    for leak in ("secret-ish", "RuntimeError", "Traceback", "File \"", "boom"):
        assert leak not in text
    assert err["type"] == "server_error"
    assert resp.headers["x-request-id"] in err["message"]


def test_unexpected_exception_in_a_stream_ends_with_an_error_event(app, client, monkeypatch):
    router = app.extensions["gateway"].router
    real_call = router.call

    def call(endpoint, body, stream, *args, **kwargs):
        provider, chunks = real_call(endpoint, body, stream, *args, **kwargs)

        def broken():
            yield from list(chunks)[:2]
            raise RuntimeError("secret-ish detail")
        return provider, ChunkStream(provider, endpoint, broken())

    monkeypatch.setattr(router, "call", call)
    resp = post_json(client, "/v1/chat/completions", {**CHAT_BODY, "stream": True})
    assert resp.status_code == 200
    events = sse_events(resp)
    assert "secret-ish" not in resp.get_data(as_text=True)
    assert b"[DONE]" not in events
    assert "error" in orjson.loads(events[-1])


# --- model resolution ----------------------------------------------------------------------------------

TWO_GROUPS = {"model_list": [{"model_name": "first", "litellm_params": {"model": "demo/one"}},
                             {"model_name": "second", "litellm_params": {"model": "demo/two"}}],
              "router_settings": {"model_group_alias": {"nick": "second", "dangling": "missing"}}}


def test_unknown_model_is_404_listing_available_names():
    resp = post_json(client_for(TWO_GROUPS), "/v1/chat/completions", {**CHAT_BODY, "model": "gpt-5"})
    err = assert_envelope(resp, 404, code="model_not_found", param="model")
    assert "gpt-5" in err["message"]
    for name in ("first", "second", "nick"):
        assert name in err["message"]


@pytest.mark.parametrize("body_model, served", [(None, "one"), ("", "one"), ("first", "one"),
                                                ("second", "two"), ("nick", "two")])
def test_model_resolution(body_model, served):
    body = {"messages": MESSAGES}
    if body_model is not None:
        body["model"] = body_model
    resp = post_json(client_for(TWO_GROUPS), "/v1/chat/completions", body)
    assert resp.status_code == 200, resp.data
    assert orjson.loads(resp.data)["model"] == served


def test_dangling_alias_is_not_served():
    resp = post_json(client_for(TWO_GROUPS), "/v1/chat/completions", {**CHAT_BODY, "model": "dangling"})
    assert_envelope(resp, 404, code="model_not_found")


@pytest.mark.parametrize("name", ["gpt-4o", "anything/at/all", "demo", "second"])
def test_catch_all_routes_any_name(name):
    settings = dataclasses.replace(from_dict(TWO_GROUPS), catch_all=True)
    client = create_app(settings).test_client()
    resp = post_json(client, "/v1/chat/completions", {**CHAT_BODY, "model": name})
    assert resp.status_code == 200, resp.data
    assert orjson.loads(resp.data)["model"] == "one"


# --- streams ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_stream_response(client, endpoint):
    body = {**ENDPOINT_BODIES[endpoint], "model": "demo"}
    plain = orjson.loads(post_json(client, f"/v1/{PATHS[endpoint]}", body).data)
    resp = post_json(client, f"/v1/{PATHS[endpoint]}", {**body, "stream": True})
    assert resp.status_code == 200
    assert resp.mimetype == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert resp.data.endswith(b"data: [DONE]\n\n")
    events = sse_events(resp)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    if endpoint == "chat":
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert text == plain["choices"][0]["message"]["content"]
    else:
        assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]


def test_stream_with_include_usage(client):
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    chunks = [orjson.loads(e) for e in sse_events(post_json(client, "/v1/chat/completions", body))[:-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_stream_false_is_a_plain_answer(client):
    resp = post_json(client, "/v1/chat/completions", {**CHAT_BODY, "stream": False})
    assert resp.mimetype == "application/json"


@pytest.mark.parametrize("path", ["/v1/embeddings", "/embeddings", "/openai/deployments/demo/embeddings"])
def test_embeddings_cannot_stream(client, path):
    resp = post_json(client, path, {"model": "demo", "input": "x", "stream": True})
    assert_envelope(resp, 400, param="stream")


def test_embeddings_base64_over_http(client):
    resp = post_json(client, "/v1/embeddings", {"model": "demo", "input": ["a", "b"], "encoding_format": "base64",
                                                "dimensions": 4})
    data = orjson.loads(resp.data)["data"]
    assert [isinstance(d["embedding"], str) for d in data] == [True, True]
