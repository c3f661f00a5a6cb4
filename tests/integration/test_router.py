"""The router over real gunicorn: retries, timeouts, fallbacks, cooldowns, streams and /health.

Every deployment points at the fake OpenAI upstream, whose model names fail on demand
(flaky-N, ratelimit-N, hang, reset, stall-stream, fail-*, context-length). The openai SDK runs
with max_retries=0 so every retry seen here is the gateway's own.
"""

import json
import time

import openai
import pytest
import requests
import yaml

from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port
from tests.integration.test_cli_and_deploy import run_cli

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello there"}]
MASTER = "sk-master-router-0123456789"
CONTROL_KEYS = ("fallbacks", "context_window_fallbacks", "num_retries", "request_timeout")


def dep(fake, name, model, model_id=None, model_info=None, **params):
    """One model_list entry on the fake upstream."""
    entry = {"model_name": name, "litellm_params": {"model": f"openai/{model}", "api_base": fake.url + "/v1",
                                                    "api_key": fake.api_key, **params}}
    info = dict(model_info or {})
    if model_id:
        info["id"] = model_id
    if info:
        entry["model_info"] = info
    return entry


def start_module_gateway(tmp_path_factory, config, args=()):
    tmp = tmp_path_factory.mktemp("gw-router")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    gw = GatewayProcess(["--config", str(path), *args], {}, tmp / "gw.log", free_port())
    gw.config_path = path
    return gw


@pytest.fixture(scope="module")
def gateway(fake_openai, tmp_path_factory):
    """Retries from config (2, at most 3), no cooldowns in the way (allowed_fails high)."""
    f = fake_openai
    config = {
        "model_list": [
            dep(f, "gpt-3.5-turbo", "gpt-3.5-turbo"),
            dep(f, "flaky", "flaky-2"),
            dep(f, "flaky-3", "flaky-3"),
            dep(f, "flaky-9", "flaky-9"),
            dep(f, "flaky-1", "flaky-1"),
            dep(f, "fail-400", "fail-400"),
            dep(f, "ratelimited", "ratelimit-1"),
            dep(f, "hang", "hang"),
            dep(f, "reset", "reset"),
            # a group whose first choice (order 1) always fails
            dep(f, "mixed", "fail-500", "mixed-bad", order=1),
            dep(f, "mixed", "gpt-3.5-turbo", "mixed-good", order=2),
            dep(f, "primary", "fail-500", "primary-1"),
            dep(f, "backup", "gpt-3.5-turbo", "backup-1"),
            dep(f, "zephyr-beta", "fail-503", "zephyr-1"),
            dep(f, "small-ctx", "context-length", "small-1"),
            dep(f, "tiny", "tiny-model", "tiny-1", model_info={"max_input_tokens": 20}),
            dep(f, "tiny-alone", "tiny-model", "tiny-2", model_info={"max_input_tokens": 20}),
            dep(f, "big-ctx", "gpt-3.5-turbo", "big-1"),
            dep(f, "stall", "stall-stream", "stall-1", stream_timeout=1),
            dep(f, "sfail", "fail-500", "sfail-bad", order=1),
            dep(f, "sfail", "gpt-3.5-turbo", "sfail-good", order=2),
            dep(f, "hang-stream", "hang", "hang-stream-1", stream_timeout=5),
            dep(f, "tiny-rpm", "tiny-model", "tiny-rpm-1", model_info={"max_input_tokens": 20}, rpm=2),
            # one deployment of the group is too small for a long prompt, the other is not
            dep(f, "ctx-mixed", "tiny-model", "ctxm-small", model_info={"max_input_tokens": 20}, order=1),
            dep(f, "ctx-mixed", "gpt-3.5-turbo", "ctxm-big", order=2),
        ],
        "router_settings": {
            "num_retries": 2, "max_retries": 3, "allowed_fails": 1000,
            "fallbacks": [{"primary": ["backup"]}],
            "context_window_fallbacks": [{"small-ctx": ["big-ctx"]}, {"tiny": ["big-ctx"]}],
        },
    }
    gw = start_module_gateway(tmp_path_factory, config).wait_ready()
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url, api_key="anything", max_retries=0, timeout=30)


def chat(client, model, **kw):
    """(response headers, parsed completion)."""
    raw = client.chat.completions.with_raw_response.create(model=model, messages=kw.pop("messages", HELLO), **kw)
    return raw.headers, raw.parse()


