"""Callbacks end to end: a real gunicorn gateway (2 gevent workers) in front of the fake OpenAI upstream,
reporting to fake receivers on loopback: Langfuse's ingestion API, webhooks (one that answers 500
first, one that hangs forever) and a JSONL file.

Calls are checked against what the client saw (request id, usage, x-litellm-response-cost); no
payload may carry any part of a provider key, the master key or a virtual key (nor the key's hash).
"""

import secrets
import statistics
import time
from pathlib import Path

import pytest
import requests

from tests.fakes.callback_server import FakeLangfuse
from tests.fakes.callback_server import FakeWebhook
from tests.fakes.callback_server import event_problem
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import openai_config

pytestmark = pytest.mark.integration

MASTER = "sk-master-" + secrets.token_hex(12)
WORKERS = ["--num_workers", "2"]
WAIT = 15.0  # seconds events may take to arrive (delivered in the background)
SINK_ENV = {"LANGFUSE_PUBLIC_KEY": "", "LANGFUSE_SECRET_KEY": "", "LANGFUSE_HOST": "", "GATEWAY_WEBHOOK_URL": "",
            "GATEWAY_CALLBACK_JSONL": ""}


@pytest.fixture(scope="module")
def fake_openai():
    """The fake OpenAI upstream, with random keys (so a leak of any 8 characters is not a coincidence)."""
    with FakeOpenAI(api_key="sk-prov-" + secrets.token_hex(12), azure_key="az-" + secrets.token_hex(12)) as fake:
        yield fake


@pytest.fixture(scope="module")
def langfuse():
    with FakeLangfuse(public_key="pk-lf-" + secrets.token_hex(6), secret_key="sk-lf-" + secrets.token_hex(12)) as fake:
        yield fake


@pytest.fixture
def receivers(langfuse):
    """A fresh Langfuse log and webhook receivers for one test."""
    langfuse.reset()
    hooks = {"ok": FakeWebhook(), "flaky": FakeWebhook(fail_first=1), "hang": FakeWebhook(hang=True)}
    for hook in hooks.values():
        hook.start()
    yield hooks
    for hook in hooks.values():
        hook.stop()


def sink_settings(langfuse, webhook_url, jsonl_path, **extra):
    return {"langfuse": {"host": langfuse.url, "public_key": langfuse.public_key,
                         "secret_key": langfuse.secret_key},
            "webhook": {"url": webhook_url, "headers": {"X-Source": "gateway-tests"}, **extra},
            "jsonl": {"path": str(jsonl_path)}}


def post(gw, key, path="/v1/chat/completions", **body):
    resp = requests.post(gw.url + path, headers={"Authorization": f"Bearer {key}"}, json=body, timeout=30)
    resp.content  # noqa: B018  (read it all: a stream's usage comes last)
    return resp


def chat(gw, key, text="hello there", model="gpt-3.5-turbo", **body):
    return post(gw, key, model=model, messages=[{"role": "user", "content": text}], **body)


def wait_for(check, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.05)


def jsonl_lines(path):
    import json
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def leaks(blob, secret_values):
    """Every 8-character piece of a secret found in blob."""
    return sorted({s[i:i + 8] for s in secret_values for i in range(len(s) - 7) if s[i:i + 8] in blob})


