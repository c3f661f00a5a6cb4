"""OpenTelemetry tracing end to end: real gunicorn gateways (2 gevent workers) export to an in-test
OTLP collector; each request has its Flask span and one child span per upstream attempt."""

import hashlib
import json
import statistics
import time

import pytest
import requests

from tests.fakes.otlp_receiver import Blackhole
from tests.fakes.otlp_receiver import OTLPGRPCReceiver
from tests.fakes.otlp_receiver import OTLPHTTPReceiver
from tests.integration.conftest import openai_config

pytestmark = pytest.mark.integration

MASTER = "sk-master-otel-0123456789abcdef"
ALIAS = "team-tracing"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
USER_TEXT = "tell me about distributed tracing please"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "gateway-under-test"}


def traced_config(fake, **litellm_settings):
    config = openai_config(fake, master_key=MASTER, extra_models=[
        {"model_name": "flaky-1", "litellm_params": {"model": "openai/flaky-1", "api_base": fake.url + "/v1",
                                                     "api_key": fake.api_key}}], **litellm_settings)
    config["general_settings"]["otel"] = True
    return config


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def new_key(gw):
    resp = requests.post(gw.url + "/key/generate", headers=auth(MASTER), json={"key_alias": ALIAS}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["key"]


def chat(gw, key, model, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": USER_TEXT}], **extra}
    return requests.post(gw.url + "/v1/chat/completions", headers=auth(key), json=body, timeout=30)


def stream(gw, key, model):
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": USER_TEXT}]}
    resp = requests.post(gw.url + "/v1/chat/completions", headers=auth(key), json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    chunks = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    usage = next(c["usage"] for c in chunks if c.get("usage"))
    return resp, text, usage


def spend_row(gw, request_id):
    deadline = time.monotonic() + 10
    while True:
        rows = requests.get(gw.url + "/spend/logs", headers=auth(MASTER), params={"request_id": request_id},
                            timeout=10).json()
        if rows:
            return rows[0]
        assert time.monotonic() < deadline, f"no spend row for {request_id}"
        time.sleep(0.05)


def server_span(spans, request_id):
    found = [s for s in spans if s["kind"] == "SPAN_KIND_SERVER"
             and s["attributes"].get("gateway.request_id") == request_id]
    return found[0] if len(found) == 1 else None


def attempt_spans(spans, request_id):
    found = [s for s in spans if s["kind"] == "SPAN_KIND_CLIENT"
             and s["attributes"].get("gateway.request_id") == request_id]
    return sorted(found, key=lambda s: s["attributes"]["gateway.attempt"])


def wait_for_calls(receiver, expected):
    """expected: {request_id: number of attempt spans}; every request's spans, once they all arrived."""
    def complete(spans):
        return all(server_span(spans, rid) is not None and len(attempt_spans(spans, rid)) == n
                   for rid, n in expected.items())
    return receiver.wait_for(complete)


def assert_children(spans, request_id, count):
    """The request's Flask span and its `count` attempt spans, children of it in its trace."""
    parent = server_span(spans, request_id)
    assert parent is not None, f"no request span for {request_id}"
    attempts = attempt_spans(spans, request_id)
    assert len(attempts) == count, attempts
    for span in attempts:
        assert (span["trace_id"], span["parent_span_id"]) == (parent["trace_id"], parent["span_id"])
        assert span["resource"]["service.name"] == "gateway-under-test"
    return parent, attempts


@pytest.fixture(scope="module")
def traced(fake_openai, tmp_path_factory):
    """One traced gateway, its collector, and the calls made through it (once for the module)."""
    from tests.integration.conftest import GatewayProcess
    from tests.integration.conftest import free_port
    with OTLPHTTPReceiver() as receiver:
        tmp = tmp_path_factory.mktemp("otel")
        (tmp / "config.yaml").write_text(json.dumps(traced_config(fake_openai)))
        port = free_port()
        gw = GatewayProcess(["--config", str(tmp / "config.yaml"), "--num_workers", "2"],
                            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, **FAST_EXPORT},
                            tmp / "gateway.log", port)
        try:
            gw.wait_ready()
            key = new_key(gw)
            calls = {"key": key}
            calls["chat"] = chat(gw, key, "gpt-3.5-turbo", max_tokens=50, temperature=0.3, top_p=0.9)
            calls["traceparent"] = requests.post(
                gw.url + "/v1/chat/completions", timeout=30,
                headers={**auth(key), "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
                json={"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]})
            calls["stream"] = stream(gw, key, "gpt-3.5-turbo")
            calls["embeddings"] = requests.post(gw.url + "/v1/embeddings", headers=auth(key), timeout=30,
                                                json={"model": "text-embedding-3-small", "input": USER_TEXT})
            calls["failed"] = chat(gw, key, "fail-500")
            calls["retried"] = chat(gw, key, "flaky-1", num_retries=1)
            calls["key_info"] = requests.get(gw.url + "/key/info", params={"key": key}, headers=auth(MASTER),
                                             timeout=10)
            calls["refused"] = chat(gw, "sk-not-a-key-0000000000", "gpt-3.5-turbo")
            for name in ("chat", "traceparent", "embeddings", "retried", "key_info"):
                assert calls[name].status_code == 200, (name, calls[name].text)
            assert calls["failed"].status_code == 500 and calls["refused"].status_code == 401
            calls["stream_row"] = spend_row(gw, calls["stream"][0].headers["x-request-id"])
            rid = {name: calls[name].headers["x-request-id"]
                   for name in ("chat", "traceparent", "embeddings", "failed", "retried")}
            rid["stream"] = calls["stream"][0].headers["x-request-id"]
            calls["rid"] = rid
            calls["spans"] = wait_for_calls(receiver, {**dict.fromkeys(rid.values(), 1), rid["retried"]: 2})
            for name in ("key_info", "refused"):  # plain request spans, no attempts
                request_id = calls[name].headers["x-request-id"]
                calls["spans"] = receiver.wait_for(lambda spans, r=request_id: server_span(spans, r) is not None)
            calls["raw"] = list(receiver.raw)
            calls["log"] = gw.log()
            yield calls
        finally:
            gw.stop()


def test_chat_attempt_span_is_a_child_of_the_request_span_with_genai_attributes(traced, fake_openai):
    resp = traced["chat"]
    parent, (span,) = assert_children(traced["spans"], resp.headers["x-request-id"], 1)
    assert parent["name"] == "POST /v1/chat/completions" and parent["status"] != "STATUS_CODE_ERROR"
    assert parent["attributes"]["http.status_code"] == 200
    assert span["name"] == "chat gpt-3.5-turbo" and span["status"] == "STATUS_CODE_UNSET"
    attrs = span["attributes"]
    answer = resp.json()
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gpt-3.5-turbo"
    assert attrs["gen_ai.response.model"] == attrs["gateway.upstream_model"] == "gpt-3.5-turbo"
    assert (attrs["gen_ai.request.max_tokens"], attrs["gen_ai.request.temperature"],
            attrs["gen_ai.request.top_p"]) == (50, 0.3, 0.9)
    assert attrs["gen_ai.usage.input_tokens"] == answer["usage"]["prompt_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == answer["usage"]["completion_tokens"]
    assert attrs["gateway.cost_usd"] > 0
    assert attrs["gateway.cost_usd"] == pytest.approx(float(resp.headers["x-litellm-response-cost"]), rel=1e-9)
    assert (attrs["server.address"], attrs["server.port"]) == ("127.0.0.1", fake_openai.port)
    assert attrs["gateway.deployment_id"] == resp.headers["x-litellm-model-id"]
    assert (attrs["gateway.retries"], attrs["gateway.fallbacks"], attrs["gateway.cache_hit"]) == (0, 0, False)
    assert attrs["gateway.key_alias"] == ALIAS
    assert "error.type" not in attrs
    # The attempt's own times, inside the request's.
    assert parent["start"] <= span["start"] <= span["end"] <= parent["end"] + 5_000_000
    # Message logging is on by default (LiteLLM's default).
    assert USER_TEXT in attrs["gen_ai.prompt"]
    assert attrs["gen_ai.completion"] == answer["choices"][0]["message"]["content"]


def test_a_client_traceparent_is_continued(traced):
    parent, (span,) = assert_children(traced["spans"], traced["traceparent"].headers["x-request-id"], 1)
    assert parent["trace_id"] == span["trace_id"] == CLIENT_TRACE
    assert parent["parent_span_id"] == CLIENT_SPAN


def test_stream_attempt_span_has_the_streamed_usage_text_and_billed_cost(traced):
    resp, text, usage = traced["stream"]
    _, (span,) = assert_children(traced["spans"], resp.headers["x-request-id"], 1)
    attrs = span["attributes"]
    assert attrs["gateway.stream"] is True
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (
        usage["prompt_tokens"], usage["completion_tokens"])
    assert attrs["gateway.cost_usd"] == pytest.approx(traced["stream_row"]["spend"], rel=1e-9)
    assert attrs["gen_ai.completion"] == text and text
    assert attrs["gateway.time_to_first_token_s"] >= 0


def test_embeddings_attempt_span(traced):
    resp = traced["embeddings"]
    _, (span,) = assert_children(traced["spans"], resp.headers["x-request-id"], 1)
    attrs = span["attributes"]
    assert span["name"] == "embeddings text-embedding-3-small"
    assert attrs["gen_ai.operation.name"] == "embeddings"
    assert attrs["gen_ai.usage.input_tokens"] == resp.json()["usage"]["prompt_tokens"]
    assert "gen_ai.usage.output_tokens" not in attrs
    assert attrs["gateway.cost_usd"] == pytest.approx(float(resp.headers["x-litellm-response-cost"]), rel=1e-9)


def test_failed_call_has_an_error_attempt_and_an_error_request_span(traced):
    resp = traced["failed"]
    parent, (span,) = assert_children(traced["spans"], resp.headers["x-request-id"], 1)
    assert parent["status"] == "STATUS_CODE_ERROR" and parent["attributes"]["http.status_code"] == 500
    attrs = span["attributes"]
    assert span["status"] == "STATUS_CODE_ERROR" and span["status_message"]
    assert attrs["error.type"] and attrs["gateway.status"] == "error"
    assert attrs["gen_ai.request.model"] == "fail-500" and attrs["gateway.cost_usd"] == 0
    assert "gen_ai.usage.input_tokens" not in attrs and "gen_ai.response.model" not in attrs


def test_retried_call_has_two_attempt_spans_the_first_failed(traced):
    resp = traced["retried"]
    assert resp.headers["x-litellm-attempted-retries"] == "1"
    _, (first, second) = assert_children(traced["spans"], resp.headers["x-request-id"], 2)
    assert first["status"] == "STATUS_CODE_ERROR" and first["attributes"]["error.type"]
    assert "gen_ai.usage.input_tokens" not in first["attributes"]
    assert second["status"] == "STATUS_CODE_UNSET" and "error.type" not in second["attributes"]
    assert first["end"] <= second["start"]
    for span in (first, second):
        assert span["attributes"]["gateway.retries"] == 1
    assert second["attributes"]["gen_ai.usage.output_tokens"] == resp.json()["usage"]["completion_tokens"]


def test_requests_without_a_call_have_their_request_span(traced):
    refused = server_span(traced["spans"], traced["refused"].headers["x-request-id"])
    assert refused["attributes"]["http.status_code"] == 401
    assert not attempt_spans(traced["spans"], traced["refused"].headers["x-request-id"])
    info = server_span(traced["spans"], traced["key_info"].headers["x-request-id"])
    assert info["attributes"]["http.target"].startswith("/key/info?key=REDACTED")


def test_no_key_reaches_the_collector(traced, fake_openai):
    key = traced["key"]
    secrets = [MASTER, fake_openai.api_key, fake_openai.azure_key, key, hashlib.sha256(key.encode()).hexdigest(),
               key[3:]]
    exported = b"".join(traced["raw"])
    spans_text = json.dumps(traced["spans"])
    for secret in secrets:
        assert secret.encode() not in exported, secret[:6]
        assert secret not in spans_text, secret[:6]
    # Probes are not traced by default.
    assert not [s for s in traced["spans"] if "/health/" in s["name"]]
    assert "otel: tracing to" in traced["log"] and "Traceback" not in traced["log"]


def test_message_text_is_left_out_with_turn_off_message_logging(fake_openai, start_gateway):
    with OTLPHTTPReceiver() as receiver:
        gw = start_gateway(traced_config(fake_openai, turn_off_message_logging=True), args=["--num_workers", "2"],
                           env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, **FAST_EXPORT})
        plain = chat(gw, MASTER, "gpt-3.5-turbo")
        streamed, text, _ = stream(gw, MASTER, "gpt-3.5-turbo")
        assert plain.status_code == 200 and text
        spans = wait_for_calls(receiver, {plain.headers["x-request-id"]: 1, streamed.headers["x-request-id"]: 1})
        for request_id in (plain.headers["x-request-id"], streamed.headers["x-request-id"]):
            _, (span,) = assert_children(spans, request_id, 1)
            assert "gen_ai.prompt" not in span["attributes"] and "gen_ai.completion" not in span["attributes"]
            assert span["attributes"]["gen_ai.usage.output_tokens"] > 0
        exported = b"".join(receiver.raw)
        assert USER_TEXT.encode() not in exported and text.encode() not in exported
        assert plain.json()["choices"][0]["message"]["content"].encode() not in exported


def test_grpc_export(fake_openai, start_gateway):
    with OTLPGRPCReceiver() as receiver:
        gw = start_gateway(traced_config(fake_openai), args=["--num_workers", "2"],
                           env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-token=abc%20def", **FAST_EXPORT})
        resp = chat(gw, MASTER, "gpt-3.5-turbo")
        assert resp.status_code == 200
        spans = wait_for_calls(receiver, {resp.headers["x-request-id"]: 1})
        _, (span,) = assert_children(spans, resp.headers["x-request-id"], 1)
        assert span["attributes"]["gen_ai.usage.input_tokens"] == resp.json()["usage"]["prompt_tokens"]
        assert receiver.headers[0].get("x-collector-token") == "abc def"


def timed_calls(gw, count=15):
    """Each call's wall time (chat and stream alternately, on the built-in demo model: no upstream
    I/O, so the times are the gateway's own)."""
    times = []
    for i in range(count):
        started = time.perf_counter()
        if i % 2:
            stream(gw, MASTER, "demo")
        else:
            assert chat(gw, MASTER, "demo").status_code == 200
        times.append(time.perf_counter() - started)
    return times


def test_a_collector_that_is_down_or_hangs_does_not_slow_responses(fake_openai, start_gateway):
    config = traced_config(fake_openai)
    config["model_list"].append({"model_name": "demo", "litellm_params": {"model": "demo/echo"}})
    plain_config = dict(config, general_settings={"master_key": MASTER})
    # Export every 20 ms, each export waiting up to 3 s for the collector: were any of it on the
    # request path, calls would take seconds.
    export = {**FAST_EXPORT, "OTEL_BSP_SCHEDULE_DELAY": "20", "OTEL_EXPORTER_OTLP_TIMEOUT": "3"}
    with Blackhole() as hole:
        from tests.integration.conftest import free_port
        gateways = {
            "plain": start_gateway(plain_config, args=["--num_workers", "2"]),
            "hanging collector": start_gateway(config, args=["--num_workers", "2"],
                                               env={"OTEL_EXPORTER_OTLP_ENDPOINT": hole.url, **export}),
            "collector down": start_gateway(config, args=["--num_workers", "2"], env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}", **export}),
        }
        for gw in gateways.values():
            timed_calls(gw, 3)  # warm up: connections, the key store, the first batch export
        times = {name: timed_calls(gw) for name, gw in gateways.items()}
    summary = {name: f"median {statistics.median(t) * 1000:.1f} ms, max {max(t) * 1000:.1f} ms"
               for name, t in times.items()}
    for name, samples in times.items():
        assert max(samples) < 1.0, summary
    base = statistics.median(times["plain"])
    for name in ("hanging collector", "collector down"):
        assert statistics.median(times[name]) < base + 0.25, summary
        assert "Traceback" not in gateways[name].log()