def upstream_bodies(fake):
    return [r["json"] for r in fake.requests if r["path"].endswith("/chat/completions")]


# ---- retries --------------------------------------------------------------------

def test_num_retries_from_config(client, fake_openai):
    headers, resp = chat(client, "flaky")
    assert resp.choices[0].message.content == "Hello from fake upstream: hello there"
    assert fake_openai.count("flaky-2") == 3
    assert headers["x-litellm-attempted-retries"] == "2"
    assert headers["x-litellm-attempted-fallbacks"] == "0"


def test_num_retries_from_request_body(client, fake_openai):
    headers, resp = chat(client, "flaky-3", extra_body={"num_retries": 3})
    assert resp.choices
    assert fake_openai.count("flaky-3") == 4
    assert headers["x-litellm-attempted-retries"] == "3"
    # and lower than the config's: no retry at all
    with pytest.raises(openai.InternalServerError) as err:
        chat(client, "flaky-1", extra_body={"num_retries": 0})
    assert err.value.status_code == 500
    assert fake_openai.count("flaky-1") == 1
    assert all(k not in body for body in upstream_bodies(fake_openai) for k in CONTROL_KEYS)


def test_num_retries_from_body_is_bounded_by_max_retries(client, fake_openai):
    with pytest.raises(openai.InternalServerError):
        chat(client, "flaky-9", extra_body={"num_retries": 50})
    assert fake_openai.count("flaky-9") == 4  # 1 + max_retries (3)


def test_bad_num_retries_is_400(client, fake_openai):
    for value in (-1, "two", 1.5, True):
        with pytest.raises(openai.BadRequestError) as err:
            chat(client, "gpt-3.5-turbo", extra_body={"num_retries": value})
        assert err.value.param == "num_retries"
    assert fake_openai.count("gpt-3.5-turbo") == 0


def test_no_retry_on_400(client, fake_openai):
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, "fail-400")
    assert err.value.param == "temperature"
    assert fake_openai.count("fail-400") == 1


def test_retry_on_429_honours_retry_after(client, fake_openai):
    started = time.monotonic()
    headers, resp = chat(client, "ratelimited")
    elapsed = time.monotonic() - started
    assert resp.choices
    assert fake_openai.count("ratelimit-1") == 2
    assert headers["x-litellm-attempted-retries"] == "1"
    assert elapsed >= 1.0, "the upstream's Retry-After: 1 was not waited out"
    assert elapsed < 8


def test_retries_go_to_the_other_deployment(client, fake_openai):
    for _ in range(3):
        headers, resp = chat(client, "mixed")
        assert resp.choices
        assert headers["x-litellm-model-id"] == "mixed-good"
        assert headers["x-litellm-attempted-retries"] == "1"
    assert fake_openai.count("fail-500") == 3
    assert fake_openai.count("gpt-3.5-turbo") == 3


def test_headers_name_deployment_and_api_base_never_a_key(client, fake_openai):
    headers, _ = chat(client, "backup")
    assert headers["x-litellm-model-id"] == "backup-1"
    assert headers["x-litellm-model-api-base"] == fake_openai.url + "/v1"
    assert headers["x-litellm-model-group"] == "backup"
    assert float(headers["x-litellm-overhead-duration-ms"]) >= 0
    assert fake_openai.api_key not in str(dict(headers))


# ---- timeouts and broken connections -------------------------------------------------

def test_hang_times_out_with_504_within_the_request_timeout(client, fake_openai):
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        chat(client, "hang", extra_body={"request_timeout": 1})
    elapsed = time.monotonic() - started
    assert err.value.status_code == 504
    assert err.value.body["code"] == "upstream_timeout"
    # num_retries is 2, but retries live inside the whole call's deadline
    assert elapsed < 4, elapsed
    assert 1 <= fake_openai.count("hang") <= 2


def test_hang_retries_bounded_by_deadline(client, fake_openai):
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        chat(client, "hang", extra_body={"request_timeout": 2, "num_retries": 3})
    elapsed = time.monotonic() - started
    assert err.value.status_code == 504
    assert elapsed < 5, elapsed


def test_stream_first_byte_bounded_by_request_timeout(client, fake_openai):
    """A stream that never starts is bounded by the call's request_timeout, not only by the
    deployment's (longer) between-chunks stream_timeout."""
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="hang-stream", messages=HELLO, stream=True,
                                       extra_body={"request_timeout": 1, "num_retries": 0})
    elapsed = time.monotonic() - started
    assert err.value.status_code == 504
    assert elapsed < 4, f"request_timeout 1 s, but the call took {elapsed:.1f} s (stream_timeout 5 s won)"


