"""Upstream answers that look like successes but are not (issue #11 items 7 and 8), end to end: one
gunicorn gateway (1 worker, so an identical call finds what the first one stored) with the response
cache and the spend ledger on, in front of every provider's fake upstream, called with the openai SDK.

- A stream whose body just ends (no `[DONE]`, no finish_reason, no provider end marker: Anthropic's
  message_stop, Gemini's finishReason, Cohere's message-end, Ollama's `done`, TGI's final event,
  Replicate's `done`, Bedrock's messageStop, SageMaker/TGI's final line) is an error for the client (a
  final error event), is not cached (the identical call after it misses and fails again) and its
  spend row says error. For each provider a complete stream through the same gateway is cached,
  so a cache that never stores anything could not pass.
- An HTTP 200 whose body is `{"error": {...}}` is the upstream error it carries: the client gets it
  with the upstream's message, nothing is cached, the spend row says error.
"""

import time
import uuid

import openai
import pytest
import yaml

from tests.fakes.ai21_server import FakeAI21
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.aws_server import ACCESS_KEY
from tests.fakes.aws_server import SECRET_KEY
from tests.fakes.aws_server import FakeAWS
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.tgi_server import FakeTGI
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

MASTER = "sk-master-upstream-answers-0123"
KEY = "sk-fake-upstream-answers-key-0123"
ROW_TIMEOUT = 10.0

# (case, deployment of a complete stream, deployment of a cut one, what the cut prompt starts with)
CASES = [
    ("openai", "openai-ok", "openai-cut", ""),
    ("openai-completions", "openai-ok", "openai-cut", ""),
    ("anthropic", "anthropic-ok", "anthropic-cut", ""),
    ("gemini", "gemini-ok", "gemini-cut", ""),
    ("cohere", "cohere-ok", "cohere-cut", ""),
    ("ollama", "ollama-ok", "ollama-cut", ""),
    ("ollama-generate", "ollama-gen-ok", "ollama-gen-cut", ""),
    ("ai21", "ai21-ok", "ai21-cut", ""),
    ("replicate", "replicate-ok", "replicate-cut", ""),
    ("huggingface-generate", "tgi-generate", "tgi-generate", "TRIGGER_CUT_STREAM"),
    ("huggingface-chat-api", "tgi-chat", "tgi-chat", "TRIGGER_CUT_STREAM"),
    ("bedrock", "bedrock-ok", "bedrock-cut", ""),
    ("sagemaker", "sagemaker-ok", "sagemaker-cut", ""),
]


@pytest.fixture(scope="module")
def fakes():
    servers = {"openai": FakeOpenAI(api_key=KEY), "anthropic": FakeAnthropic(api_key=KEY), "gemini": FakeGemini(),
               "cohere": FakeCohere(api_key=KEY), "ollama": FakeOllama(), "ai21": FakeAI21(api_key=KEY),
               "replicate": FakeReplicate(token=KEY), "tgi": FakeTGI(api_key=KEY), "aws": FakeAWS()}
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


def model_list(f):
    aws = {"api_base": f["aws"].url, "aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY,
           "aws_region_name": "us-east-1"}

    def dep(name, model, **params):
        return {"model_name": name, "litellm_params": {"model": model, **params}}

    openai_up = {"api_base": f["openai"].url + "/v1", "api_key": KEY}
    return [
        dep("openai-ok", "openai/gpt-4o", **openai_up),
        dep("openai-cut", "openai/cut-stream", **openai_up),
        dep("openai-error-200", "openai/error-200", **openai_up),
        dep("openai-deep-answer", "openai/deep-answer", **openai_up),
        dep("anthropic-ok", "anthropic/claude-3-haiku-20240307", api_base=f["anthropic"].url, api_key=KEY),
        dep("anthropic-cut", "anthropic/cut-stream", api_base=f["anthropic"].url, api_key=KEY),
        dep("gemini-ok", "gemini/gemini-2.0-flash", api_base=f["gemini"].url, api_key=f["gemini"].api_key),
        dep("gemini-cut", "gemini/cut-stream", api_base=f["gemini"].url, api_key=f["gemini"].api_key),
        dep("cohere-ok", "cohere/command-r", api_base=f["cohere"].url, api_key=KEY),
        dep("cohere-cut", "cohere/cut-stream", api_base=f["cohere"].url, api_key=KEY),
        dep("ollama-ok", "ollama_chat/llama3.2", api_base=f["ollama"].url),
        dep("ollama-cut", "ollama_chat/cut-stream", api_base=f["ollama"].url),
        dep("ollama-gen-ok", "ollama/llama3.2", api_base=f["ollama"].url),
        dep("ollama-gen-cut", "ollama/cut-stream", api_base=f["ollama"].url),
        dep("ai21-ok", "ai21/jamba-large", api_base=f["ai21"].url, api_key=KEY),
        dep("ai21-cut", "ai21/cut-stream", api_base=f["ai21"].url, api_key=KEY),
        dep("replicate-ok", "replicate/meta/meta-llama-3-8b-instruct", api_base=f["replicate"].url + "/v1",
            api_key=KEY),
        dep("replicate-cut", "replicate/acme/cut-stream", api_base=f["replicate"].url + "/v1", api_key=KEY),
        dep("tgi-generate", "huggingface/meta-llama/Meta-Llama-3-8B-Instruct", api_base=f["tgi"].url, api_key=KEY),
        dep("tgi-chat", "huggingface/fake-org/fake-model", api_base=f["tgi"].url, api_key=KEY, use_chat_api=True),
        dep("bedrock-ok", "bedrock/anthropic.claude-3-haiku-20240307-v1:0", **aws),
        dep("bedrock-cut", "bedrock/cut-stream", **aws),
        dep("sagemaker-ok", "sagemaker/my-endpoint", **aws),
        dep("sagemaker-cut", "sagemaker/cut-stream", **aws),
    ]


