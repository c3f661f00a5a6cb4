"""Generator frames a stream chunk passes through between the upstream and the WSGI server (issue
#12 item 4): real streams from fake upstreams on loopback, through the Flask test client.

Measured where a chunk is born (the provider's `parse_stream_event`, called by the translating
generator) and where the upstream socket is read (urllib3's `read1`): the generator frames of
gateway code on the call stack at that moment are the frames every chunk (or every read) passes
through on its way up to the WSGI server (werkzeug's own frames are counted apart)."""

import inspect
import os
import sys

import orjson
import pytest
import urllib3.response

from gateway.app import create_app
from gateway.config.settings import from_dict
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.openai import OpenAIProvider
from gateway.wire.sse import SSEDecoder
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI

MASTER = "sk-master-frames-0123456789"
GATEWAY_DIR = os.path.dirname(inspect.getfile(create_app))
MAX_CHUNK_FRAMES = 3


@pytest.fixture(scope="module")
def upstreams():
    with FakeOpenAI() as openai, FakeAnthropic() as anthropic:
        yield openai, anthropic


def generator_frames(frame):
    """(gateway frames, other frames): the generator frames on the stack from `frame` outwards."""
    ours, others = [], []
    while frame is not None:
        if frame.f_code.co_flags & inspect.CO_GENERATOR:
            where = ours if frame.f_code.co_filename.startswith(GATEWAY_DIR) else others
            where.append(getattr(frame.f_code, "co_qualname", frame.f_code.co_name))
        frame = frame.f_back
    return ours, others


class FrameProbe:
    """Records the generator frames on the stack at each chunk (translator call) and each socket read."""

    def __init__(self, monkeypatch):
        self.chunks, self.reads = [], []
        for cls in (OpenAIProvider, AnthropicProvider):
            monkeypatch.setattr(cls, "parse_stream_event", self._wrap(cls.parse_stream_event, self.chunks))
        monkeypatch.setattr(urllib3.response.HTTPResponse, "read1",
                            self._wrap(urllib3.response.HTTPResponse.read1, self.reads))

    @staticmethod
    def _wrap(fn, into):
        def probed(*args, **kwargs):
            into.append(generator_frames(sys._getframe(1)))
            return fn(*args, **kwargs)
        return probed

    @staticmethod
    def deepest(samples):
        """The sample with the most gateway frames: one taken while the WSGI server pulls the stream
        (the first chunk is read by the router before the response starts, on a shorter stack)."""
        return max(samples, key=lambda sample: len(sample[0]))


def make_client(upstreams, *, cache=False, master=False):
    openai, anthropic = upstreams
    config = {"model_list": [
        {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o", "api_base": openai.url + "/v1",
                                                 "api_key": openai.api_key,
                                                 "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}},
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-3-haiku-20240307",
                                                    "api_base": anthropic.url, "api_key": anthropic.api_key}}]}
    if cache:
        config["litellm_settings"] = {"cache": True}
    if master:
        config["general_settings"] = {"master_key": MASTER}
    return create_app(from_dict(config, source="test")).test_client()


def stream(client, body, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = client.post("/v1/chat/completions", data=orjson.dumps({**body, "stream": True}),
                       content_type="application/json", headers=headers)
    assert resp.status_code == 200, resp.data
    decoder = SSEDecoder()
    events = [e.data for e in decoder.feed(resp.get_data()) + decoder.close()]
    assert events[-1] == b"[DONE]", events
    return resp, [orjson.loads(e) for e in events[:-1]]


HELLO = {"model": "gpt", "messages": [{"role": "user", "content": "say hello to the frames"}]}
LEGACY = {"model": "claude", "messages": [{"role": "user", "content": "what is the weather in Paris?"}],
          "functions": [{"name": "get_weather", "parameters": {"type": "object",
                                                               "properties": {"location": {"type": "string"}}}}]}


def measure(monkeypatch, client, body, key=None):
    probe = FrameProbe(monkeypatch)
    resp, chunks = stream(client, body, key)
    return probe, resp, chunks


def report(name, probe):
    chunk, read = probe.deepest(probe.chunks), probe.deepest(probe.reads)
    print(f"\n{name}: {len(chunk[0])} gateway generator frames per chunk {chunk[0]} "
          f"(+{len(chunk[1])} werkzeug {chunk[1]}); at the socket read {len(read[0])} {read[0]}")
    return len(chunk[0])


def test_plain_stream(upstreams, monkeypatch):
    probe, _resp, chunks = measure(monkeypatch, make_client(upstreams), HELLO)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert report("plain", probe) <= MAX_CHUNK_FRAMES


def test_cached_stream(upstreams, monkeypatch):
    client = make_client(upstreams, cache=True)
    probe, resp, chunks = measure(monkeypatch, client, HELLO)
    assert resp.headers["x-cache"] == "MISS"
    assert report("cached (tap)", probe) <= MAX_CHUNK_FRAMES
    again, replayed = stream(client, HELLO)
    assert again.headers["x-cache"] == "HIT" and replayed == chunks


def test_metered_stream(upstreams, monkeypatch):
    client = make_client(upstreams, master=True)
    made = client.post("/key/generate", json={"max_budget": 10, "tpm_limit": 100000, "max_parallel_requests": 5},
                       headers={"Authorization": f"Bearer {MASTER}"})
    assert made.status_code == 200, made.data
    probe, resp, _chunks = measure(monkeypatch, client, HELLO, key=made.json["key"])
    assert resp.headers["x-litellm-model-group"] == "gpt"
    assert report("metered (virtual key, budget, limits)", probe) <= MAX_CHUNK_FRAMES


def test_legacy_functions_mapped_stream(upstreams, monkeypatch):
    probe, _resp, chunks = measure(monkeypatch, make_client(upstreams), LEGACY)
    calls = [c["choices"][0]["delta"]["function_call"] for c in chunks
             if c["choices"] and c["choices"][0]["delta"].get("function_call")]
    assert calls and calls[0]["name"] == "get_weather"
    assert report("legacy functions (mapped)", probe) <= MAX_CHUNK_FRAMES
