"""Callbacks (gateway/callbacks.py, gateway/sinks.py): the allowlist and its config errors, what a sink is sent, the
bounded queue, retries, flushing, and delivery to fake Langfuse / webhook receivers on loopback."""

import json
import logging
import os
import threading
import time

import orjson
import pytest

from gateway.telemetry import sinks
from gateway.app import create_app
from gateway.telemetry.callbacks import Callbacks
from gateway.telemetry.callbacks import call_event
from gateway.telemetry.events import CallRecord
from gateway.telemetry.langfuse import ingestion_events
from gateway.config.callbacks import SinkSpec
from gateway.config.callbacks import parse
from gateway.config.settings import ConfigError
from gateway.config.settings import from_dict
from gateway.telemetry.sinks import Delivery
from gateway.telemetry.sinks import GiveUp
from gateway.telemetry.sinks import Retry
from gateway.spend.meter import AddedUsageOption
from tests.fakes.callback_server import FakeLangfuse
from tests.fakes.callback_server import FakeWebhook
from tests.fakes.callback_server import event_problem

MASTER = "sk-master-Q7vW2pX9rT4mZ8kLc3"
ENV = ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_HOST", "GATEWAY_WEBHOOK_URL",
       "GATEWAY_CALLBACK_JSONL")


@pytest.fixture(autouse=True)
def _no_sink_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch):
    monkeypatch.setattr(sinks, "BACKOFF", 0.001)


def config(**litellm):
    return {"model_list": [{"model_name": "m", "litellm_params": {
        "model": "demo/x", "input_cost_per_token": 0.5, "output_cost_per_token": 1.0}}],
        "general_settings": {"master_key": MASTER}, "litellm_settings": litellm}


def record(**kw):
    base = dict(request_id="req_1", endpoint="chat", status="success", stream=False, started=1_800_000_000.0,
                ended=1_800_000_001.5, model_group="gpt", deployment_id="d1", provider="openai",
                model="gpt-4o-mini", api_base="http://up", key_hash="f" * 64, key_alias="team-a", user_id="u1",
                team_id="t1", prompt_tokens=7, completion_tokens=5, cost=0.25,
                attempts=[{"deployment_id": "d1", "provider": "openai", "model": "gpt-4o-mini",
                           "api_base": "http://up", "started": 1_800_000_000.1, "ended": 1_800_000_001.4,
                           "error": None}],
                request={"model": "gpt", "messages": [{"role": "user", "content": "secret plans"}],
                         "temperature": 0.2, "api_key": "sk-client-supplied-000", "aws_secret_access_key": "x",
                         "metadata": {"session_id": "s1", "tags": ["a", 3], "trace_name": "tn"}},
                response_text="the answer")
    base.update(kw)
    return CallRecord(**base)


# -- the allowlist and config errors -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Langfuse", "langfuze", "webhok", "jsonll", "prometeus"])
def test_a_typo_of_a_callback_we_implement_stops_start_up_naming_the_entry(name):
    with pytest.raises(ConfigError) as info:
        from_dict(config(success_callback=[name]))
    message = str(info.value)
    assert message.startswith(f"litellm_settings.success_callback[0]: unknown callback {name!r}; did you mean")
    for allowed in ("jsonl", "langfuse", "otel", "webhook", "prometheus"):
        assert allowed in message


def test_a_callback_name_must_be_text():
    with pytest.raises(ConfigError, match=r"^litellm_settings.success_callback\[0\]: must be a callback name"):
        from_dict(config(success_callback=[3]))


@pytest.mark.parametrize("name, said", [
    ("langsmith", "LiteLLM callback 'langsmith' is not implemented"),
    ("s3", "LiteLLM callback 's3' is not implemented"),
    ("datadog", "LiteLLM callback 'datadog' is not implemented"),
    ("langfuse_otel", "LiteLLM callback 'langfuse_otel' is not implemented"),
    ("custom_callbacks.proxy_handler_instance", "names a Python module; custom callbacks are never imported"),
    ("my_company_audit_logger", "is not a callback this gateway or LiteLLM knows"),
])
def test_other_names_are_logged_once_and_ignored(caplog, tmp_path, name, said):
    caplog.set_level(logging.WARNING, logger="gateway.config.callbacks")
    settings = from_dict(config(success_callback=[name, "jsonl"], failure_callback=[name], callbacks=name,
                                callback_settings={"jsonl": {"path": str(tmp_path / "calls.jsonl")}}))
    assert [s.name for s in settings.litellm.callbacks.sinks] == ["jsonl"]
    assert not settings.litellm.callbacks.prometheus
    assert sum(said in r.getMessage() for r in caplog.records) == 1


