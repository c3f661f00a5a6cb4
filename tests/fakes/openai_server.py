"""A fake OpenAI / Azure OpenAI upstream: a real HTTP/1.1 server on loopback.

It speaks the documented OpenAI wire format closely enough that the official
``openai`` SDK parses every answer, so gateway tests can point a provider at it
and check what the gateway sent (``FakeOpenAI.requests``) and how it behaves
when the upstream fails, is slow, or is abandoned mid-stream
(``FakeOpenAI.disconnects``).

Routes
    OpenAI: POST /v1/chat/completions, /v1/completions, /v1/embeddings;
            GET /v1/models, /v1/models/{id}.  Auth: ``Authorization: Bearer <api_key>``.
    Azure:  POST /openai/deployments/{deployment}/{chat/completions|completions|embeddings}
            with ``?api-version=``.  Auth: ``api-key: <azure_key>`` or any non-empty
            ``Authorization: Bearer`` token (Entra ID).  The deployment name plays
            the role of the model for the triggers below.

Behaviour triggers (by model / deployment name)
    fail-400, fail-401, fail-403, fail-404, fail-429, fail-500, fail-503,
    context-length   -> the matching OpenAI error answer
    slow             -> answer after ``slow_seconds``
    slow-stream      -> one chunk every ``stream_interval`` s, ``slow_stream_chunks`` times
    stream-error     -> two content chunks, then an in-band ``{"error": ...}`` event
    malformed        -> 200 with a body that is not JSON

Failure modes on demand, for router tests (retries, timeouts, cooldowns)
    flaky-N          -> the first N requests for that model name answer 500, later ones answer
                        normally (the counter is per fake, ``reset()`` clears it)
    ratelimit-N      -> the first N requests answer 429 with ``Retry-After: 1``, then normally
    hang             -> accept the request and never answer until the client goes away (recorded
                        in ``disconnects``) or ``hang_seconds`` pass; then answer normally
    reset            -> close the TCP connection abruptly (RST) without any HTTP answer
    stall-stream     -> stream the role chunk and two content chunks, then stall ``stall_seconds``
                        (noticing a client hang-up), then finish the answer normally; without
                        ``stream`` it answers normally
    cut-stream       -> stream the role chunk and two content chunks, then end the body cleanly:
                        no finish_reason, no ``[DONE]`` (a connection that just closed); without
                        ``stream`` it answers normally
    error-200        -> HTTP 200 whose body is an OpenAI error envelope (``{"error": {...}}``), as
                        some OpenAI-compatible servers and proxies answer
    deep-answer      -> a normal chat answer with an extra field nested 300 levels deep

``basic_auth=(user, password)`` plays a reverse proxy with HTTP Basic auth in front of a server
without a key: every request needs ``Authorization: Basic <user:password>`` (else a 401), and no
bearer key is checked.

``count(model)`` is the number of API requests (chat, completions, embeddings) that reached the
fake for a model / deployment name since the last ``reset()``, failures included.

Answers are deterministic: chat says ``"Hello from fake upstream: <last user text>"``,
token counts are whitespace word counts, embeddings come from ``fake_embedding``.
Stdlib only.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import select
import socket
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ANSWER_PREFIX = "Hello from fake upstream: "
SYSTEM_FINGERPRINT = "fp_fake0001"
DEFAULT_DIMENSIONS = 8
MODEL_CREATED = 1700000000

_DISCONNECT_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_FLAKY = re.compile(r"^flaky-(\d+)$")
_RATELIMIT = re.compile(r"^ratelimit-(\d+)$")
STALL_AFTER_PIECES = 2  # stall-stream: content chunks sent before the stall
_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)$")
_OPENAI_ROUTES = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "completions",
    ("POST", "/v1/embeddings"): "embeddings",
    ("GET", "/v1/models"): "models",
}


def openai_error(message, type_="invalid_request_error", param=None, code=None):
    """Build OpenAI's error envelope ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def mask_key(key: str) -> str:
    """Mask an API key the way OpenAI does in 401 messages (never echo it whole)."""
    if len(key) <= 8:
        return "*" * len(key)
    return key[:5] + "*" * (len(key) - 9) + key[-4:]


