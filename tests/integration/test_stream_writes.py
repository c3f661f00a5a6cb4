"""How a stream's chunks reach the client (issue #17, part 2): what the upstream sent in one write
goes out in one write (one HTTP chunk, not one per event: each is a syscall and a chunk of framing),
and an event that arrives alone is passed on at once, never held back for the next one.

A real gunicorn + gevent gateway in front of an OpenAI-shaped upstream (a FakeServer speaking SSE
over chunked HTTP) that sends its events either all in one write or 200 ms apart; the client reads
the gateway's HTTP chunks as they were framed (urllib3's read_chunked)."""

import json
import time

import pytest
import requests

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

pytestmark = pytest.mark.integration

PIECES = ["Hello", " from", " one", " write", "."]
PAUSE = 0.2  # seconds between the paced upstream's events


def _events(model):
    base = {"id": "chatcmpl-w", "object": "chat.completion.chunk", "created": 1, "model": model}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece} if i == 0
                                    else {"content": piece}, "finish_reason": None}]}
              for i, piece in enumerate(PIECES)]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
    return [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]


class _Handler(FakeHandler):
    def route(self, method, path, query, headers, body):
        model = body.get("model") if isinstance(body, dict) else None
        self.start_chunked("text/event-stream")
        events = _events(model)
        if model == "one-write":
            self.write_chunk("".join(events))
        else:
            for event in events:
                self.write_chunk(event)
                time.sleep(PAUSE)
        self.end_chunked()


class _Upstream(FakeServer):
    handler = _Handler


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from tests.integration.conftest import config_gateway
    with _Upstream() as upstream:
        models = [{"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_base": upstream.url + "/v1",
                                                          "api_key": "sk-up"}}
                  for name in ("one-write", "paced")]
        gw = config_gateway(tmp_path_factory.mktemp("writes"), {"model_list": models}, workers=1)
        yield gw
        gw.stop()


def _chunks(gateway, model):
    """The gateway's HTTP chunks of one streamed call, each with the time it arrived."""
    resp = requests.post(gateway.url + "/v1/chat/completions", stream=True, timeout=30,
                         json={"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200, resp.text
    started = time.monotonic()
    return [(chunk, time.monotonic() - started) for chunk in resp.raw.read_chunked(decode_content=False)]


def _contents(chunks):
    body = b"".join(chunk for chunk, _ in chunks).decode()
    datas = [line[len("data: "):] for line in body.split("\n") if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    return [c["delta"].get("content") for d in datas[:-1] for c in json.loads(d)["choices"]]


def test_events_the_upstream_sent_together_go_out_in_one_write(gateway):
    chunks = _chunks(gateway, "one-write")
    assert "".join(filter(None, _contents(chunks))) == "".join(PIECES)
    assert len(chunks) == 1, [chunk for chunk, _ in chunks]  # every event and [DONE], one HTTP chunk


def test_an_event_that_arrives_alone_is_passed_on_at_once(gateway):
    chunks = _chunks(gateway, "paced")
    assert "".join(filter(None, _contents(chunks))) == "".join(PIECES)
    # The first piece reached the client long before the upstream finished (6 pauses later), and the
    # pieces came one write at a time, PAUSE apart.
    assert chunks[0][1] < PAUSE * 2, chunks[0]
    assert chunks[-1][1] - chunks[0][1] > PAUSE * (len(PIECES) - 1)
    assert len(chunks) >= len(PIECES)