@pytest.fixture(scope="module")
def gateway(fakes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw-answers")
    config = {"model_list": model_list(fakes),
              "litellm_settings": {"cache": True, "cache_params": {"type": "local"}, "num_retries": 0},
              "router_settings": {"allowed_fails": 1000},
              "general_settings": {"master_key": MASTER, "database_url": f"sqlite:///{tmp / 'spend.sqlite'}"}}
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    gw = GatewayProcess(["--config", str(tmp / "config.yaml"), "--num_workers", "1"], {}, tmp / "gw.log",
                        free_port())
    gw.wait_ready()
    yield gw
    gw.stop()


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER, max_retries=0, timeout=30)


def spend_row(gateway, request_id):
    """The ledger row of one request, once written (after the response went out)."""
    import requests
    deadline = time.monotonic() + ROW_TIMEOUT
    while True:
        rows = requests.get(gateway.url + "/spend/logs", params={"request_id": request_id}, timeout=10,
                            headers={"Authorization": f"Bearer {MASTER}"}).json()
        if rows:
            return rows[0]
        assert time.monotonic() < deadline, f"no spend row for {request_id}"
        time.sleep(0.1)


def stream_call(client, case, model, prompt):
    """(response headers, text received, the error that ended the stream or None)."""
    if case == "openai-completions":
        raw = client.completions.with_raw_response.create(model=model, prompt=prompt, stream=True)
    else:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True)
    text, error = [], None
    try:
        for chunk in raw.parse():
            for choice in chunk.choices:
                text.append(choice.text if case == "openai-completions" else choice.delta.content or "")
    except openai.APIError as exc:
        error = exc
    return raw.headers, "".join(text), error


@pytest.mark.parametrize("case, complete, cut, marker", CASES, ids=[c[0] for c in CASES])
def test_a_cut_stream_is_an_error_and_never_cached(client, gateway, case, complete, cut, marker):
    prompt = f"hello there {uuid.uuid4().hex}"
    first, text, error = stream_call(client, case, complete, prompt)
    assert error is None and text and first["x-cache"] == "MISS"
    again, text_again, error = stream_call(client, case, complete, prompt)
    assert error is None and again["x-cache"] == "HIT" and text_again == text  # complete streams are cached

    prompt = f"{marker} hello there {uuid.uuid4().hex}".strip()
    for attempt in range(2):
        headers, _, error = stream_call(client, case, cut, prompt)
        assert error is not None, f"attempt {attempt}: a cut stream was passed on as complete"
        assert "ended before" in error.message, error.message
        assert headers["x-cache"] == "MISS", f"attempt {attempt}: a cut stream was cached"
        row = spend_row(gateway, headers["x-request-id"])
        assert row["status"] == "error", row


@pytest.mark.parametrize("kind", ["chat", "stream", "embeddings"])
def test_an_error_in_a_200_answer_is_the_upstream_error(client, gateway, fakes, kind):
    fake = fakes["openai"]
    fake.reset()
    words = f"hello {uuid.uuid4().hex}"
    for attempt in range(2):
        with pytest.raises(openai.APIStatusError) as info:
            if kind == "embeddings":
                client.embeddings.create(model="openai-error-200", input=words)
            else:
                for _ in client.chat.completions.create(model="openai-error-200", stream=kind == "stream",
                                                        messages=[{"role": "user", "content": words}]):
                    pass
        err = info.value
        assert err.status_code == 502
        assert "The upstream model crashed while answering." in err.message
        assert err.response.headers.get("x-cache") != "HIT"
        assert spend_row(gateway, err.response.headers["x-request-id"])["status"] == "error"
    assert fake.count("error-200") == 2  # the identical second call went upstream again: nothing was cached


def test_an_answer_too_deep_to_pass_on_is_a_502_with_its_spend_kept(client, gateway, fakes):
    fakes["openai"].reset()
    words = f"hello {uuid.uuid4().hex}"
    for attempt in range(2):
        with pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="openai-deep-answer",
                                           messages=[{"role": "user", "content": words}])
        err = info.value
        assert err.status_code == 502 and err.body["code"] == "upstream_invalid_answer", err.message
        assert err.response.headers.get("x-cache") != "HIT"
        row = spend_row(gateway, err.response.headers["x-request-id"])
        assert row["status"] == "error" and row["prompt_tokens"] > 0, row  # the upstream's usage is kept
    assert fakes["openai"].count("deep-answer") == 2  # nothing was cached