def test_reset_connection_is_502_and_retried(client, fake_openai):
    with pytest.raises(openai.InternalServerError) as err:
        chat(client, "reset", extra_body={"num_retries": 0})
    assert err.value.status_code == 502
    assert err.value.body["code"] == "upstream_connection_error"
    assert fake_openai.count("reset") == 1
    fake_openai.reset()
    with pytest.raises(openai.InternalServerError) as err:
        chat(client, "reset")  # num_retries 2 from config
    assert err.value.status_code == 502
    assert fake_openai.count("reset") == 3


# ---- fallbacks ------------------------------------------------------------------------

def test_fallbacks_from_config(client, fake_openai):
    headers, resp = chat(client, "primary")
    assert resp.choices[0].message.content.startswith("Hello from fake upstream")
    assert headers["x-litellm-attempted-fallbacks"] == "1"
    assert headers["x-litellm-model-id"] == "backup-1"
    assert fake_openai.count("fail-500") == 3  # retries first, then the fallback
    assert fake_openai.count("gpt-3.5-turbo") == 1


def test_per_request_fallbacks_as_in_the_litellm_docs(gateway, fake_openai):
    """The LiteLLM proxy docs' curl example, body for body."""
    body = {
        "model": "zephyr-beta",
        "messages": [{"role": "user", "content": "what llm are you"}],
        "fallbacks": [{"zephyr-beta": ["gpt-3.5-turbo"]}],
        "context_window_fallbacks": [{"zephyr-beta": ["gpt-3.5-turbo"]}],
        "num_retries": 2,
        "request_timeout": 10,
    }
    resp = requests.post(gateway.url + "/chat/completions", data=json.dumps(body),
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "Hello from fake upstream: what llm are you"
    assert resp.headers["x-litellm-attempted-fallbacks"] == "1"
    assert resp.headers["x-litellm-attempted-retries"] == "2"
    assert fake_openai.count("fail-503") == 3 and fake_openai.count("gpt-3.5-turbo") == 1
    # the gateway's own controls never reach an upstream
    assert all(k not in b for b in upstream_bodies(fake_openai) for k in CONTROL_KEYS)


def test_per_request_fallbacks_plain_list(client, fake_openai):
    headers, resp = chat(client, "zephyr-beta", extra_body={"fallbacks": ["backup"], "num_retries": 0})
    assert resp.choices
    assert headers["x-litellm-attempted-fallbacks"] == "1"
    assert headers["x-litellm-model-id"] == "backup-1"
    assert fake_openai.count("fail-503") == 1


def test_no_fallback_without_one_configured(client, fake_openai):
    with pytest.raises(openai.InternalServerError) as err:
        chat(client, "zephyr-beta", extra_body={"num_retries": 0})
    assert err.value.status_code == 503
    assert fake_openai.count("gpt-3.5-turbo") == 0


def test_context_window_fallback_on_upstream_error(client, fake_openai):
    headers, resp = chat(client, "small-ctx")
    assert resp.choices
    assert headers["x-litellm-attempted-fallbacks"] == "1"
    assert headers["x-litellm-model-id"] == "big-1"
    assert fake_openai.count("context-length") == 1  # a 400 is never retried


def test_context_window_fallback_before_calling(client, fake_openai):
    small = [{"role": "user", "content": "short prompt"}]
    headers, _ = chat(client, "tiny", messages=small)
    assert headers["x-litellm-model-id"] == "tiny-1"
    assert fake_openai.count("tiny-model") == 1
    fake_openai.reset()
    big = [{"role": "user", "content": "word " * 100}]  # ~125 tokens > max_input_tokens 20
    headers, resp = chat(client, "tiny", messages=big)
    assert resp.choices
    assert headers["x-litellm-attempted-fallbacks"] == "1"
    assert headers["x-litellm-model-id"] == "big-1"
    assert fake_openai.count("tiny-model") == 0, "the small model must not be called at all"
    assert fake_openai.count("gpt-3.5-turbo") == 1


def test_prompt_refused_before_calling_does_not_use_up_rpm(client, fake_openai):
    """tiny-rpm has rpm 2: two prompts refused locally (too long) are not calls against its limit."""
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            chat(client, "tiny-rpm", messages=[{"role": "user", "content": "word " * 100}])
    assert fake_openai.count("tiny-model") == 0
    headers, _ = chat(client, "tiny-rpm", messages=[{"role": "user", "content": "short"}])
    assert headers["x-litellm-model-id"] == "tiny-rpm-1"
    assert fake_openai.count("tiny-model") == 1


def test_long_prompt_goes_to_the_group_deployment_that_fits(client, fake_openai):
    """A group with a small-context and a large-context deployment serves a long prompt from the
    large one instead of refusing it because the small one was picked first."""
    headers, resp = chat(client, "ctx-mixed", messages=[{"role": "user", "content": "word " * 100}])
    assert resp.choices
    assert headers["x-litellm-model-id"] == "ctxm-big"
    assert fake_openai.count("tiny-model") == 0


def test_timeout_in_body_is_a_control_not_forwarded(client, fake_openai):
    """`timeout` in the body is read by the router (like request_timeout): it must not reach the
    upstream, which (OpenAI) rejects unknown arguments."""
    chat(client, "gpt-3.5-turbo", extra_body={"timeout": 20})
    [sent] = upstream_bodies(fake_openai)
    assert "timeout" not in sent, sent


def test_prompt_too_big_without_fallback_is_400_without_a_call(client, fake_openai):
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, "tiny-alone", messages=[{"role": "user", "content": "word " * 100}])
    assert err.value.code == "context_length_exceeded"
    assert fake_openai.count("tiny-model") == 0


