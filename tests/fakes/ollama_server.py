"""A fake Ollama server on loopback: /api/chat, /api/generate, /api/embed, /api/tags, /api/version.

Speaks Ollama's wire format (docs/api.md): JSON answers, NDJSON streams (`application/x-ndjson`,
chunked, one object a line, the last with `done: true` and token counts), `{"error": "..."}` errors.

Deterministic answers: chat says ``"Hello from Ollama: <last user text>"`` (plus ``" I see N image(s)."``
when the last user message has images); after a `tool` message it says ``"The tool said: <content>"``.
When the request offers tools and the last user message mentions "weather", it calls the first tool
once per city named (Paris, London, Tokyo; Paris by default). Token counts are whitespace words.

Triggers (model name): ``missing`` -> 404 not found, ``fail-500`` -> 500, ``stream-error`` -> an
``{"error"}`` line mid-stream, ``cut-stream`` -> two lines, then the body ends without ``done: true``,
``long-context`` -> 400 context-length error. ``api_key`` set: every
request needs ``Authorization: Bearer <api_key>`` (as a proxy in front of Ollama would).
"""

import base64
import binascii
import hashlib
import json
import math
import re
import struct

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

ANSWER_PREFIX = "Hello from Ollama: "
CITIES = ("Paris", "London", "Tokyo")
DIMENSIONS = 8
CREATED_AT = "2024-07-22T20:33:28.123648Z"


def words(text):
    """The fake tokenizer."""
    return len(text.split())


def pieces(text):
    """Stream deltas: one word each, with its trailing whitespace."""
    return re.findall(r"\S+\s*", text) or ([text] if text else [])


def fake_embedding(text, dimensions=DIMENSIONS):
    """A deterministic unit vector, rounded to float32 so float and base64 encodings agree."""
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest() for i in range(dimensions // 8 + 1))
    vec = [u / 2**31 - 1.0 for u in struct.unpack(f"<{dimensions}I", raw[: 4 * dimensions])]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in vec))))


def weather_calls(text):
    """The tool calls the fake makes for a weather question."""
    cities = [c for c in CITIES if c.lower() in text.lower()] or ["Paris"]
    return [{"location": c, "format": "celsius"} for c in cities]