def test_prometheus_turns_on_litellm_metric_names_and_is_not_a_sink():
    for key in ("success_callback", "failure_callback", "callbacks"):
        found = parse({key: ["prometheus"]})
        assert found.prometheus and found.sinks == ()
    assert not parse({"callbacks": ["otel"]}).prometheus


def test_every_bad_entry_is_named_with_its_key_and_index():
    with pytest.raises(ConfigError) as info:
        from_dict(config(failure_callback=["otel", "langfuze"], callbacks=["webhok", "s3"]))
    lines = str(info.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["litellm_settings.failure_callback[1]",
                                                      "litellm_settings.callbacks[0]"]


def test_a_callback_key_must_be_a_list_or_a_name():
    with pytest.raises(ConfigError, match=r"^litellm_settings.callbacks: must be a list"):
        from_dict(config(callbacks={"otel": True}))
    assert parse({"callbacks": "otel"}).named("otel")  # LiteLLM's single-name form


@pytest.mark.parametrize("litellm, expected", [
    ({"success_callback": ["langfuse"]},
     r"^litellm_settings.success_callback\[0\]: langfuse needs LANGFUSE_PUBLIC_KEY"),
    ({"success_callback": ["langfuse"], "callback_settings": {"langfuse": {"public_key": "pk-lf-1"}}},
     r"langfuse needs .*SECRET_KEY"),
    ({"callbacks": ["otel", "webhook"]}, r"^litellm_settings.callbacks\[1\]: webhook needs .*webhook.url"),
    ({"failure_callback": ["jsonl"]}, r"^litellm_settings.failure_callback\[0\]: jsonl needs .*jsonl.path"),
    ({"callbacks": ["webhook"], "callback_settings": {"webhook": {"url": "ftp://x"}}},
     r"^litellm_settings.callback_settings.webhook.url: must be an http"),
    ({"callbacks": ["webhook"], "callback_settings": {"webhook": {"url": "http://x", "headers": ["a"]}}},
     r"webhook.headers: must be a mapping"),
    ({"callbacks": ["webhook"], "callback_settings": {"webhook": {"url": "http://x", "retries": 3}}},
     r"^litellm_settings.callback_settings.webhook.retries: unknown setting"),
    ({"callbacks": ["webhook"], "callback_settings": {"webhook": {"url": "http://x", "queue_size": 0}}},
     r"webhook.queue_size: must be a positive whole number"),
    ({"callbacks": ["jsonl"], "callback_settings": {"jsonl": {"path": "/no/such/folder/calls.jsonl"}}},
     r"jsonl.path: folder /no/such/folder does not exist"),
    ({"callbacks": ["otel"], "turn_off_message_logging": "sometimes"},
     r"^litellm_settings.turn_off_message_logging: must be true or false"),
    ({"callbacks": ["otel"], "callback_settings": ["otel"]}, r"callback_settings: must be a mapping"),
])
def test_missing_or_bad_sink_settings_are_config_errors(litellm, expected):
    with pytest.raises(ConfigError, match=expected):
        from_dict(config(**litellm))


def test_sink_settings_come_from_the_environment_too(monkeypatch, tmp_path):
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", "pk-lf-env")
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", "sk-lf-env")
    monkeypatch.setenv("GATEWAY_WEBHOOK_URL", "https://hooks.example/x")
    monkeypatch.setenv("GATEWAY_CALLBACK_JSONL", str(tmp_path / "calls.jsonl"))
    specs = {s.name: s for s in parse({"success_callback": ["langfuse", "jsonl"],
                                       "failure_callback": ["webhook", "jsonl"]}).sinks}
    assert specs["langfuse"].options == {"public_key": "pk-lf-env", "secret_key": "sk-lf-env",
                                         "host": "https://cloud.langfuse.com"}
    assert specs["webhook"].options["url"] == "https://hooks.example/x"
    assert (specs["jsonl"].on_success, specs["jsonl"].on_failure) == (True, True)
    assert (specs["langfuse"].on_success, specs["langfuse"].on_failure) == (True, False)
    assert (specs["webhook"].on_success, specs["webhook"].on_failure) == (False, True)
    monkeypatch.setenv("LANGFUSE_HOST", "cloud.langfuse.com")  # no scheme: refused, never guessed
    with pytest.raises(ConfigError, match="^LANGFUSE_HOST: must be an http"):
        parse({"success_callback": ["langfuse"]})


def test_otel_and_callback_settings_are_accepted_without_warnings(caplog):
    with caplog.at_level(logging.WARNING, logger="gateway.config.settings"):
        settings = from_dict(config(callbacks=["otel"], callback_settings={"otel": {"message_logging": False}}))
    assert "callback_settings" not in caplog.text
    assert parse(settings.litellm_settings).named("otel")


# -- what sinks are sent -------------------------------------------------------------------------------

def test_the_event_has_the_alias_never_the_key_or_its_hash_and_no_upstream_credentials():
    event = call_event(record(), text=True)
    data = orjson.dumps(event)
    assert event["key_alias"] == "team-a" and b"f" * 64 not in data and "key_hash" not in event
    assert "api_key" not in event["request"] and "aws_secret_access_key" not in event["request"]
    assert b"sk-client-supplied" not in data
    usage = (event["prompt_tokens"], event["completion_tokens"], event["total_tokens"], event["cost"])
    assert usage == (7, 5, 12, 0.25)
    assert event["start_time"] == "2027-01-15T08:00:00.000Z" and event["end_time"] == "2027-01-15T08:00:01.500Z"
    assert event["request"]["messages"][0]["content"] == "secret plans"
    assert event["response_text"] == "the answer"
    assert event["metadata"] == {"session_id": "s1", "tags": ["a", 3], "trace_name": "tn"}


def test_without_message_logging_no_text_is_sent():
    rec = record(request={"model": "gpt", "prompt": "secret plans", "input": "secret plans", "max_tokens": 3,
                          "stream_options": AddedUsageOption(include_usage=True)})
    event = call_event(rec, text=False)
    data = orjson.dumps(event) + b"".join(orjson.dumps(e) for e in ingestion_events(event))
    assert b"secret plans" not in data and b"the answer" not in data
    assert event["request"] == {"model": "gpt", "max_tokens": 3}  # the gateway's own stream_options too


def test_langfuse_gets_a_trace_and_a_generation_with_usage_cost_and_times():
    trace, generation = ingestion_events(call_event(record(first_token_seconds=0.25), text=True))
    assert (trace["type"], generation["type"]) == ("trace-create", "generation-create")
    assert event_problem(trace) is None and event_problem(generation) is None
    t, g = trace["body"], generation["body"]
    assert t["id"] == g["traceId"] == "req_1" and g["id"] == "req_1"
    assert t["name"] == "tn" and t["sessionId"] == "s1" and t["tags"] == ["a"] and t["userId"] == "u1"
    assert g["model"] == "gpt-4o-mini" and g["level"] == "DEFAULT" and "statusMessage" not in g
    assert g["usage"] == {"input": 7, "output": 5, "total": 12, "unit": "TOKENS", "totalCost": 0.25}
    assert g["usageDetails"] == {"input": 7, "output": 5, "total": 12} and g["costDetails"] == {"total": 0.25}
    assert (g["startTime"], g["endTime"], g["completionStartTime"]) == (
        "2027-01-15T08:00:00.000Z", "2027-01-15T08:00:01.500Z", "2027-01-15T08:00:00.250Z")
    assert g["modelParameters"] == {"temperature": 0.2}
    assert g["input"] == [{"role": "user", "content": "secret plans"}]
    assert g["output"] == {"role": "assistant", "content": "the answer"}
    assert g["metadata"]["key_alias"] == "team-a" and "key_hash" not in g["metadata"]


@pytest.mark.parametrize("status, message", [("error", "Upstream error from openai: boom"),
                                             ("client_disconnected", None)])
def test_langfuse_marks_failures_as_errors(status, message):
    rec = record(status=status, error_message=message, http_status=500 if message else 200,
                 error_type="UpstreamError" if message else None, prompt_tokens=0, completion_tokens=0, cost=0.0)
    _, generation = ingestion_events(call_event(rec, text=True))
    assert generation["body"]["level"] == "ERROR"
    assert generation["body"]["statusMessage"] == (message or "the client disconnected before the answer ended")


def test_the_trace_id_may_come_from_the_request_metadata():
    rec = record(request={"model": "gpt", "metadata": {"trace_id": "conv-42", "generation_name": "step-1"}})
    trace, generation = ingestion_events(call_event(rec, text=True))
    assert trace["body"]["id"] == generation["body"]["traceId"] == "conv-42"
    assert generation["body"]["id"] == "req_1" and generation["body"]["name"] == "step-1"


def test_known_secrets_are_scrubbed_even_when_json_escaped():
    scrub = sinks.scrubber(["sk-live-abcdef123", 'we"ird\\key-0001', "short", None])
    item = orjson.dumps({"a": "x sk-live-abcdef123 y", "b": 'we"ird\\key-0001', "c": "short"})
    cleaned = scrub(item)
    assert orjson.loads(cleaned) == {"a": "x [redacted] y", "b": "[redacted]", "c": "short"}


# -- routing -------------------------------------------------------------------------------------------

class Collect:
    """A sink stand-in that keeps what it is sent."""

    label = "memory"

    def __init__(self, spec=None):
        self.items, self.calls, self.fail = [], 0, []

    def deliver(self, items, timeout):
        self.calls += 1
        if self.fail:
            raise self.fail.pop(0)
        self.items.extend(items)


def hub(tmp_path, **litellm):
    """Callbacks whose deliveries never start a thread (their queues are read directly)."""
    litellm.setdefault("callback_settings", {"jsonl": {"path": str(tmp_path / "c.jsonl")},
                                             "webhook": {"url": "http://127.0.0.1:9/x"}})
    cb = Callbacks(parse(litellm))
    for delivery in cb.deliveries:
        delivery._pid = os.getpid()
    return cb


def queued(cb, name):
    (delivery,) = [d for d in cb.deliveries if d.name == name]
    return [orjson.loads(item) for item in delivery._queue]


def test_success_and_failure_calls_go_to_the_sinks_named_for_them(tmp_path):
    cb = hub(tmp_path, success_callback=["jsonl"], failure_callback=["webhook"])
    cb.observe(record(request_id="ok"))
    cb.observe(record(request_id="bad", status="error"))
    cb.observe(record(request_id="gone", status="client_disconnected"))
    assert [e["request_id"] for e in queued(cb, "jsonl")] == ["ok"]
    assert [e["request_id"] for e in queued(cb, "webhook")] == ["bad", "gone"]
    cb = hub(tmp_path, callbacks=["jsonl"])
    cb.observe(record(request_id="ok"))
    cb.observe(record(request_id="bad", status="error"))
    assert [e["request_id"] for e in queued(cb, "jsonl")] == ["ok", "bad"]


def test_message_logging_can_be_turned_off_globally_or_per_sink(tmp_path):
    cb = hub(tmp_path, callbacks=["jsonl", "webhook"],
             callback_settings={"jsonl": {"path": str(tmp_path / "c.jsonl"), "message_logging": False},
                                "webhook": {"url": "http://127.0.0.1:9/x"}})
    cb.observe(record())
    assert queued(cb, "jsonl")[0]["response_text"] is None and queued(cb, "webhook")[0]["response_text"]
    assert cb.wants_text
    cb = hub(tmp_path, callbacks=["jsonl"], turn_off_message_logging=True)
    cb.observe(record())
    assert "messages" not in queued(cb, "jsonl")[0]["request"] and not cb.wants_text


# -- the queue and delivery ----------------------------------------------------------------------------

def delivery(sink=None, **spec):
    spec = SinkSpec("webhook", True, True, "test", **spec)
    return Delivery(sink or Collect(), spec)


def test_a_full_queue_drops_the_oldest_events_counts_them_and_logs_once(caplog):
    d = delivery(queue_size=3)
    d._pid = os.getpid()  # no sender: the queue only fills
    with caplog.at_level(logging.WARNING, logger="gateway.telemetry.callbacks"):
        for i in range(6):
            d.put(b"%d" % i)
    assert list(d._queue) == [b"3", b"4", b"5"] and d.dropped == 3 and d.queued == 6
    assert caplog.text.count("queue is full") == 1


def test_the_queue_is_bounded_in_bytes_too():
    d = delivery()
    d._pid = os.getpid()
    d.queue_bytes = 10
    for item in (b"aaaa", b"bbbb", b"cccc"):
        d.put(item)
    assert list(d._queue) == [b"bbbb", b"cccc"] and d.dropped == 1


def test_put_returns_at_once_and_batches_respect_size_and_bytes():
    sink = Collect()
    d = delivery(sink, batch_size=2, batch_bytes=4)
    d._pid = os.getpid()
    for item in (b"aa", b"bb", b"ccc", b"dd", b"toolarge"):
        d.put(item)
    assert d._take() == [b"aa", b"bb"]
    assert d._take() == [b"ccc"]  # b"dd" would pass the byte cap
    assert d._take() == [b"dd"]
    assert d._take() == [b"toolarge"]  # one event over the cap still goes, alone


def test_a_failing_attempt_is_retried_with_backoff_until_it_succeeds():
    sink = Collect()
    sink.fail = [Retry("HTTP 500"), Retry("ConnectionRefusedError")]
    d = delivery(sink, max_attempts=3)
    assert d._send([b"x"]) is True
    assert sink.calls == 3 and sink.items == [b"x"] and d.delivered == 1 and d.failed == 0


def test_a_refused_batch_is_not_retried_and_exhausted_retries_are_logged(caplog):
    sink = Collect()
    sink.fail = [GiveUp("HTTP 400")]
    d = delivery(sink, max_attempts=3)
    with caplog.at_level(logging.WARNING, logger="gateway.telemetry.callbacks"):
        assert d._send([b"x"]) is False
        assert sink.calls == 1 and d.failed == 1
        sink.fail = [Retry("HTTP 503")] * 3
        assert d._send([b"y", b"z"]) is False
    assert sink.calls == 4 and d.failed == 3
    assert "HTTP 400" in caplog.text and "(1 similar failure(s)" not in caplog.text
    assert caplog.text.count("not delivered") == 1  # at most one warning a minute per sink


def test_retry_after_is_honoured_within_the_cap(monkeypatch):
    waits = []
    d = delivery(Collect(), max_attempts=2)
    d.sink.fail = [Retry("HTTP 429", retry_after=0.3)]
    monkeypatch.setattr(d._stop, "wait", lambda seconds: waits.append(seconds) or False)
    assert d._send([b"x"]) is True and waits == [0.3]


def test_the_sender_thread_starts_on_first_use_and_delivers():
    sink = Collect()
    d = delivery(sink)
    assert d._thread is None
    d.put(b"one")
    assert d._thread is not None and d.wait_idle(5) and sink.items == [b"one"]
    d.flush(time.monotonic() + 1)


def test_flush_delivers_what_is_left_within_its_deadline():
    sink = Collect()
    d = delivery(sink, batch_size=2)
    d._pid = os.getpid()
    sinks._LIVE.add(d)
    for i in range(5):
        d.put(b"%d" % i)
    sinks.flush_all(1.0)
    assert sink.items == [b"0", b"1", b"2", b"3", b"4"] and not d._queue


# -- real receivers on loopback ------------------------------------------------------------------------

def http_delivery(kind, options, **spec):
    spec = SinkSpec(kind, True, True, "test", options=options, **spec)
    return Delivery(sinks.SINKS[kind](spec), spec)


def test_webhook_retries_a_500_and_then_delivers_the_batch_as_a_json_array():
    with FakeWebhook(fail_first=1) as hook:
        d = http_delivery("webhook", {"url": hook.url + "/calls?token=t0ken", "headers": {"X-Team": "ml"}})
        d.put(orjson.dumps({"request_id": "a"}))
        assert d.wait_idle(5)
        assert hook.posts == 2 and hook.records == [{"request_id": "a"}] and d.delivered == 1
        assert hook.requests[-1]["headers"]["x-team"] == "ml"
        assert hook.requests[-1]["headers"]["content-type"] == "application/json"
        assert d.sink.label == f"http://127.0.0.1:{hook.port}"  # logs never show the path or query
        d.flush(time.monotonic() + 1)


def test_a_hanging_receiver_never_blocks_put_and_times_out_in_the_sender():
    with FakeWebhook(hang=True) as hook:
        d = http_delivery("webhook", {"url": hook.url, "headers": {}}, timeout=0.3, max_attempts=2)
        started = time.monotonic()
        for i in range(100):
            d.put(b'{"i": %d}' % i)
        assert time.monotonic() - started < 0.1
        assert d.wait_idle(10)
        assert d.delivered == 0 and d.failed == 100
        assert len(hook.requests) == 4  # two batches of 50, two attempts each
        d.flush(time.monotonic() + 0.5)


def test_langfuse_ingestion_is_authenticated_and_accepted():
    with FakeLangfuse() as lf:
        options = {"public_key": lf.public_key, "secret_key": lf.secret_key, "host": lf.url}
        d = http_delivery("langfuse", options)
        item = orjson.dumps(call_event(record(), True))
        d.put(item)
        d.put(orjson.dumps(call_event(record(request_id="req_2", status="error"), True)))
        assert d.wait_idle(5) and d.delivered == 2
        assert len(lf.of_type("trace-create")) == 2 and len(lf.of_type("generation-create")) == 2
        assert [g["level"] for g in lf.of_type("generation-create")] == ["DEFAULT", "ERROR"]
        bad = http_delivery("langfuse", {**options, "secret_key": "sk-lf-wrong"})
        before = len(lf.requests)
        bad.put(item)
        assert bad.wait_idle(5) and bad.failed == 1 and len(lf.requests) == before + 1  # 401: not retried
        d.flush(time.monotonic() + 1)
        bad.flush(time.monotonic() + 1)


def test_langfuse_rejections_in_a_207_are_logged_once(caplog):
    with FakeLangfuse() as lf:
        d = http_delivery("langfuse", {"public_key": lf.public_key, "secret_key": lf.secret_key, "host": lf.url})
        d.sink._events = lambda event: [{"id": "e1", "type": "nonsense", "timestamp": "x", "body": {}}]
        item = orjson.dumps(call_event(record(), True))
        with caplog.at_level(logging.WARNING, logger="gateway.telemetry.callbacks"):
            d.sink.deliver([item], 2)
            d.sink.deliver([item], 2)
        assert caplog.text.count("rejected") == 1 and "unknown event type" in caplog.text


def test_jsonl_lines_from_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / "calls.jsonl"
    spec = SinkSpec("jsonl", True, True, "test", options={"path": str(path)})
    writers = [sinks.JsonlSink(spec) for _ in range(4)]
    line = orjson.dumps({"pad": "x" * 5000})

    def write(sink):
        for _ in range(50):
            sink.deliver([line, line], 5)
    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 400 and set(lines) == {line}
    assert oct(path.stat().st_mode & 0o777) == "0o600"


# -- wiring into the app -------------------------------------------------------------------------------

def chat(app, **body):
    resp = app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                                  json={"model": "m", "messages": [{"role": "user", "content": "hello there"}],
                                        **body})
    resp.get_data()
    resp.close()
    return resp