# ---- streams --------------------------------------------------------------------------

def sse_events(resp):
    """The data of each SSE event of a streamed response, as parsed JSON (or the raw [DONE])."""
    out = []
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            data = line[len(b"data: "):]
            out.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return out


def test_stalled_stream_ends_with_error_event_and_no_retry(gateway, fake_openai):
    started = time.monotonic()
    with requests.post(gateway.url + "/chat/completions", stream=True, timeout=30,
                       json={"model": "stall", "messages": HELLO, "stream": True}) as resp:
        assert resp.status_code == 200
        events = sse_events(resp)
    elapsed = time.monotonic() - started
    contents = [e["choices"][0]["delta"].get("content") for e in events[:-1]]
    assert contents == ["", "Hello ", "from "], events
    assert "error" in events[-1], events
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert "[DONE]" not in events
    assert elapsed < 6, elapsed  # stream_timeout 1, not the fake's 10 s stall
    assert fake_openai.count("stall-stream") == 1, "no retry once bytes reached the client"


def test_stalled_stream_through_the_sdk(client):
    got = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="stall", messages=HELLO, stream=True):
            got.append(chunk.choices[0].delta.content)
    assert got == ["", "Hello ", "from "]


def test_stream_failing_before_first_chunk_is_retried(client, fake_openai):
    raw = client.chat.completions.with_raw_response.create(model="sfail", messages=HELLO, stream=True,
                                                           extra_body={"num_retries": 1})
    assert raw.headers["x-litellm-model-id"] == "sfail-good"
    assert raw.headers["x-litellm-attempted-retries"] == "1"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "Hello from fake upstream: hello there"
    assert fake_openai.count("fail-500") == 1


# ---- cooldowns ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cooldown_gateway(fake_openai, tmp_path_factory):
    f = fake_openai
    config = {
        "model_list": [
            dep(f, "cool", "fail-500", "cool-bad", order=1),
            dep(f, "cool", "gpt-3.5-turbo", "cool-good", order=2),
            dep(f, "all-limited", "fail-429", "limited-1"),
            dep(f, "all-limited", "fail-429", "limited-2"),
        ],
        "router_settings": {"num_retries": 1, "cooldown_time": 3, "allowed_fails": 0},
    }
    gw = start_module_gateway(tmp_path_factory, config).wait_ready()
    yield gw
    gw.stop()


def test_failing_deployment_cools_down_then_is_tried_again(cooldown_gateway, fake_openai):
    c = openai.OpenAI(base_url=cooldown_gateway.url, api_key="x", max_retries=0, timeout=30)
    headers, _ = chat(c, "cool")
    assert headers["x-litellm-model-id"] == "cool-good"
    assert headers["x-litellm-attempted-retries"] == "1"
    assert fake_openai.count("fail-500") == 1
    cooled_at = time.monotonic()
    for _ in range(5):  # order 1 fails first, but it is cooling down now: straight to the other one
        headers, _ = chat(c, "cool")
        assert headers["x-litellm-model-id"] == "cool-good"
        assert headers["x-litellm-attempted-retries"] == "0"
    assert fake_openai.count("fail-500") == 1
    assert time.monotonic() - cooled_at < 3, "the machine was too slow to check inside the cooldown"
    time.sleep(max(0.0, 3.5 - (time.monotonic() - cooled_at)))
    headers, _ = chat(c, "cool")  # expired: the failing deployment is tried again
    assert fake_openai.count("fail-500") == 2
    assert headers["x-litellm-attempted-retries"] == "1"


