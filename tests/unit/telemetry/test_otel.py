"""Tracing (gateway/telemetry/otel.py): settings, span attributes, and the spans an app exports."""

import logging
import sys

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode

from gateway.config import sections
from gateway.telemetry import otel
from gateway.app import create_app
from gateway.telemetry.events import CallRecord
from gateway.config.settings import from_dict

MASTER = "sk-master-otel-unit-0123456789"


# -- settings --------------------------------------------------------------------------------------

class _Settings:
    """The two typed sections tracing reads, built by the loader's section builders (a langfuse sink
    named here needs keys to pass its checks: placeholders, nothing is sent)."""

    def __init__(self, general=None, litellm=None):
        self.general = sections.general_section(general or {})
        self.litellm = sections.litellm_section(litellm or {}, environ={"LANGFUSE_PUBLIC_KEY": "pk-lf-test",
                                                                       "LANGFUSE_SECRET_KEY": "sk-lf-test"})


@pytest.mark.parametrize("general, litellm, on", [
    ({}, {}, False),
    ({"otel": True}, {}, True),
    ({"otel": "true"}, {}, True),
    ({"otel": False}, {"callbacks": ["langfuse"]}, False),
    ({}, {"callbacks": ["langfuse", "otel"]}, True),
    ({}, {"callbacks": "langfuse, otel"}, True),
    ({}, {"success_callback": ["langfuse"]}, False),
])
def test_wanted(general, litellm, on):
    assert otel.wanted(_Settings(general, litellm)) is on


def test_message_logging_follows_litellm():
    assert otel.logs_messages(_Settings()) is True
    assert otel.logs_messages(_Settings(litellm={"turn_off_message_logging": True})) is False
    assert otel.logs_messages(_Settings(litellm={"turn_off_message_logging": False})) is True


@pytest.mark.parametrize("env, expected", [
    ({}, ("http/protobuf", "http://localhost:4318/v1/traces")),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, ("http/protobuf", "http://collector:4318/v1/traces")),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c.example/otlp"}, ("http/protobuf", "https://c.example/otlp/v1/traces")),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:1/custom", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:2"},
     ("http/protobuf", "http://c:1/custom")),
    ({"OTEL_ENDPOINT": "http://c:4318"}, ("http/protobuf", "http://c:4318/v1/traces")),
    ({"OTEL_ENDPOINT": "http://c:4318/v1/traces"}, ("http/protobuf", "http://c:4318/v1/traces")),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_ENDPOINT": "http://b:2"}, ("http/protobuf", "http://a:1/v1/traces")),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("grpc", "http://localhost:4317")),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, ("grpc", "http://c:4317")),
    ({"OTEL_EXPORTER": "otlp_grpc", "OTEL_ENDPOINT": "http://c:4317"}, ("grpc", "http://c:4317")),
    ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     ("http/protobuf", "http://localhost:4318/v1/traces")),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "console"}, ("console", None)),
])
def test_exporter_settings(env, expected):
    protocol, endpoint, _ = otel.exporter_settings(env)
    assert (protocol, endpoint) == expected


def test_exporter_headers_are_url_decoded_and_litellm_names_work():
    _, _, headers = otel.exporter_settings({"OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%3Db%20c, x-team = ml ,broken"})
    assert headers == {"api-key": "a=b c", "x-team": "ml"}
    assert otel.exporter_settings({"OTEL_HEADERS": "k=v"})[2] == {"k": "v"}