class OllamaHandler(FakeHandler):
    """Routes of the fake."""

    server_version = "fake-ollama"

    def route(self, method, path, query, headers, body):
        fake = self.server.fake
        if fake.api_key and headers.get("authorization") != f"Bearer {fake.api_key}":
            return self.send_json(401, {"error": "unauthorized"})
        if method == "GET" and path in ("/", ""):
            return self.send_json(200, b"Ollama is running", content_type="text/plain; charset=utf-8")
        if method == "GET" and path == "/api/version":
            return self.send_json(200, {"version": "0.6.3"})
        if method == "GET" and path == "/api/tags":
            return self.send_json(200, {"models": [{"name": m, "model": m, "size": 1, "digest": "0" * 64,
                                                    "modified_at": CREATED_AT} for m in fake.models]})
        if method != "POST" or path not in ("/api/chat", "/api/generate", "/api/embed"):
            return self.send_json(404, b"404 page not found", content_type="text/plain")
        if not isinstance(body, dict):
            return self.send_json(400, {"error": "invalid character 'x' looking for beginning of value"})
        model = body.get("model")
        if not model:
            return self.send_json(400, {"error": "model is required"})
        if model == "missing":
            return self.send_json(404, {"error": f'model "{model}" not found, try pulling it first'})
        if model == "fail-500":
            return self.send_json(500, {"error": "llama runner process has terminated: signal: killed"})
        if model == "long-context":
            return self.send_json(400, {"error": "the input length exceeds the context length"})
        if path == "/api/embed":
            return self.embed(body)
        try:
            text, calls = self.answer(path, body)
        except ValueError as exc:
            return self.send_json(400, {"error": str(exc)})
        self.reply(path, body, text, calls)

    def answer(self, path, body):
        """(text, tool call arguments list) for a chat or generate request."""
        if path == "/api/generate":
            images = body.get("images") or []
            said = body.get("prompt") or ""
            last_role, tools = "user", None
        else:
            messages = body.get("messages") or []
            last = messages[-1] if messages else {"role": "user", "content": ""}
            last_role, said, images = last.get("role"), last.get("content") or "", last.get("images") or []
            tools = body.get("tools")
        for image in images:
            try:
                base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise ValueError("illegal base64 data at input byte 4") from None
        if last_role == "tool":
            return f"The tool said: {said}", []
        if tools and "weather" in said.lower():
            return "", weather_calls(said)
        text = ANSWER_PREFIX + said
        if images:
            text += f" I see {len(images)} image(s)."
        if body.get("format") == "json":
            text = json.dumps({"answer": text})
        return text, []

    def reply(self, path, body, text, calls):
        model = body["model"]
        limit = (body.get("options") or {}).get("num_predict")
        parts = pieces(text)
        done_reason = "stop"
        if isinstance(limit, int) and 0 <= limit < len(parts):
            parts, done_reason = parts[:limit], "length"
            text = "".join(parts).rstrip()
        prompt_tokens = sum(words(m.get("content") or "") for m in body.get("messages") or []) \
            if path == "/api/chat" else words(body.get("prompt") or "")
        tool_calls = [{"function": {"name": body["tools"][0]["function"]["name"], "arguments": a}}
                      for a in calls]
        stats = {"done_reason": done_reason, "done": True, "total_duration": 885095291, "load_duration": 3753500,
                 "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 328493000,
                 "eval_count": len(parts) + len(tool_calls), "eval_duration": 552222000}
        chat = path == "/api/chat"

        def line(content, extra=None, **more):
            item = {"model": model, "created_at": CREATED_AT}
            if chat:
                item["message"] = {"role": "assistant", "content": content, **(extra or {})}
            else:
                item["response"] = content
            item.update(more)
            return item

        if body.get("stream", True) is False:
            extra = {"tool_calls": tool_calls} if tool_calls else None
            final = line(text, extra, **stats)
            if not chat:
                final["context"] = [1, 2, 3]
            return self.send_json(200, final)
        self.start_chunked("application/x-ndjson")
        for i, part in enumerate(parts):
            self.write_chunk(json.dumps(line(part, done=False)) + "\n")
            if model == "stream-error" and i == 1:
                self.write_chunk(json.dumps({"error": "an error was encountered while running the model"}) + "\n")
                return self.end_chunked()
            if model == "cut-stream" and i == 1:  # the body just ends: no line with `done: true`
                return self.end_chunked()
        for call in tool_calls:  # Ollama streams each tool call whole, in its own line
            self.write_chunk(json.dumps(line("", {"tool_calls": [call]}, done=False)) + "\n")
        final = line("", None, **stats)
        if not chat:
            final["context"] = [1, 2, 3]
        self.write_chunk(json.dumps(final) + "\n")
        self.end_chunked()

    def embed(self, body):
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            return self.send_json(400, {"error": "invalid input type"})
        dims = body.get("dimensions") or DIMENSIONS
        self.send_json(200, {"model": body["model"], "embeddings": [fake_embedding(i, dims) for i in inputs],
                             "total_duration": 14143917, "load_duration": 1019500,
                             "prompt_eval_count": sum(words(i) for i in inputs)})


class FakeOllama(FakeServer):
    """The fake Ollama server; `requests` holds what it received."""

    handler = OllamaHandler

    def __init__(self, api_key=None, **kwargs):
        super().__init__(**kwargs)
        self.api_key = api_key
        self.models = ["llama3.2:latest", "llava:latest", "all-minilm:latest"]

    def last(self, path):
        """The last recorded request to `path`."""
        return [r for r in self.requests if r["path"] == path][-1]