def test_every_deployment_cooling_is_503_with_retry_after(cooldown_gateway, fake_openai):
    c = openai.OpenAI(base_url=cooldown_gateway.url, api_key="x", max_retries=0, timeout=30)
    with pytest.raises(openai.RateLimitError):
        chat(c, "all-limited")  # both answer 429: each cools down at once
    assert fake_openai.count("fail-429") == 2
    with pytest.raises(openai.InternalServerError) as err:
        chat(c, "all-limited")
    assert err.value.status_code == 503
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 3
    assert fake_openai.count("fail-429") == 2  # nobody was called


# ---- /health and gateway --health ---------------------------------------------------------

@pytest.fixture(scope="module")
def health_gateway(fake_openai, tmp_path_factory):
    config = {"model_list": [dep(fake_openai, "good", "gpt-3.5-turbo", "good-1"),
                             dep(fake_openai, "bad", "fail-500", "bad-1")],
              "general_settings": {"master_key": MASTER}}
    gw = start_module_gateway(tmp_path_factory, config).wait_ready()
    yield gw
    gw.stop()


def test_health_needs_the_master_key(health_gateway):
    assert requests.get(health_gateway.url + "/health", timeout=30).status_code == 401
    bad = requests.get(health_gateway.url + "/health", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert bad.status_code == 401


def test_health_one_healthy_one_unhealthy(health_gateway, fake_openai):
    resp = requests.get(health_gateway.url + "/health", headers={"Authorization": f"Bearer {MASTER}"},
                        timeout=30)
    assert resp.status_code == 200
    data = resp.json()
    assert (data["healthy_count"], data["unhealthy_count"]) == (1, 1)
    [good], [bad] = data["healthy_endpoints"], data["unhealthy_endpoints"]
    assert good["model"] == "openai/gpt-3.5-turbo" and good["api_base"] == fake_openai.url + "/v1"
    assert bad["model"] == "openai/fail-500" and bad["api_base"] == fake_openai.url + "/v1"
    assert bad["error"]
    for secret in (fake_openai.api_key, MASTER, "sk-"):
        assert secret not in resp.text
    assert fake_openai.count("gpt-3.5-turbo") == 1 and fake_openai.count("fail-500") == 1


def test_cli_health_exits_1_when_one_is_unhealthy(health_gateway, fake_openai):
    result = run_cli("--health", "--host", "127.0.0.1", "--port", str(health_gateway.port),
                     "--config", str(health_gateway.config_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 healthy, 1 unhealthy" in result.stdout
    assert "UNHEALTHY" in result.stdout and "openai/fail-500" in result.stdout
    assert "openai/gpt-3.5-turbo" in result.stdout and fake_openai.url in result.stdout
    assert MASTER not in result.stdout and fake_openai.api_key not in result.stdout


def test_cli_health_exits_0_when_all_are_healthy(start_gateway, fake_openai):
    gw = start_gateway({"model_list": [dep(fake_openai, "good", "gpt-3.5-turbo"),
                                       dep(fake_openai, "emb", "text-embedding-3-small",
                                           model_info={"mode": "embedding"})]})
    result = run_cli("--health", "--host", "127.0.0.1", "--port", str(gw.port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 healthy, 0 unhealthy" in result.stdout
    embedded = [r for r in fake_openai.requests if r["path"] == "/v1/embeddings"]
    assert len(embedded) == 1  # embedding models are checked with an embeddings call


def test_health_honours_health_check_timeout(start_gateway, fake_openai):
    gw = start_gateway({"model_list": [dep(fake_openai, "good", "gpt-3.5-turbo"),
                                       dep(fake_openai, "stuck", "hang", health_check_timeout=1)]})
    started = time.monotonic()
    data = requests.get(gw.url + "/health", timeout=30).json()
    assert time.monotonic() - started < 5
    assert (data["healthy_count"], data["unhealthy_count"]) == (1, 1)
    assert data["unhealthy_endpoints"][0]["model"] == "openai/hang"