def test_success_and_failure_calls_reach_their_sinks_with_usage_cost_status_and_no_key(
        start_gateway, fake_openai, langfuse, receivers, tmp_path):
    hook, path = receivers["ok"], tmp_path / "calls.jsonl"
    config = openai_config(fake_openai, master_key=MASTER, success_callback=["langfuse"],
                           failure_callback=["webhook"], callbacks=["jsonl"],
                           callback_settings=sink_settings(langfuse, hook.url + "/calls", path))
    gw = start_gateway(config, args=WORKERS, env=SINK_ENV)
    generated = requests.post(gw.url + "/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                              json={"key_alias": "team-a-key"}, timeout=30).json()
    vkey, vhash = generated["key"], generated["token"]

    ok = [chat(gw, MASTER), chat(gw, vkey, text="second call", max_tokens=20),
          chat(gw, vkey, text="a stream", stream=True, stream_options={"include_usage": True}),
          post(gw, MASTER, path="/v1/embeddings", model="text-embedding-3-small", input="embed me")]
    bad = [chat(gw, vkey, model="fail-400"), chat(gw, MASTER, model="no-such-model")]
    assert [r.status_code for r in ok] == [200] * 4 and [r.status_code for r in bad] == [400, 404]
    ids = {r.headers["x-request-id"]: r for r in ok + bad}

    generations = wait_for(lambda: len(langfuse.of_type("generation-create")) >= 4 and
                           langfuse.of_type("generation-create"), "4 Langfuse generations")
    failures = wait_for(lambda: len(hook.records) >= 2 and hook.records, "2 webhook records")
    lines = wait_for(lambda: len(jsonl_lines(path)) >= 6 and jsonl_lines(path), "6 JSONL lines")
    time.sleep(0.5)  # nothing more may come

    # Langfuse: successes only, one trace and one generation each, checked as Langfuse would
    assert len(langfuse.of_type("generation-create")) == 4 and len(langfuse.of_type("trace-create")) == 4
    assert all(event_problem(e) is None for e in langfuse.events)
    assert not any(r["json"].get("errors") for r in langfuse.requests if isinstance(r["json"], dict))
    by_id = {g["id"]: g for g in generations}
    assert set(by_id) == {r.headers["x-request-id"] for r in ok}
    for resp in ok[:2] + ok[3:]:
        g, usage = by_id[resp.headers["x-request-id"]], resp.json()["usage"]
        assert g["level"] == "DEFAULT" and g["traceId"] == g["id"]
        assert g["usageDetails"]["input"] == usage["prompt_tokens"]
        assert g["usageDetails"]["output"] == usage.get("completion_tokens", 0)
        assert g["costDetails"]["total"] == pytest.approx(float(resp.headers["x-litellm-response-cost"]))
        assert g["costDetails"]["total"] > 0
    stream_usage = [line for line in ok[2].text.splitlines() if '"usage": {' in line or '"usage":{' in line]
    assert stream_usage, ok[2].text
    g = by_id[ok[2].headers["x-request-id"]]
    assert g["model"] == "gpt-3.5-turbo" and g["metadata"]["key_alias"] == "team-a-key"
    assert g["metadata"]["stream"] is True and g["completionStartTime"] >= g["startTime"]
    assert g["output"]["content"].startswith("Hello from fake upstream: a stream")

    # the webhook: failures only, with their status
    assert sorted((f["status"], f["http_status"], f["error_type"]) for f in failures) == [
        ("error", 400, "BadRequestError"), ("error", 404, "NotFoundError")]
    assert {f["request_id"] for f in failures} == {r.headers["x-request-id"] for r in bad}
    assert all(r["headers"]["x-source"] == "gateway-tests" for r in hook.requests)

    # JSONL: every call, one line each
    assert len(lines) == 6 and {line["request_id"] for line in lines} == set(ids)
    for line in lines:
        resp = ids[line["request_id"]]
        assert line["status"] == ("success" if resp.status_code == 200 else "error")
        if resp.status_code == 200 and not line["stream"]:
            assert line["prompt_tokens"] == resp.json()["usage"]["prompt_tokens"]
            assert line["cost"] == pytest.approx(float(resp.headers["x-litellm-response-cost"]))
    assert {line["key_alias"] for line in lines} == {None, "team-a-key"}

    # no key, in any form, in anything a sink received
    blob = path.read_text() + "".join(r["raw"].decode() for r in langfuse.requests + hook.requests)
    assert "second call" in blob  # message text is logged by default
    assert leaks(blob, [MASTER, vkey, fake_openai.api_key, fake_openai.azure_key, vhash]) == []
    assert "key_hash" not in blob


def test_a_sink_answering_500_gets_the_events_on_a_retry(start_gateway, fake_openai, langfuse, receivers,
                                                          tmp_path):
    flaky = receivers["flaky"]
    config = openai_config(fake_openai, callbacks=["webhook"],
                           callback_settings=sink_settings(langfuse, flaky.url, tmp_path / "x.jsonl"))
    gw = start_gateway(config, args=WORKERS, env=SINK_ENV)
    resp = chat(gw, "anything")
    assert resp.status_code == 200
    (record,) = wait_for(lambda: flaky.records, "the retried delivery")
    assert record["request_id"] == resp.headers["x-request-id"] and record["status"] == "success"
    assert flaky.posts == 2 and [r["raw"] for r in flaky.requests][0] == [r["raw"] for r in flaky.requests][1]


def timed_calls(gw, n):
    """Seconds per call, alternating plain and streamed chats."""
    times = []
    for i in range(n):
        started = time.monotonic()
        resp = chat(gw, "anything", stream=bool(i % 2))
        times.append(time.monotonic() - started)
        assert resp.status_code == 200
    return times


def test_a_hanging_sink_does_not_delay_responses(start_gateway, fake_openai, langfuse, receivers, tmp_path):
    hang = receivers["hang"]
    plain = start_gateway(openai_config(fake_openai), args=WORKERS, env=SINK_ENV)
    config = openai_config(fake_openai, callbacks=["webhook", "langfuse"],
                           callback_settings={**sink_settings(langfuse, hang.url, tmp_path / "x.jsonl", timeout=60),
                                              "langfuse": {"host": hang.url, "public_key": "pk-lf-x",
                                                           "secret_key": "sk-lf-y", "timeout": 60}})
    hanging = start_gateway(config, args=WORKERS, env=SINK_ENV)
    timed_calls(plain, 4), timed_calls(hanging, 4)  # warm both up (connections, lazy imports)
    wait_for(lambda: len(hang.requests) >= 2, "the sinks to hang")
    base, slow = timed_calls(plain, 20), timed_calls(hanging, 20)
    assert max(slow) < 1.0, slow
    assert statistics.median(slow) < statistics.median(base) * 3 + 0.05, (base, slow)


def test_message_logging_can_be_turned_off(start_gateway, fake_openai, langfuse, receivers, tmp_path):
    hook, path = receivers["ok"], tmp_path / "calls.jsonl"
    config = openai_config(fake_openai, turn_off_message_logging=True, callbacks=["langfuse", "webhook", "jsonl"],
                           callback_settings=sink_settings(langfuse, hook.url, path))
    gw = start_gateway(config, args=WORKERS, env=SINK_ENV)
    marker = "zebra-" + secrets.token_hex(6)
    resp = chat(gw, "anything", text=f"my secret is {marker}")
    streamed = chat(gw, "anything", text=f"again {marker}", stream=True)
    assert marker in resp.text and marker in streamed.text
    wait_for(lambda: len(jsonl_lines(path)) >= 2 and len(hook.records) >= 2
             and len(langfuse.of_type("generation-create")) >= 2, "every sink to hear of both calls")
    blob = path.read_text() + "".join(r["raw"].decode() for r in langfuse.requests + hook.requests)
    assert marker not in blob and "my secret" not in blob
    (line,) = [line for line in jsonl_lines(path) if line["request_id"] == resp.headers["x-request-id"]]
    assert line["response_text"] is None and "messages" not in line["request"]
    assert line["prompt_tokens"] == resp.json()["usage"]["prompt_tokens"] and line["completion_tokens"] > 0
    assert all("input" not in g and "output" not in g for g in langfuse.of_type("generation-create"))


def test_pending_events_are_flushed_when_the_worker_exits(start_gateway, fake_openai, langfuse, receivers,
                                                          tmp_path):
    flaky = receivers["flaky"]
    flaky.retry_after = 30  # the first delivery waits 30 s for its retry: only the exit flush can send it
    config = openai_config(fake_openai, callbacks=["webhook"],
                           callback_settings=sink_settings(langfuse, flaky.url, tmp_path / "x.jsonl"))
    gw = start_gateway(config, args=WORKERS, env=SINK_ENV)
    resp = chat(gw, "anything")
    wait_for(lambda: flaky.posts >= 1, "the first (failing) delivery")
    time.sleep(0.3)
    assert flaky.records == [] and flaky.posts == 1  # the sender now waits for its retry
    started = time.monotonic()
    gw.stop()
    assert time.monotonic() - started < 5
    assert [r["request_id"] for r in flaky.records] == [resp.headers["x-request-id"]]
    assert "at exit" not in Path(gw.log_path).read_text()  # nothing left undelivered, dropped or failed


@pytest.mark.parametrize("litellm, path", [
    ({"success_callback": ["langfuze"]}, "litellm_settings.success_callback[0]"),
    ({"callbacks": ["otel", "webhook"]}, "litellm_settings.callbacks[1]"),
])
def test_a_typo_of_our_callback_or_a_missing_setting_stops_start_up(start_gateway, fake_openai, litellm, path):
    gw = start_gateway(openai_config(fake_openai, **litellm), env=SINK_ENV, ready=False)
    assert gw.proc.wait(timeout=30) == 2
    assert f"{path}: " in gw.log()


def test_otel_is_an_accepted_callback_name(start_gateway, fake_openai):
    config = openai_config(fake_openai, success_callback=["otel"], failure_callback=["otel"])
    env = {**SINK_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    gw = start_gateway(config, args=WORKERS, env=env)
    assert chat(gw, "anything").status_code == 200