def test_create_app_wires_the_sinks_and_keeps_text_only_when_logged(tmp_path):
    path = tmp_path / "calls.jsonl"
    app = create_app(from_dict(config(callbacks=["jsonl"], callback_settings={"jsonl": {"path": str(path)}})))
    gateway, cb = app.extensions["gateway"], app.extensions["gateway_callbacks"]
    assert cb.observe in gateway.observers.calls and gateway.spend.keep_text is True
    resp = chat(app, api_key=MASTER)
    chat(app, model="nope")
    assert cb.wait_idle(5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["status"], e["http_status"]) for e in lines] == [("success", 200), ("error", 404)]
    assert lines[0]["request_id"] == resp.headers["x-request-id"]
    assert lines[0]["cost"] == pytest.approx(float(resp.headers["x-litellm-response-cost"]))
    assert lines[0]["response_text"].endswith("hello there")
    text = path.read_text()
    assert [MASTER[i:i + 8] for i in range(len(MASTER) - 7) if MASTER[i:i + 8] in text] == []
    cb.close()

    quiet = create_app(from_dict(config(callbacks=["jsonl"], turn_off_message_logging=True,
                                        callback_settings={"jsonl": {"path": str(tmp_path / "q.jsonl")}})))
    assert quiet.extensions["gateway"].spend.keep_text is False
    quiet.extensions["gateway_callbacks"].close()


def test_no_callbacks_means_no_observer_and_no_extension():
    app = create_app(from_dict(config()))
    assert "gateway_callbacks" not in app.extensions