def test_an_unknown_protocol_is_refused_by_name():
    with pytest.raises(otel.TracingUnavailable, match="http/json"):
        otel.exporter_settings({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_query_strings_lose_their_secrets():
    assert otel.scrub_url("/key/info?key=sk-abc123") == "/key/info?key=REDACTED"
    assert otel.scrub_url("/v1/chat/completions?api-version=2024-02-01") == "/v1/chat/completions?api-version=2024-02-01"
    assert otel.scrub_url("/x?user=sk-live-secret&n=1&access_token=t") == "/x?user=REDACTED&n=1&access_token=REDACTED"
    assert otel.scrub_url("/keys/sk-abcdef/info") == "/keys/REDACTED/info"
    assert otel.scrub_url("/plain") == "/plain"


# -- attributes -------------------------------------------------------------------------------------

def _attempt(**over):
    base = {"deployment_id": "dep1", "group": "gpt-4o", "provider": "openai", "model": "gpt-4o-2024",
            "api_base": "https://api.example.com:8443/v1", "started": 100.0, "ended": 100.5, "error": None}
    return {**base, **over}


def _record(**over):
    base = dict(request_id="req_1", endpoint="chat", status="success", stream=False, started=99.9, ended=101.0,
                model_group="gpt-4o", deployment_id="dep2", provider="openai", model="gpt-4o-2024",
                key_hash="f" * 64, key_alias="team-a", prompt_tokens=12, completion_tokens=7, cost=0.25,
                retries=1, attempts=[_attempt(error="UpstreamError", ended=100.2),
                                     _attempt(deployment_id="dep2", started=100.3, ended=101.0)],
                request={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi there"}],
                         "max_tokens": 64, "temperature": 0.2, "top_p": 1, "api_key": "sk-client-supplied"},
                response_text="hello back")
    base.update(over)
    return CallRecord(**base)


def test_one_span_per_attempt_with_usage_and_cost_on_the_last():
    first, last = otel.span_plans(_record(), log_messages=True)
    assert first["name"] == last["name"] == "chat gpt-4o"
    assert (first["start"], first["end"], last["start"], last["end"]) == (100.0, 100.2, 100.3, 101.0)
    a, b = first["attributes"], last["attributes"]
    for attrs in (a, b):
        assert attrs["gen_ai.system"] == "openai" and attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == "gpt-4o"
        assert (attrs["server.address"], attrs["server.port"]) == ("api.example.com", 8443)
        assert (attrs["gen_ai.request.max_tokens"], attrs["gen_ai.request.temperature"],
                attrs["gen_ai.request.top_p"]) == (64, 0.2, 1)
        assert (attrs["gateway.request_id"], attrs["gateway.retries"], attrs["gateway.fallbacks"]) == ("req_1", 1, 0)
        assert attrs["gateway.key_alias"] == "team-a" and attrs["gateway.cache_hit"] is False
    assert first["error"] == a["error.type"] == "UpstreamError"
    assert "gen_ai.usage.input_tokens" not in a and "gateway.cost_usd" not in a and "gen_ai.prompt" not in a
    assert last["error"] is None and "error.type" not in b
    assert (b["gen_ai.usage.input_tokens"], b["gen_ai.usage.output_tokens"], b["gateway.cost_usd"]) == (12, 7, 0.25)
    assert b["gen_ai.response.model"] == "gpt-4o-2024" and (a["gateway.attempt"], b["gateway.attempt"]) == (1, 2)
    assert "hi there" in b["gen_ai.prompt"] and b["gen_ai.completion"] == "hello back"
    everything = repr([first, last])
    assert "f" * 64 not in everything and "sk-client-supplied" not in everything  # never a key or its hash


def test_message_text_only_with_message_logging():
    (_, last) = otel.span_plans(_record(), log_messages=False)
    assert "gen_ai.prompt" not in last["attributes"] and "gen_ai.completion" not in last["attributes"]


def test_a_failed_call_marks_its_last_attempt_with_the_call_error():
    record = _record(status="error", error_type="UpstreamError", error_message="Upstream error from openai: boom",
                     cost=0.0, attempts=[_attempt(error="UpstreamError")], response_text=None)
    (plan,) = otel.span_plans(record, log_messages=True)
    assert plan["error"] == "UpstreamError" and plan["description"] == "Upstream error from openai: boom"
    attrs = plan["attributes"]
    assert attrs["gateway.status"] == "error" and attrs["gateway.cost_usd"] == 0.0
    assert "gen_ai.usage.input_tokens" not in attrs and "gen_ai.response.model" not in attrs
    assert "hi there" in attrs["gen_ai.prompt"]  # what was asked, for debugging


def test_a_stream_that_fails_midway_is_an_error_with_its_billed_usage():
    record = _record(stream=True, status="error", error_type="UpstreamError", attempts=[_attempt()],
                     first_token_seconds=0.05)
    (plan,) = otel.span_plans(record, log_messages=False)
    attrs = plan["attributes"]
    assert plan["error"] == attrs["error.type"] == "UpstreamError"
    assert attrs["gen_ai.usage.output_tokens"] == 7 and attrs["gateway.time_to_first_token_s"] == 0.05


def test_embeddings_and_completions_operations():
    embed = _record(endpoint="embeddings", completion_tokens=0, attempts=[_attempt()],
                    request={"model": "e", "input": ["a", "b"]}, response_text=None)
    (plan,) = otel.span_plans(embed, log_messages=True)
    assert plan["name"] == "embeddings gpt-4o"
    assert "gen_ai.usage.output_tokens" not in plan["attributes"]
    assert plan["attributes"]["gen_ai.prompt"] == '["a","b"]'
    completion = _record(endpoint="completions", attempts=[_attempt()], request={"prompt": "once upon"})
    (plan,) = otel.span_plans(completion, log_messages=True)
    assert plan["attributes"]["gen_ai.operation.name"] == "text_completion"
    assert plan["attributes"]["gen_ai.prompt"] == "once upon"


def test_a_call_without_attempts_has_no_span_unless_answered_from_the_cache():
    assert otel.span_plans(_record(status="error", attempts=[]), log_messages=True) == []
    (plan,) = otel.span_plans(_record(attempts=[], cache_hit=True, cost=0.0), log_messages=True)
    assert plan["attributes"]["gateway.cache_hit"] is True and plan["error"] is None


# -- the app -----------------------------------------------------------------------------------------

def _app(master=None, **litellm):
    config = {"model_list": [{"model_name": "m", "litellm_params": {
        "model": "demo/x", "input_cost_per_token": 0.5, "output_cost_per_token": 1.0}}],
        "litellm_settings": litellm}
    if master:
        config["general_settings"] = {"master_key": master, "disable_spend_logs": True}
    return create_app(from_dict(config))


def _post(app, headers=None, **body):
    resp = app.test_client().post("/v1/chat/completions", headers=headers or {},
                                  json={"model": "m", "messages": [{"role": "user", "content": "hello there"}], **body})
    resp.get_data()
    resp.close()
    return resp


def test_install_traces_requests_and_attempts_and_is_idempotent():
    app = _app()
    exporter = InMemorySpanExporter()
    tracing = otel.install(app, exporter=exporter)
    assert otel.install(app) is tracing and otel.install(app, app.extensions["gateway"]) is tracing
    assert app.extensions["gateway"].observers.calls.count(tracing.observe) == 1
    assert app.extensions["gateway"].spend.keep_text is True
    resp = _post(app, max_tokens=3)
    streamed = _post(app, stream=True)
    tracing.provider.force_flush()
    spans = exporter.get_finished_spans()
    for answer in (resp, streamed):
        request_id = answer.headers["x-request-id"]
        (server,) = [s for s in spans if s.kind == SpanKind.SERVER and s.attributes.get("gateway.request_id") == request_id]
        (child,) = [s for s in spans if s.kind == SpanKind.CLIENT and s.attributes["gateway.request_id"] == request_id]
        assert child.parent.span_id == server.context.span_id
        assert child.context.trace_id == server.context.trace_id
        assert child.attributes["gen_ai.system"] == "demo" and child.attributes["gen_ai.completion"]
        assert child.status.status_code == StatusCode.UNSET
    assert float(resp.headers["x-litellm-response-cost"]) == [
        s for s in spans if s.kind == SpanKind.CLIENT][0].attributes["gateway.cost_usd"]


def test_refused_calls_get_their_request_span_and_probes_none():
    app = _app(master=MASTER)
    exporter = InMemorySpanExporter()
    tracing = otel.install(app, exporter=exporter)
    resp = _post(app, headers={"Authorization": "Bearer sk-wrong-key-000000"})
    assert resp.status_code == 401
    assert app.test_client().get("/health/liveliness").status_code == 200
    tracing.provider.force_flush()
    (span,) = exporter.get_finished_spans()
    assert span.attributes["http.status_code"] == 401
    assert span.attributes["gateway.request_id"] == resp.headers["x-request-id"]


def test_turn_off_message_logging_keeps_text_out():
    app = _app(turn_off_message_logging=True)
    exporter = InMemorySpanExporter()
    tracing = otel.install(app, exporter=exporter)
    assert app.extensions["gateway"].spend.keep_text is False
    _post(app)
    tracing.provider.force_flush()
    assert "hello there" not in repr([dict(s.attributes) for s in exporter.get_finished_spans()])


def test_config_turns_tracing_on_in_create_app(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    app = create_app(from_dict({"model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x"}}],
                                "general_settings": {"otel": True}}))
    tracing = app.extensions[otel.EXTENSION]
    assert tracing.description == "http://127.0.0.1:9/v1/traces (http/protobuf)"
    tracing.provider.shutdown()


def test_grpc_without_its_package_says_so_and_serves_on(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    app = _app()
    with caplog.at_level(logging.ERROR, logger="gateway.telemetry.otel"):
        assert otel.install(app) is None
    assert "opentelemetry-exporter-otlp-proto-grpc" in caplog.text and "OFF" in caplog.text
    assert otel.install(app) is None  # said once
    assert not app.extensions["gateway"].observers.calls or all(
        getattr(fn, "__self__", None) is None or not isinstance(fn.__self__, otel.Tracing)
        for fn in app.extensions["gateway"].observers.calls)
    assert _post(app).status_code == 200