_AZURE_401 = {"error": {"code": "401", "message": (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your resource.")}}
_AZURE_404 = {"error": {"code": "404", "message": "Resource not found"}}
_BAD_JSON = openai_error(
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. "
    "If you have trouble figuring out how to fix this, please contact us through our help center at "
    "help.openai.com.)")
_RATE_LIMIT_HEADERS = {
    "Retry-After": "1",
    "x-ratelimit-limit-requests": "3",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-limit-tokens": "40000",
    "x-ratelimit-remaining-tokens": "39990",
    "x-ratelimit-reset-tokens": "15ms",
}


def _incorrect_key(key: str) -> dict:
    return openai_error(
        f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.", code="invalid_api_key")


def _failure(model: str):
    """Return (status, body, extra headers) for an error-trigger model name, else None."""
    if model == "fail-400":
        return 400, openai_error("Invalid value for 'temperature': must be a number between 0 and 2.",
                                 param="temperature"), {}
    if model == "fail-401":
        return 401, _incorrect_key("sk-fake-revoked-key-0000"), {}
    if model == "fail-403":
        return 403, openai_error("You are not allowed to sample from this model"), {}
    if model == "fail-404":
        return 404, openai_error(f"The model `{model}` does not exist or you do not have access to it.",
                                 code="model_not_found"), {}
    if model == "fail-429":
        return 429, openai_error(
            f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
            "Limit 3, Used 3, Requested 1. Please try again in 1s. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.",
            type_="requests", code="rate_limit_exceeded"), dict(_RATE_LIMIT_HEADERS)
    if model == "fail-500":
        return 500, openai_error("The server had an error while processing your request. Sorry about that!",
                                 type_="server_error"), {}
    if model == "fail-503":
        return 503, openai_error("The engine is currently overloaded, please try again later.",
                                 type_="server_error"), {}
    if model == "context-length":
        return 400, openai_error(
            "This model's maximum context length is 4097 tokens. However, your messages resulted in "
            "5000 tokens. Please reduce the length of the messages.",
            param="messages", code="context_length_exceeded"), {}
    return None


def _failure_on_demand(model: str, seen_before: int):
    """(status, body, headers) for flaky-N / ratelimit-N while their first N requests last, else None."""
    flaky = _FLAKY.match(model)
    if flaky and seen_before < int(flaky.group(1)):
        return 500, openai_error("The server had an error while processing your request. Sorry about that!",
                                 type_="server_error"), {}
    limited = _RATELIMIT.match(model)
    if limited and seen_before < int(limited.group(1)):
        status, body, headers = _failure("fail-429")
        return status, body, headers
    return None


def content_text(content) -> str:
    """Text of a chat message content: a string, or a list of parts (text parts joined by a space)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def words(text: str) -> int:
    """The fake tokenizer: whitespace word count."""
    return len(text.split())


def fake_embedding(item, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """Deterministic unit vector for one embedding input (str or list of ints).

    Values are rounded to float32 so the "float" and "base64" encodings carry
    exactly the same numbers.
    """
    seed = hashlib.sha256(repr(item).encode()).digest()
    raw, counter = b"", 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        counter += 1
    vec = [u / 2**31 - 1.0 for u in struct.unpack(f"<{dimensions}I", raw[: 4 * dimensions])]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in vec))
    return list(struct.unpack(f"<{dimensions}f", packed))


def _truncate(answer: str, limit):
    """Apply max_tokens (in words): return (text, finish_reason)."""
    parts = answer.split()
    if limit is not None and len(parts) > limit:
        return " ".join(parts[: max(limit, 0)]), "length"
    return answer, "stop"


def _pieces(text: str) -> list[str]:
    """Split an answer into stream deltas, one word each with its trailing whitespace."""
    return re.findall(r"\S+\s*", text) or ([text] if text else [])


class _Abort(Exception):
    """Stop handling this request and close the connection."""


class _ClientGone(_Abort):
    """The client hung up in the middle of a response."""


class _Handler(BaseHTTPRequestHandler):
    """One connection; ``fake`` is set on a per-server subclass."""

    protocol_version = "HTTP/1.1"  # keep-alive + chunked streams
    server_version = "FakeOpenAI/1.0"
    fake: "FakeOpenAI"

    def log_message(self, format, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # ---- plumbing -------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _common_headers(self):
        self.send_header("x-request-id", self._request_id)
        self.send_header("openai-processing-ms", str(int((time.monotonic() - self._t0) * 1000)))
        self.send_header("openai-version", "2020-10-01")
        if self._azure:
            self.send_header("apim-request-id", str(uuid.uuid4()))

    def _send(self, status: int, body: bytes, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _json(self, status: int, payload, headers=None):
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _disconnected(self):
        self.fake._record_disconnect(self._path, self._model, self._events_sent)
        raise _ClientGone()

    def _pause(self, seconds: float):
        """Sleep ``seconds``, but notice a client hang-up (EOF on the socket) meanwhile."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self.fake._stopping.is_set():
                raise _Abort()
            readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.05))
            if readable:
                try:
                    peek = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    peek = b""
                if not peek:
                    self._disconnected()
                # Pipelined bytes from a keep-alive client are not a hang-up.
                time.sleep(max(deadline - time.monotonic(), 0))
                return

    def _start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self._common_headers()
        self.end_headers()
        self.wfile.flush()

    def _event(self, payload):
        """Write one SSE event as one HTTP chunk and flush it."""
        data = payload if isinstance(payload, str) else json.dumps(payload)
        raw = f"data: {data}\n\n".encode()
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
            self.wfile.flush()
        except _DISCONNECT_ERRORS:
            self._disconnected()
        self._events_sent += 1

    def _end_stream(self):
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except _DISCONNECT_ERRORS:
            self._disconnected()

    # ---- request handling ----------------------------------------------
    def _handle(self):
        self._t0 = time.monotonic()
        self._request_id = "req_" + uuid.uuid4().hex
        self._azure, self._model, self._events_sent = False, None, 0
        url = urlsplit(self.path)
        self._path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = self._read_body()
        body, bad_json = None, False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        self.fake._record({"method": self.command, "path": url.path, "query": query,
                           "headers": headers, "json": body})
        try:
            self._route(url.path, query, headers, body, bad_json)
        except _Abort:
            self.close_connection = True
        except _DISCONNECT_ERRORS:
            self.close_connection = True

    def _route(self, path, query, headers, body, bad_json):
        azure = _AZURE_PATH.match(path) if self.command == "POST" else None
        if azure:
            self._azure = True
            deployment, op = azure.groups()
            op = "chat" if op == "chat/completions" else op
            if "api-version" not in query:
                return self._json(404, _AZURE_404)
            key, bearer = headers.get("api-key"), headers.get("authorization", "")
            if key is not None:
                ok = key == self.fake.azure_key
            else:  # an Entra ID token: any non-empty bearer token is accepted
                ok = bearer.lower().startswith("bearer ") and bool(bearer[7:].strip())
            if not ok:
                return self._json(401, _AZURE_401)
            self._model = deployment
        else:
            op = _OPENAI_ROUTES.get((self.command, path))
            if op is None and self.command == "GET" and path.startswith("/v1/models/"):
                op = "model"
            if op is None:
                return self._json(404, openai_error(f"Invalid URL ({self.command} {path})"))
            # api_key=None plays a local server started without a key (vLLM without --api-key).
            if self.fake.basic_auth is not None:
                expected = "Basic " + base64.b64encode(":".join(self.fake.basic_auth).encode()).decode()
                if headers.get("authorization") != expected:
                    return self._send(401, b"<html><body><h1>401 Authorization Required</h1></body></html>",
                                      content_type="text/html", headers={"WWW-Authenticate": 'Basic realm="llm"'})
            elif self.fake.api_key is not None:
                auth = headers.get("authorization", "")
                token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
                if not token:
                    return self._json(401, openai_error(
                        "You didn't provide an API key. You need to provide your API key in an Authorization "
                        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API "
                        "key from https://platform.openai.com/account/api-keys."))
                if token != self.fake.api_key:
                    return self._json(401, _incorrect_key(token))
        if op == "models":
            return self._json(200, {"object": "list", "data": [self._model_obj(m) for m in self.fake.models]})
        if op == "model":
            name = path[len("/v1/models/"):]
            if name not in self.fake.models:
                return self._json(404, openai_error(f"The model '{name}' does not exist", param="model",
                                                    code="model_not_found"))
            return self._json(200, self._model_obj(name))
        if bad_json or not isinstance(body, dict):
            return self._json(400, _BAD_JSON)
        if not self._azure:
            self._model = body.get("model")
            if not isinstance(self._model, str) or not self._model:
                return self._json(400, openai_error("you must provide a model parameter"))
        seen_before = self.fake._count_request(self._model)
        failure = _failure(self._model) or _failure_on_demand(self._model, seen_before)
        if failure:
            status, payload, extra = failure
            return self._json(status, _AZURE_401 if status == 401 and self._azure else payload, extra)
        if self._model == "malformed":
            return self._send(200, b"not json at all")
        if self._model == "error-200":
            return self._json(200, openai_error("The upstream model crashed while answering.",
                                                type_="server_error", code="model_crashed"))
        if self._model == "slow":
            self._pause(self.fake.slow_seconds)
        if self._model == "hang":
            self._pause(self.fake.hang_seconds)
        if self._model == "reset":
            return self._reset_connection()
        return getattr(self, "_op_" + op)(body)

    def _reset_connection(self):
        """Drop the connection with a TCP RST: no status line, no headers, nothing."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        raise _Abort()

    @staticmethod
    def _model_obj(name):
        return {"id": name, "object": "model", "created": MODEL_CREATED, "owned_by": "openai"}

    # ---- operations -----------------------------------------------------
    def _op_chat(self, body):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._json(400, openai_error("Missing required parameter: 'messages'.", param="messages",
                                                code="missing_required_parameter"))
        n = int(body.get("n") or 1)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        prompt_tokens = sum(words(content_text(m.get("content"))) for m in messages if isinstance(m, dict))
        # OpenAI bills the tool and schema definitions it renders into the prompt too.
        prompt_tokens += sum(words(json.dumps(body[k])) for k in ("tools", "functions", "response_format")
                             if body.get(k))
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        last_user = content_text(users[-1].get("content")) if users else ""
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        tools = body.get("tools") or []
        wants_tool = (tools and last.get("role") == "user"
                      and "weather" in content_text(last.get("content")).lower())
        plans = []  # one (kind, payload, finish_reason) per choice
        for _ in range(n):
            if wants_tool:
                name = (tools[0].get("function") or {}).get("name", "tool")
                call = {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                        "function": {"name": name, "arguments": json.dumps({"location": "Paris"})}}
                plans.append(("tool", call, "tool_calls"))
            else:
                text, finish = _truncate(ANSWER_PREFIX + last_user, limit)
                plans.append(("text", text, finish))
        completion_tokens = sum(words(p["function"]["arguments"] if kind == "tool" else p)
                                for kind, p, _ in plans)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        base = {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "created": int(time.time()), "model": self._model,
                "system_fingerprint": SYSTEM_FINGERPRINT}
        if body.get("stream"):
            return self._stream_chat(body, base, plans, usage)
        choices = []
        for i, (kind, payload, finish) in enumerate(plans):
            message = {"role": "assistant", "content": None if kind == "tool" else payload, "refusal": None}
            if kind == "tool":
                message["tool_calls"] = [payload]
            choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": finish})
        answer = {**base, "object": "chat.completion", "choices": choices, "usage": usage}
        if self._model == "deep-answer":
            nested = "bottom"
            for _ in range(300):
                nested = {"n": nested}
            answer["extra"] = nested  # valid JSON, deeper than orjson will write again
        return self._json(200, answer)

    def _stream_chat(self, body, base, plans, usage):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(index, delta, finish=None):
            out = {**base, "object": "chat.completion.chunk",
                   "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:  # OpenAI sends "usage": null on every chunk but the last
                out["usage"] = None
            return out

        self._start_stream()
        for i, (kind, payload, finish) in enumerate(plans):
            if kind == "tool":
                args = payload["function"]["arguments"]
                first = {**payload, "index": 0, "function": {**payload["function"], "arguments": ""}}
                self._event(chunk(i, {"role": "assistant", "content": None, "tool_calls": [first]}))
                for start in range(0, len(args), 6):  # arguments arrive in several fragments
                    fragment = {"index": 0, "function": {"arguments": args[start:start + 6]}}
                    self._event(chunk(i, {"tool_calls": [fragment]}))
            else:
                self._event(chunk(i, {"role": "assistant", "content": ""}))
                if self._special_stream(lambda piece: chunk(i, {"content": piece})):
                    return
                for k, piece in enumerate(_pieces(payload)):
                    self._maybe_stall(k)
                    self._event(chunk(i, {"content": piece}))
            self._event(chunk(i, {}, finish))
        self._finish_stream(base, "chat.completion.chunk", usage, include_usage)

    def _special_stream(self, make_chunk) -> bool:
        """Handle the slow-stream / stream-error / cut-stream triggers; True if the stream is already over."""
        if self._model == "cut-stream":
            self._event(make_chunk("Hello "))
            self._event(make_chunk("from "))
            self._end_stream()
            return True
        if self._model == "stream-error":
            self._event(make_chunk("Hello "))
            self._event(make_chunk("from "))
            self._event(openai_error("upstream stream broke", type_="server_error"))
            self._end_stream()
            return True
        if self._model == "slow-stream":
            for k in range(self.fake.slow_stream_chunks):
                self._pause(self.fake.stream_interval)
                self._event(make_chunk(f"tick{k} "))
        return False

    def _maybe_stall(self, pieces_sent):
        """stall-stream: pause once, after the first STALL_AFTER_PIECES content chunks."""
        if self._model == "stall-stream" and pieces_sent == STALL_AFTER_PIECES:
            self._pause(self.fake.stall_seconds)

    def _finish_stream(self, base, obj, usage, include_usage):
        if include_usage:
            self._event({**base, "object": obj, "choices": [], "usage": usage})
        self._event("[DONE]")
        self._end_stream()

    def _op_completions(self, body):
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) else [prompt]
        prompts = [p if isinstance(p, str) else json.dumps(p) for p in prompts]
        n = int(body.get("n") or 1)
        texts = [_truncate(ANSWER_PREFIX + p, body.get("max_tokens")) for p in prompts for _ in range(n)]
        prompt_tokens = sum(words(p) for p in prompts)
        completion_tokens = sum(words(t) for t, _ in texts)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        base = {"id": "cmpl-" + uuid.uuid4().hex[:24], "created": int(time.time()), "model": self._model}
        if not body.get("stream"):
            choices = [{"text": t, "index": i, "logprobs": None, "finish_reason": f}
                       for i, (t, f) in enumerate(texts)]
            return self._json(200, {**base, "object": "text_completion", "choices": choices, "usage": usage})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(index, text, finish=None):
            out = {**base, "object": "text_completion",
                   "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                out["usage"] = None
            return out

        self._start_stream()
        for i, (text, finish) in enumerate(texts):
            if self._special_stream(lambda piece: chunk(i, piece)):
                return
            for k, piece in enumerate(_pieces(text)):
                self._maybe_stall(k)
                self._event(chunk(i, piece))
            self._event(chunk(i, "", finish))
        self._finish_stream(base, "text_completion", usage, include_usage)

    def _op_embeddings(self, body):
        inputs = _embedding_inputs(body.get("input"))
        if inputs is None:
            return self._json(400, openai_error(
                "'$.input' is invalid. Please check the API reference: "
                "https://platform.openai.com/docs/api-reference.", param="input"))
        dims = body.get("dimensions", DEFAULT_DIMENSIONS)
        if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
            return self._json(400, openai_error(f"Invalid value for 'dimensions': {dims!r}.",
                                                param="dimensions"))
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            return self._json(400, openai_error(f"Invalid value for 'encoding_format': {fmt!r}.",
                                                param="encoding_format"))
        data = []
        for i, item in enumerate(inputs):
            vec = fake_embedding(item, dims)
            if fmt == "base64":  # little-endian float32, as OpenAI sends it
                vec = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(words(x) if isinstance(x, str) else len(x) for x in inputs)
        return self._json(200, {"object": "list", "data": data, "model": self._model,
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _embedding_inputs(value):
    """Normalise ``input`` to a list of items (str or list of ints); None if invalid."""
    def is_tokens(x):
        return (isinstance(x, list) and bool(x)
                and all(isinstance(t, int) and not isinstance(t, bool) for t in x))

    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(x, str) for x in value):
            return value
        if is_tokens(value):
            return [value]
        if all(is_tokens(x) for x in value):
            return value
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # never wait for abandoned slow streams

    def handle_error(self, request, client_address):
        # Clients (and the gateway under test) drop keep-alive sockets all the time: not an error.
        if not isinstance(sys.exc_info()[1], _DISCONNECT_ERRORS):
            super().handle_error(request, client_address)


class FakeOpenAI:
    """Fake OpenAI + Azure OpenAI upstream serving on loopback in a daemon thread."""

    def __init__(self, api_key="sk-fake-upstream", azure_key="azure-fake-key", host="127.0.0.1", port=0,
                 basic_auth=None):
        self.api_key = api_key
        self.basic_auth = basic_auth
        self.azure_key = azure_key
        self.slow_seconds = 2.0
        self.stream_interval = 0.1
        self.slow_stream_chunks = 100
        self.hang_seconds = 30.0
        self.stall_seconds = 10.0
        self._counts: dict[str, int] = {}
        self.models = ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small"]
        self.requests: list[dict] = []
        self.disconnects: list[dict] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server((host, port), handler)
        self._thread = None
        self.host, self.port = self._server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"

    def start(self) -> "FakeOpenAI":
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving, end slow streams and close the listening socket."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def reset(self):
        """Forget recorded requests, disconnects and per-model counts (flaky-N / ratelimit-N start over)."""
        with self._cond:
            self.requests.clear()
            self.disconnects.clear()
            self._counts.clear()

    def count(self, model: str) -> int:
        """API requests that reached the fake for ``model`` (or Azure deployment) since the last reset."""
        with self._cond:
            return self._counts.get(model, 0)

    def _count_request(self, model: str) -> int:
        """Count one request for ``model``; returns how many came before it."""
        with self._cond:
            seen = self._counts.get(model, 0)
            self._counts[model] = seen + 1
            return seen

    def wait_for_disconnect(self, timeout: float, count: int = 1) -> bool:
        """Wait until at least ``count`` mid-response client disconnects were recorded."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.disconnects) >= count, timeout)

    def _record(self, request: dict):
        with self._cond:
            self.requests.append(request)

    def _record_disconnect(self, path, model, chunks_sent):
        # chunks_sent counts the SSE events that were written successfully.
        with self._cond:
            self.disconnects.append({"path": path, "model": model, "time": time.monotonic(),
                                     "chunks_sent": chunks_sent})
            self._cond.notify_all()
