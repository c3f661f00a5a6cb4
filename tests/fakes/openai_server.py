"""A fake OpenAI / Azure OpenAI upstream: a real HTTP/1.1 server on loopback.

It speaks the documented OpenAI wire format closely enough that the official
``openai`` SDK parses every answer, so gateway tests can point a provider at it
and check what the gateway sent (``FakeOpenAI.requests``) and how it behaves
when the upstream fails, is slow, or is abandoned mid-stream
(``FakeOpenAI.disconnects``).

Routes
    OpenAI: POST /v1/chat/completions, /v1/completions, /v1/embeddings;
            GET /v1/models, /v1/models/{id}.  Auth: ``Authorization: Bearer <api_key>``.
            Responses API: POST /v1/responses; GET /v1/responses/{id};
            DELETE /v1/responses/{id}; GET /v1/responses/{id}/input_items (?order=asc|desc, limit, after).
            Images, moderations, audio: POST /v1/images/generations, /v1/moderations,
            /v1/audio/transcriptions, /v1/audio/translations (multipart/form-data), /v1/audio/speech.
    Azure:  POST /openai/deployments/{deployment}/{chat/completions|completions|embeddings|
            images/generations|audio/transcriptions|audio/translations|audio/speech}
            with ``?api-version=``.  Auth: ``api-key: <azure_key>`` or any non-empty
            ``Authorization: Bearer`` token (Entra ID).  The deployment name plays
            the role of the model for the triggers below.
            Responses API: POST /openai/responses, GET|DELETE /openai/responses/{id},
            GET /openai/responses/{id}/input_items, same auth and ``?api-version=``; there the
            ``model`` of the body (the deployment name) plays the role of the model.

Responses API (``POST .../responses``)
    Validated like the API (OpenAI's 400 envelope naming the param): missing ``model`` / ``input``,
    unknown top-level fields (``unknown_parameter``), input items other than messages (role user,
    assistant, system, developer; content a string or input_text / input_image / input_file /
    output_text / refusal parts), ``function_call`` and ``function_call_output`` items, a
    ``function_call_output`` whose call_id no earlier ``function_call`` has, a function tool
    without ``name`` (e.g. a Chat Completions shaped tool).
    Answer: one ``message`` output item saying ``"Hello from fake upstream: <last user text>"``,
    or, when function tools are offered and the last input item is a user message mentioning
    "weather", one ``function_call`` item (the first function tool, arguments
    ``{"location": "Paris"}``).  ``max_output_tokens`` truncates (in words) to status "incomplete".
    Responses are kept in ``FakeOpenAI.responses`` unless ``store`` is false (``reset()`` clears
    them).  ``previous_response_id`` prepends that response's whole conversation (its earlier turns,
    input and output; not its instructions) and adds `` (turns: N)`` to the answer, N = the user
    messages of the whole conversation; an unknown id is a 404 ``previous_response_not_found``.
    ``stream``: ``event: <type>`` + ``data:`` SSE, ``sequence_number`` from 0, no ``[DONE]``:
    response.created, response.in_progress, then per item response.output_item.added,
    (message) response.content_part.added, response.output_text.delta (one per word),
    response.output_text.done, response.content_part.done / (function call)
    response.function_call_arguments.delta (6-character fragments), ...arguments.done, then
    response.output_item.done; last response.completed (response.incomplete when truncated).
    GET answers the stored response (no ``?stream=true`` replay); DELETE answers
    ``{"id", "object": "response", "deleted": true}``; input_items lists that request's own input
    items (with ids; a string input is one user message) newest first unless ``order=asc``.  An
    unknown or deleted id is a 404 ``Response with id '<id>' not found.``

Images (``POST .../images/generations``, JSON)
    {model (default dall-e-2; on Azure the deployment name, or the body's model, picks the family, default
    dall-e-3), prompt (required), n (1-10; dall-e-3 only 1), size, quality, response_format, style, user}.
    Sizes: dall-e-2 256x256 / 512x512 / 1024x1024; dall-e-3 1024x1024 / 1792x1024 / 1024x1792; gpt-image-*
    1024x1024 / 1536x1024 / 1024x1536 / auto.  A missing prompt, n out of range, a size or quality the model
    has not, a prompt over its length (1000 / 4000 / 32000) -> OpenAI's 400 envelope naming the param.
    DALL-E answer: ``{"created", "data": [{"url": "https://fake-images.example/<hex>.png"}] * n}`` or
    ``{"b64_json": FAKE_PNG_B64}`` (a valid 1x1 PNG) with ``response_format: b64_json``; dall-e-3 items also
    carry ``revised_prompt`` (= the prompt).  gpt-image-* (``gpt-image-1``...): always b64_json, and
    ``response_format`` is a 400 ``unknown_parameter`` as the live API answers; the answer adds background,
    output_format, quality, size and ``usage`` {input_tokens (prompt words), output_tokens
    (``GPT_IMAGE_OUTPUT_TOKENS[quality][size]`` per image; auto = medium / 1024x1024), total_tokens,
    input_tokens_details {text_tokens, image_tokens: 0}}.

Moderations (``POST /v1/moderations``, JSON)
    {input: string | [string] | [text / image_url parts], model (default omni-moderation-latest)}.  Answer
    ``{"id": "modr-<hex>", "model", "results"}``: one result per string (a list of parts is one result),
    each with every category of ``MODERATION_CATEGORIES`` in ``categories`` and ``category_scores``, and for
    omni-moderation-* models ``category_applied_input_types`` (text, and image for the image categories when
    an image part was sent).  Deterministic: flagged, with category ``violence`` (score ``FLAGGED_SCORE``), when
    a text contains the word "kill"; every other score is below 0.001.

Audio
    ``POST .../audio/transcriptions`` and ``.../audio/translations``: multipart/form-data (anything else is a
    400 "Invalid Content-Type header") with a ``file`` part and fields model (required on /v1), language,
    prompt, response_format (json | text | srt | verbose_json | vtt), temperature (0-1),
    timestamp_granularities[] (word, segment).  The file must be a RIFF/WAVE file: its duration comes from
    the header (``wav_duration``); anything else is a 400 "Invalid file format. Supported formats: [...]"
    (param ``file``).  Text: ``"Fake transcript of <duration:.2f> seconds"`` (translations: ``"Fake
    translation of ..."``).  json -> {"text", "usage": {"type": "duration", "seconds": ceil(duration)}};
    verbose_json -> {"task": "transcribe" | "translate", "language" ("english"; a transcription's
    ``language`` code spelled out), "duration" (exact float), "text", "segments" (one, unless only "word"
    granularity), "words" (transcriptions asking for "word"), "usage"}; text -> text/plain ``text + "\\n"``;
    srt / vtt -> the text as one cue from 0 to the duration.
    ``POST .../audio/speech``: JSON {model, input (required, at most 4096 characters), voice (required: a
    built-in name or {"id"}), response_format (mp3 default | opus | aac | flac | wav | pcm), speed
    (0.25-4)}; invalid values -> OpenAI's 400 envelope naming the param.  The answer is a chunked stream
    (``Transfer-Encoding: chunked``, Content-Type audio/mpeg, audio/opus, audio/aac, audio/flac, audio/wav,
    audio/pcm) of ``fake_speech(input, voice, format)``: ``speech_size(input)`` = 64 KiB per 100 characters,
    at least 16 KiB, in 8 KiB chunks (``speech_chunk_interval`` s apart, default 0); wav is a valid 24 kHz
    16-bit mono WAV header followed by silence.  slow-stream paces the chunks ``stream_interval`` s apart,
    stall-stream stalls ``stall_seconds`` after two chunks, cut-stream ends the body after two chunks.

Behaviour triggers (by model / deployment name)
    fail-400, fail-401, fail-403, fail-404, fail-429, fail-500, fail-503,
    context-length   -> the matching OpenAI error answer
    slow             -> answer after ``slow_seconds``
    slow-stream      -> one chunk every ``stream_interval`` s, ``slow_stream_chunks`` times
    stream-error     -> two content chunks, then an in-band ``{"error": ...}`` event (Responses API:
                        two output_text deltas, then an ``error`` event with code / message / param at
                        the top level as documented, plus the nested ``error`` object the live API sends)
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

Request records (``FakeOpenAI.requests``): method, path, query, headers (lower-cased) and json (the parsed
JSON body or None); a multipart request adds ``form`` (field -> value; a list for ``name[]`` or repeated
names) and ``files`` (name -> {"filename", "content_type", "size": byte length}), both None when the body
is not valid multipart; an ``/audio/speech`` answer adds ``audio`` {"bytes_total", "bytes_sent",
"chunks_sent", "completed"} (kept up to date while streaming).  A client hanging up mid-answer is recorded
in ``FakeOpenAI.disconnects`` as {path, model, time, chunks_sent} (SSE events or audio chunks written),
plus bytes_sent / bytes_total for an audio stream.

``count(model)`` is the number of API requests (chat, completions, embeddings, responses, images,
moderations, audio) that
reached the fake for a model / deployment name since the last ``reset()``, failures included (GET /
DELETE of a stored response are not counted).

The error and failure triggers (fail-*, context-length, flaky-N, ratelimit-N, slow, hang, reset, malformed,
error-200) apply to images, moderations and audio too (by the body's / form's model or the deployment).

All the triggers above apply to ``POST .../responses`` too (by its ``model``), except deep-answer;
slow-stream streams ``tick<k> `` deltas that are part of the answer text, stall-stream and
cut-stream act on the output_text deltas (cut-stream ends without response.completed).

Answers are deterministic: chat and responses say ``"Hello from fake upstream: <last user text>"``,
token counts are whitespace word counts, embeddings come from ``fake_embedding``, speech from ``fake_speech``.
Stdlib only.
"""
from __future__ import annotations

import base64
import email.message
import email.parser
import email.utils
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
import zlib
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
_AZURE_OPS = {
    "chat/completions": "chat", "completions": "completions", "embeddings": "embeddings",
    "images/generations": "images", "audio/transcriptions": "transcriptions",
    "audio/translations": "translations", "audio/speech": "speech",
}
_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/(" + "|".join(map(re.escape, _AZURE_OPS)) + r")$")
_OPENAI_ROUTES = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "completions",
    ("POST", "/v1/embeddings"): "embeddings",
    ("GET", "/v1/models"): "models",
    ("POST", "/v1/images/generations"): "images",
    ("POST", "/v1/moderations"): "moderations",
    ("POST", "/v1/audio/transcriptions"): "transcriptions",
    ("POST", "/v1/audio/translations"): "translations",
    ("POST", "/v1/audio/speech"): "speech",
}
_MULTIPART_OPS = ("transcriptions", "translations")
# ops whose ``model`` is optional: the API's default model
_DEFAULT_MODELS = {"images": "dall-e-2", "moderations": "omni-moderation-latest"}


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
        self.fake._record_disconnect(self._path, self._model, self._events_sent, **self._disconnect_extra)
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

    def _event(self, payload, event=None):
        """Write one SSE event as one HTTP chunk and flush it (with an ``event:`` line if ``event``)."""
        data = payload if isinstance(payload, str) else json.dumps(payload)
        raw = (f"event: {event}\n" if event else "").encode() + f"data: {data}\n\n".encode()
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
        record = {"method": self.command, "path": url.path, "query": query, "headers": headers, "json": body}
        # multipart/form-data (audio uploads): the fields and, per file, its name, type and byte length
        self._form, self._form_error = None, None
        content_type = headers.get("content-type", "")
        if content_type.lower().startswith("multipart/form-data"):
            try:
                fields, files = parse_multipart(raw, content_type)
            except ValueError as exc:
                self._form_error = str(exc)
                record["form"], record["files"] = None, None
            else:
                self._form = (fields, files)
                record["form"] = fields
                record["files"] = {name: {"filename": f["filename"], "content_type": f["content_type"],
                                          "size": len(f["data"])} for name, f in files.items()}
        self._record_entry = record
        self._disconnect_extra = {}
        self.fake._record(record)
        try:
            self._route(url.path, query, headers, body, bad_json)
        except _Abort:
            self.close_connection = True
        except _DISCONNECT_ERRORS:
            self.close_connection = True

    def _route(self, path, query, headers, body, bad_json):
        azure = _AZURE_PATH.match(path) if self.command == "POST" else None
        # Responses API: (azure?, op, response_id) for /v1/responses... and Azure's /openai/responses...
        responses = None if azure else _responses_route(self.command, path)
        if azure or (responses and responses[0]):
            self._azure = True
            if azure:
                deployment, op = azure.groups()
                op = _AZURE_OPS[op]
            else:
                deployment, op = None, responses[1]
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
            if op is None and responses:
                op = responses[1]
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
        if op in ("response_get", "response_delete", "response_input_items"):
            return getattr(self, "_op_" + op)(responses[2], query)
        if op in _MULTIPART_OPS:  # the form's fields play the body (``model`` included)
            if self._form is None:
                return self._json(400, _multipart_error(self.headers.get("Content-Type"), self._form_error))
            body, bad_json = self._form[0], False
        if bad_json or not isinstance(body, dict):
            return self._json(400, _BAD_JSON)
        if op == "responses":  # the model is in the body on Azure too (no deployment in the path)
            self._model = body.get("model")
            if not isinstance(self._model, str) or not self._model:
                return self._json(400, openai_error("Missing required parameter: 'model'.", param="model",
                                                    code="missing_required_parameter"))
        elif not self._azure:
            self._model = body.get("model")
            if self._model is None:
                self._model = _DEFAULT_MODELS.get(op)
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

    # ---- images -----------------------------------------------------------
    def _op_images(self, body):
        family = _image_family(self._model, self._azure, body.get("model"))
        prompt = body.get("prompt")
        if prompt is None:
            return self._json(400, _missing("prompt"))
        if not isinstance(prompt, str):
            return self._json(400, _invalid_type("prompt", "a string", prompt))
        if len(prompt) > _IMAGE_PROMPT_MAX[family]:
            return self._json(400, _too_long("prompt", _IMAGE_PROMPT_MAX[family], len(prompt)))
        n = body.get("n")
        n = 1 if n is None else n
        if not isinstance(n, int) or isinstance(n, bool):
            return self._json(400, _invalid_type("n", "an integer", n))
        if n < 1:
            return self._json(400, openai_error(
                f"Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} instead.",
                param="n", code="integer_below_min_value"))
        if n > 10:
            return self._json(400, openai_error(
                f"Invalid 'n': integer above maximum value. Expected a value <= 10, but got {n} instead.",
                param="n", code="integer_above_max_value"))
        if family == "dall-e-3" and n != 1:
            return self._json(400, openai_error("You must provide n=1 for this model.", param="n"))
        size = body.get("size")
        size = _IMAGE_SIZES[family][0] if size is None else size
        if size not in _IMAGE_SIZES[family]:
            return self._json(400, _invalid_value("size", size, _IMAGE_SIZES[family]))
        quality = body.get("quality")
        if quality is not None and quality not in _IMAGE_QUALITIES[family]:
            return self._json(400, _invalid_value("quality", quality, _IMAGE_QUALITIES[family]))
        style = body.get("style")
        if style is not None and style not in ("vivid", "natural"):
            return self._json(400, _invalid_value("style", style, ("vivid", "natural")))
        fmt = body.get("response_format")
        created = int(time.time())
        if family == "gpt-image":
            if fmt is not None:  # GPT image models always answer base64 and reject the parameter
                return self._json(400, openai_error("Unknown parameter: 'response_format'.",
                                                    param="response_format", code="unknown_parameter"))
            out_format = body.get("output_format") or "png"
            if out_format not in ("png", "jpeg", "webp"):
                return self._json(400, _invalid_value("output_format", out_format, ("png", "jpeg", "webp")))
            size = "1024x1024" if size == "auto" else size
            quality = "medium" if quality in (None, "auto") else quality
            input_tokens = words(prompt)
            output_tokens = GPT_IMAGE_OUTPUT_TOKENS[quality][size] * n
            background = body.get("background")
            return self._json(200, {
                "created": created,
                "background": "opaque" if background in (None, "auto") else background,
                "data": [{"b64_json": FAKE_PNG_B64} for _ in range(n)],
                "output_format": out_format, "quality": quality, "size": size,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                          "total_tokens": input_tokens + output_tokens,
                          "input_tokens_details": {"text_tokens": input_tokens, "image_tokens": 0}},
            })
        fmt = "url" if fmt is None else fmt
        if fmt not in ("url", "b64_json"):
            return self._json(400, _invalid_value("response_format", fmt, ("url", "b64_json")))
        data = []
        for _ in range(n):
            item = ({"url": f"https://fake-images.example/{uuid.uuid4().hex}.png"} if fmt == "url"
                    else {"b64_json": FAKE_PNG_B64})
            if family == "dall-e-3":  # only DALL-E 3 rewrites (and returns) the prompt
                item["revised_prompt"] = prompt
            data.append(item)
        return self._json(200, {"created": created, "data": data})

    # ---- moderations ------------------------------------------------------
    def _op_moderations(self, body):
        inputs, error = _moderation_inputs(body.get("input"))
        if error is not None:
            return self._json(400, error)
        omni = self._model.startswith("omni-moderation")
        results = [_moderation_result(texts, kinds, omni) for texts, kinds in inputs]
        return self._json(200, {"id": "modr-" + uuid.uuid4().hex, "model": self._model, "results": results})

    # ---- audio ------------------------------------------------------------
    def _op_transcriptions(self, body):
        return self._speech_to_text(body, "transcribe")

    def _op_translations(self, body):
        return self._speech_to_text(body, "translate")

    def _speech_to_text(self, fields, task):
        upload = self._form[1].get("file")
        if upload is None:
            if "file" in fields:  # sent as a plain field, not as a file part
                return self._json(400, openai_error(
                    "Invalid file format. Supported formats: " + _AUDIO_FORMATS, param="file"))
            return self._json(400, _missing("file"))
        fmt = fields.get("response_format") or "json"
        if fmt not in _TRANSCRIPT_FORMATS:
            return self._json(400, _invalid_value("response_format", fmt, _TRANSCRIPT_FORMATS))
        temperature = fields.get("temperature")
        try:
            temperature = float(temperature) if temperature not in (None, "") else 0.0
        except (TypeError, ValueError):
            return self._json(400, _invalid_type("temperature", "a number", temperature))
        if not 0 <= temperature <= 1:
            return self._json(400, openai_error(
                f"Invalid 'temperature': expected a value between 0 and 1, but got {temperature} instead.",
                param="temperature", code="invalid_value"))
        granularities = fields.get("timestamp_granularities[]", [])
        granularities = [granularities] if isinstance(granularities, str) else granularities
        for value in granularities:
            if value not in ("word", "segment"):
                return self._json(400, _invalid_value("timestamp_granularities[]", value, ("word", "segment")))
        duration = wav_duration(upload["data"])
        if duration is None:
            return self._json(400, openai_error("Invalid file format. Supported formats: " + _AUDIO_FORMATS,
                                                param="file"))
        noun = "transcript" if task == "transcribe" else "translation"
        text = f"Fake {noun} of {duration:.2f} seconds"
        usage = {"type": "duration", "seconds": math.ceil(duration)}
        plain = "text/plain; charset=utf-8"
        if fmt == "text":
            return self._send(200, (text + "\n").encode(), content_type=plain)
        if fmt == "srt":
            cue = f"1\n{_timestamp(0, ',')} --> {_timestamp(duration, ',')}\n{text}\n\n"
            return self._send(200, cue.encode(), content_type=plain)
        if fmt == "vtt":
            cue = f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(duration, '.')}\n{text}\n\n"
            return self._send(200, cue.encode(), content_type=plain)
        if fmt == "json":
            return self._json(200, {"text": text, "usage": usage})
        language = "english"
        if task == "transcribe" and isinstance(fields.get("language"), str):
            language = _LANGUAGES.get(fields["language"].lower(), fields["language"].lower())
        answer = {"task": task, "language": language, "duration": duration, "text": text}
        if "segment" in granularities or not granularities:
            answer["segments"] = [{
                "id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text,
                "tokens": [50364 + i for i in range(words(text))], "temperature": temperature,
                "avg_logprob": -0.25, "compression_ratio": 1.0, "no_speech_prob": 0.01}]
        if "word" in granularities and task == "transcribe":
            parts = text.split()
            step = duration / len(parts)
            answer["words"] = [{"word": w, "start": round(i * step, 3), "end": round((i + 1) * step, 3)}
                               for i, w in enumerate(parts)]
        answer["usage"] = usage
        return self._json(200, answer)

    def _op_speech(self, body):
        text = body.get("input")
        if text is None:
            return self._json(400, _missing("input"))
        if not isinstance(text, str):
            return self._json(400, _invalid_type("input", "a string", text))
        if len(text) > SPEECH_MAX_INPUT:
            return self._json(400, _too_long("input", SPEECH_MAX_INPUT, len(text)))
        voice = body.get("voice")
        if voice is None:
            return self._json(400, _missing("voice"))
        if isinstance(voice, dict):
            if not isinstance(voice.get("id"), str) or not voice["id"]:
                return self._json(400, _missing("voice.id"))
        elif voice not in SPEECH_VOICES:
            return self._json(400, _invalid_value("voice", voice, SPEECH_VOICES))
        fmt = body.get("response_format")
        fmt = "mp3" if fmt is None else fmt
        if fmt not in SPEECH_CONTENT_TYPES:
            return self._json(400, _invalid_value("response_format", fmt, tuple(SPEECH_CONTENT_TYPES)))
        speed = body.get("speed")
        if speed is not None:
            if not isinstance(speed, (int, float)) or isinstance(speed, bool):
                return self._json(400, _invalid_type("speed", "a number", speed))
            if speed < 0.25:
                return self._json(400, openai_error(
                    f"Invalid 'speed': decimal below minimum value. Expected a value >= 0.25, but got {speed} "
                    "instead.", param="speed", code="decimal_below_min_value"))
            if speed > 4.0:
                return self._json(400, openai_error(
                    f"Invalid 'speed': decimal above maximum value. Expected a value <= 4, but got {speed} "
                    "instead.", param="speed", code="decimal_above_max_value"))
        audio = fake_speech(text, voice["id"] if isinstance(voice, dict) else voice, fmt)
        stats = {"bytes_total": len(audio), "bytes_sent": 0}
        self._disconnect_extra = stats  # what a hang-up mid-stream records besides chunks_sent
        self.fake._update_record(self._record_entry, audio={**stats, "chunks_sent": 0, "completed": False})
        self.send_response(200)
        self.send_header("Content-Type", SPEECH_CONTENT_TYPES[fmt])
        self.send_header("Transfer-Encoding", "chunked")
        self._common_headers()
        self.end_headers()
        self.wfile.flush()
        for k, start in enumerate(range(0, len(audio), SPEECH_CHUNK)):
            if k:
                if self._model == "slow-stream":
                    self._pause(self.fake.stream_interval)
                elif self.fake.speech_chunk_interval:
                    self._pause(self.fake.speech_chunk_interval)
            if k == STALL_AFTER_PIECES and self._model in ("stall-stream", "cut-stream"):
                if self._model == "cut-stream":
                    return self._end_stream()
                self._pause(self.fake.stall_seconds)
            chunk = audio[start:start + SPEECH_CHUNK]
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            except _DISCONNECT_ERRORS:
                self._disconnected()
            self._events_sent += 1
            stats["bytes_sent"] += len(chunk)
            self.fake._update_record(self._record_entry, audio={**stats, "chunks_sent": self._events_sent,
                                                                "completed": False})
        # marked complete before the last chunk goes out, so a client that has read it all sees it
        self.fake._update_record(self._record_entry, audio={**stats, "chunks_sent": self._events_sent,
                                                            "completed": True})
        try:
            self._end_stream()
        except _ClientGone:
            self.fake._update_record(self._record_entry, audio={**stats, "chunks_sent": self._events_sent,
                                                                "completed": False})
            raise

    # ---- Responses API --------------------------------------------------
    def _op_responses(self, body):
        unknown = sorted(k for k in body if k not in _RESPONSES_PARAMS)
        if unknown:
            return self._json(400, openai_error(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0],
                                                code="unknown_parameter"))
        if body.get("input") is None:
            return self._json(400, _missing("input"))
        limit = body.get("max_output_tokens")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            return self._json(400, _invalid_type("max_output_tokens", "an integer", limit))
        items, error = _normalise_input(body["input"])
        if error is None:
            tools, error = _normalise_tools(body.get("tools"))
        if error is not None:
            return self._json(400, error)
        previous_id = body.get("previous_response_id")
        history = []
        if previous_id is not None:
            history = self.fake._response_conversation(previous_id)
            if history is None:
                return self._json(404, openai_error(f"Previous response with id '{previous_id}' not found.",
                                                    param="previous_response_id",
                                                    code="previous_response_not_found"))
        conversation = history + items
        known_calls = set()
        for item in conversation:
            if item["type"] == "function_call":
                known_calls.add(item["call_id"])
            elif item["type"] == "function_call_output" and item["call_id"] not in known_calls:
                return self._json(400, openai_error(
                    f"No tool call found for function call output with call_id {item['call_id']}.", param="input"))

        users = [it for it in conversation if it["type"] == "message" and it["role"] == "user"]
        last_user = content_text(users[-1]["content"]) if users else ""
        last = conversation[-1]
        functions = [t for t in tools if t["type"] == "function"]
        wants_tool = (functions and last["type"] == "message" and last["role"] == "user"
                      and "weather" in content_text(last["content"]).lower())
        streaming = bool(body.get("stream"))
        status = "completed"
        if wants_tool:
            output = [{"id": _new_id("fc_"), "type": "function_call", "status": "completed",
                       "arguments": json.dumps({"location": "Paris"}), "call_id": "call_" + uuid.uuid4().hex[:24],
                       "name": functions[0]["name"]}]
            output_tokens = words(output[0]["arguments"])
        else:
            answer = ANSWER_PREFIX + last_user
            if previous_id is not None:
                answer += f" (turns: {len(users)})"
            if streaming and self._model == "slow-stream":  # the ticks are part of the streamed answer
                answer = "".join(f"tick{k} " for k in range(self.fake.slow_stream_chunks)) + answer
            text, finish = _truncate(answer, body.get("max_output_tokens"))
            if finish == "length":
                status = "incomplete"
            output = [{"id": _new_id("msg_"), "type": "message", "status": status, "role": "assistant",
                       "content": [{"type": "output_text", "text": text, "annotations": []}]}]
            output_tokens = words(text)
        input_tokens = sum(words(_item_text(it)) for it in conversation)
        input_tokens += words(body["instructions"]) if isinstance(body.get("instructions"), str) else 0
        input_tokens += words(json.dumps(body["tools"])) if body.get("tools") else 0
        text_config = body.get("text") if isinstance(body.get("text"), dict) else {}
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        store = body.get("store") is not False
        response = {
            "id": _new_id("resp_"), "object": "response", "created_at": int(time.time()), "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": self._model, "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": previous_id,
            "reasoning": {"effort": None, "summary": None, **reasoning},
            "store": store,
            "temperature": body["temperature"] if body.get("temperature") is not None else 1.0,
            "text": {"format": {"type": "text"}, **text_config},
            "tool_choice": body["tool_choice"] if body.get("tool_choice") is not None else "auto",
            "tools": tools,
            "top_p": body["top_p"] if body.get("top_p") is not None else 1.0,
            "truncation": body.get("truncation") or "disabled",
            "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": input_tokens + output_tokens},
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

        def keep():
            if store:
                self.fake._store_response(response, items, conversation + output)

        if streaming:
            return self._stream_response(response, keep)
        keep()
        return self._json(200, response)

    def _stream_response(self, response, keep):
        """Stream a response as the Responses API does: ``event: <type>`` SSE, a ``sequence_number`` on each."""
        seq = 0

        def emit(type_, **fields):
            nonlocal seq
            self._event({"type": type_, **fields, "sequence_number": seq}, event=type_)
            seq += 1

        self._start_stream()
        pending = {**response, "status": "in_progress", "incomplete_details": None, "output": [], "usage": None}
        emit("response.created", response=pending)
        emit("response.in_progress", response=pending)
        for index, item in enumerate(response["output"]):
            ids = {"item_id": item["id"], "output_index": index}
            if item["type"] == "function_call":
                emit("response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "arguments": ""})
                args = item["arguments"]
                for start in range(0, len(args), _ARGUMENT_PIECE):
                    emit("response.function_call_arguments.delta", **ids, delta=args[start:start + _ARGUMENT_PIECE])
                emit("response.function_call_arguments.done", **ids, name=item["name"], arguments=args)
                emit("response.output_item.done", output_index=index, item=item)
                continue
            part = item["content"][0]
            emit("response.output_item.added", output_index=index,
                 item={**item, "status": "in_progress", "content": []})
            emit("response.content_part.added", **ids, content_index=0, part={**part, "text": ""})
            if self._model in ("cut-stream", "stream-error"):
                for piece in ("Hello ", "from "):
                    emit("response.output_text.delta", **ids, content_index=0, delta=piece, logprobs=[])
                if self._model == "stream-error":
                    # Flat fields as the API reference documents them, plus the nested "error" object the
                    # live API sends (which is what makes the openai SDK raise an APIError).
                    error = {"type": "server_error", "code": "server_error", "message": "upstream stream broke",
                             "param": None}
                    emit("error", code=error["code"], message=error["message"], param=None, error=error)
                return self._end_stream()
            for k, piece in enumerate(_pieces(part["text"])):
                if self._model == "slow-stream" and k < self.fake.slow_stream_chunks:
                    self._pause(self.fake.stream_interval)
                self._maybe_stall(k)
                emit("response.output_text.delta", **ids, content_index=0, delta=piece, logprobs=[])
            emit("response.output_text.done", **ids, content_index=0, text=part["text"], logprobs=[])
            emit("response.content_part.done", **ids, content_index=0, part=part)
            emit("response.output_item.done", output_index=index, item=item)
        keep()
        emit("response.completed" if response["status"] == "completed" else "response.incomplete",
             response=response)
        self._end_stream()

    def _unknown_response(self, response_id):
        return self._json(404, openai_error(f"Response with id '{response_id}' not found."))

    def _op_response_get(self, response_id, query):
        response = self.fake._stored_response(response_id)
        if response is None:
            return self._unknown_response(response_id)
        return self._json(200, response)

    def _op_response_delete(self, response_id, query):
        if not self.fake._delete_response(response_id):
            return self._unknown_response(response_id)
        return self._json(200, {"id": response_id, "object": "response", "deleted": True})

    def _op_response_input_items(self, response_id, query):
        items = self.fake._response_input_items(response_id)
        if items is None:
            return self._unknown_response(response_id)
        order = query.get("order") or "desc"
        if order not in ("asc", "desc"):
            return self._json(400, _invalid_value("order", order, ("asc", "desc")))
        try:
            limit = int(query.get("limit") or 20)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return self._json(400, openai_error(
                f"Invalid 'limit': expected an integer between 1 and 100, but got {query.get('limit')!r} instead.",
                param="limit", code="invalid_value"))
        if order == "desc":
            items = items[::-1]
        after = query.get("after")
        if after:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items[:limit]
        return self._json(200, {"object": "list", "data": page,
                                "first_id": page[0]["id"] if page else None,
                                "last_id": page[-1]["id"] if page else None,
                                "has_more": len(items) > limit})


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


# ---- images, moderations and audio helpers ---------------------------------------

def _png(width: int = 1, height: int = 1) -> bytes:
    """A tiny valid PNG (8-bit RGBA, every pixel opaque red)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xff\x00\x00\xff" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


FAKE_PNG = _png()
FAKE_PNG_B64 = base64.b64encode(FAKE_PNG).decode()
# Image sizes per model family; the first one is the default.
_IMAGE_SIZES = {
    "dall-e-2": ("1024x1024", "256x256", "512x512"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image": ("auto", "1024x1024", "1536x1024", "1024x1536"),
}
_IMAGE_QUALITIES = {
    "dall-e-2": ("standard",),
    "dall-e-3": ("standard", "hd"),
    "gpt-image": ("auto", "low", "medium", "high"),
}
_IMAGE_PROMPT_MAX = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image": 32000}
# gpt-image-1 image output tokens per image, by quality and size (OpenAI's pricing table).
GPT_IMAGE_OUTPUT_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}

MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
# categories the omni models also score images for (the others are text only)
_IMAGE_CATEGORIES = frozenset({"self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "violence",
                               "violence/graphic"})
_FLAG_WORD = re.compile(r"\bkill\b", re.IGNORECASE)
FLAGGED_SCORE = 0.9731

_AUDIO_FORMATS = "['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']"
_TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_LANGUAGES = {"en": "english", "fr": "french", "de": "german", "es": "spanish", "it": "italian",
              "pt": "portuguese", "nl": "dutch", "ja": "japanese", "zh": "chinese", "ru": "russian"}

SPEECH_MAX_INPUT = 4096
SPEECH_CHUNK = 8 * 1024  # bytes per HTTP chunk of /audio/speech
SPEECH_MIN_BYTES = 16 * 1024
SPEECH_BYTES_PER_100_CHARS = 64 * 1024
SPEECH_SAMPLE_RATE = 24000  # wav / pcm: 24 kHz, 16-bit, mono, as OpenAI's TTS answers
SPEECH_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")
SPEECH_CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
                        "wav": "audio/wav", "pcm": "audio/pcm"}
_SPEECH_MAGIC = {"mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00", "opus": b"OggS\x00\x02", "aac": b"\xff\xf1",
                 "flac": b"fLaC", "pcm": b""}


def _image_family(model: str, azure: bool, body_model=None) -> str:
    """dall-e-2 / dall-e-3 / gpt-image for a model (on Azure: the deployment name, else the body's model)."""
    for name in (model, body_model):
        if isinstance(name, str):
            if name.startswith(("gpt-image", "chatgpt-image")):
                return "gpt-image"
            if "dall-e-3" in name:
                return "dall-e-3"
            if "dall-e-2" in name:
                return "dall-e-2"
    return "dall-e-3" if azure else "dall-e-2"


def _too_long(param: str, maximum: int, length: int) -> dict:
    return openai_error(f"Invalid '{param}': string too long. Expected a string with maximum length {maximum}, "
                        f"but got a string with length {length} instead.", param=param,
                        code="string_above_max_length")


def _moderation_inputs(value):
    """Moderation ``input`` as a list of (texts, input kinds) per result; or (None, error body).

    A string or each string of a list is one result; a list of text / image_url parts is one result.
    """
    if value is None:
        return None, _missing("input")
    if isinstance(value, str):
        return [([value], {"text"})], None
    if not isinstance(value, list):
        return None, _invalid_type("input", "one of a string, an array of strings or an array of objects", value)
    if not value:
        return None, openai_error("Invalid 'input': empty array. Expected an array with minimum length 1, but got "
                                  "an empty array instead.", param="input", code="empty_array")
    if all(isinstance(x, str) for x in value):
        return [([x], {"text"}) for x in value], None
    texts, kinds = [], set()
    for i, part in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(part, dict):
            return None, _invalid_type(where, "an object", part)
        if part.get("type") not in ("text", "image_url"):
            return None, _invalid_value(f"{where}.type", part.get("type"), ("text", "image_url"))
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                return None, _missing(f"{where}.text")
            texts.append(part["text"])
            kinds.add("text")
        else:
            url = part.get("image_url")
            if not isinstance(url, dict) or not isinstance(url.get("url"), str):
                return None, _missing(f"{where}.image_url.url")
            kinds.add("image")
    return [(texts, kinds)], None


def _moderation_result(texts, kinds, omni: bool) -> dict:
    """One deterministic moderation result: violence is flagged when a text says "kill"."""
    text = "\n".join(texts)
    flagged = bool(_FLAG_WORD.search(text))
    seed = hashlib.sha256(text.encode()).digest()
    scores = {c: round(seed[i] / 255 * 1e-3, 8) for i, c in enumerate(MODERATION_CATEGORIES)}
    if flagged:
        scores["violence"] = FLAGGED_SCORE
    result = {"flagged": flagged,
              "categories": {c: flagged and c == "violence" for c in MODERATION_CATEGORIES},
              "category_scores": scores}
    if omni:
        result["category_applied_input_types"] = {
            c: [k for k in ("text", "image") if k in kinds and (k == "text" or c in _IMAGE_CATEGORIES)]
            for c in MODERATION_CATEGORIES}
    return result


def parse_multipart(raw: bytes, content_type: str):
    """Parse a multipart/form-data body (by hand, stdlib only).

    Returns ``(fields, files)``: fields maps a name to its value (str), or to a list of values when the
    name ends with ``[]`` or repeats; files maps a name to {"filename", "content_type", "data"}.
    Raises ValueError on a body that is not valid multipart.
    """
    header = email.message.Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise ValueError("no multipart boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    pieces = (b"\r\n" + raw).split(delimiter)
    if len(pieces) < 3 or not pieces[-1].startswith(b"--"):
        raise ValueError("no closing multipart boundary")
    fields, files = {}, {}
    for piece in pieces[1:-1]:
        line_end = piece.find(b"\r\n")
        if line_end < 0 or piece[:line_end].strip(b" \t"):
            raise ValueError("malformed multipart boundary line")
        piece = piece[line_end + 2:]
        if piece.startswith(b"\r\n"):
            head, content = b"", piece[2:]
        else:
            head, sep, content = piece.partition(b"\r\n\r\n")
            if not sep:
                raise ValueError("multipart part without a header end")
        part = email.parser.BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        name = part.get_param("name", header="content-disposition")
        if name is None:
            raise ValueError("multipart part without a name")
        name = email.utils.collapse_rfc2231_value(name)
        filename = part.get_filename()
        if filename is not None:
            files[name] = {"filename": filename,
                           "content_type": part.get("Content-Type"), "data": content}
            continue
        value = content.decode("utf-8", "replace")
        if name.endswith("[]"):
            fields.setdefault(name, []).append(value)
        elif name in fields:
            previous = fields[name]
            fields[name] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            fields[name] = value
    return fields, files


def _multipart_error(content_type, problem) -> dict:
    if problem is None:
        return openai_error(f"Invalid Content-Type header ({content_type}), expected multipart/form-data. (HINT: "
                            "If you're using curl, you can pass -H 'Content-Type: multipart/form-data')")
    return openai_error(f"Could not parse multipart form: {problem}.")


def wav_duration(data: bytes):
    """Duration in seconds of a RIFF/WAVE file from its header (fmt + data chunks), or None if it is not one.

    The data chunk's declared size is capped at the bytes actually present (streamed WAVs declare more).
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if tag == b"fmt ":
            if size < 16 or body + 16 > len(data):
                return None
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body:body + 16])
            if not channels or not rate or not bits:
                return None
            fmt = (channels, rate, bits)
        elif tag == b"data":
            if fmt is None:
                return None
            channels, rate, bits = fmt
            frame = channels * ((bits + 7) // 8)
            return min(size, len(data) - body) // frame / rate
        pos = body + size + (size & 1)  # chunks are padded to an even size
    return None


def wav_bytes(seconds: float, rate: int = 16000, channels: int = 1, bits: int = 16) -> bytes:
    """A silent PCM WAV file of ``seconds`` (for tests that post audio without the ``wave`` module)."""
    frame = channels * bits // 8
    data = b"\x00" * (int(seconds * rate) * frame)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * frame, frame, bits)
            + b"data" + struct.pack("<I", len(data)) + data)


def speech_size(text: str) -> int:
    """Bytes of fake speech for an input: 64 KiB per 100 characters, at least 16 KiB (even, for 16-bit PCM)."""
    return max(SPEECH_MIN_BYTES, len(text) * SPEECH_BYTES_PER_100_CHARS // 100) // 2 * 2


def fake_speech(text: str, voice: str = "alloy", response_format: str = "mp3") -> bytes:
    """The deterministic audio ``/audio/speech`` answers: ``speech_size(text)`` bytes.

    wav: a valid 24 kHz 16-bit mono WAV header then silence; the other formats: the format's magic
    bytes then pseudo-random bytes derived from (voice, format, input).
    """
    size = speech_size(text)
    if response_format == "wav":
        data = size - 44
        return (b"RIFF" + struct.pack("<I", size - 8) + b"WAVE"
                + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, SPEECH_SAMPLE_RATE, SPEECH_SAMPLE_RATE * 2, 2, 16)
                + b"data" + struct.pack("<I", data) + b"\x00" * data)
    magic = _SPEECH_MAGIC.get(response_format, b"")
    seed = f"{voice}\x00{response_format}\x00{text}".encode()
    return magic + hashlib.shake_256(seed).digest(size - len(magic))


def _timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS,mmm (srt) or HH:MM:SS.mmm (vtt)."""
    millis = int(round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


# ---- Responses API helpers ----------------------------------------------------

_RESPONSES_PATH = re.compile(r"^/(v1|openai)/responses(?:/([^/]+)(/input_items)?)?$")
_RESPONSES_PARAMS = frozenset({
    # what the gateway is expected to send
    "model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature", "top_p",
    "stream", "store", "metadata", "previous_response_id", "text", "reasoning", "parallel_tool_calls", "user",
    "truncation", "include",
    # accepted (and ignored) because the real API knows them too: they are not "unknown parameters"
    "background", "conversation", "max_tool_calls", "prompt", "prompt_cache_key", "prompt_cache_retention",
    "safety_identifier", "service_tier", "stream_options", "top_logprobs",
})
_INPUT_ITEM_TYPES = ("message", "function_call", "function_call_output")
_INPUT_ROLES = ("user", "assistant", "system", "developer")
_INPUT_PART_TYPES = ("input_text", "input_image", "input_file", "output_text", "refusal")
_ARGUMENT_PIECE = 6  # streamed function-call arguments arrive in fragments of this many characters


def _responses_route(method: str, path: str):
    """(azure?, op, response_id) for a Responses API path and method, else None."""
    match = _RESPONSES_PATH.match(path)
    if not match:
        return None
    prefix, response_id, input_items = match.groups()
    if response_id is None:
        op = "responses" if method == "POST" else None
    elif input_items:
        op = "response_input_items" if method == "GET" else None
    else:
        op = {"GET": "response_get", "DELETE": "response_delete"}.get(method)
    return (prefix == "openai", op, response_id) if op else None


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _json_type(value) -> str:
    """JSON type name of a value, as OpenAI's validation messages spell it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def _supported(values) -> str:
    quoted = [f"'{v}'" for v in values]
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _missing(param: str) -> dict:
    return openai_error(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _invalid_type(param: str, expected: str, value) -> dict:
    return openai_error(f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
                        param=param, code="invalid_type")


def _invalid_value(param: str, value, supported) -> dict:
    return openai_error(f"Invalid value: '{value}'. Supported values are: {_supported(supported)}.",
                        param=param, code="invalid_value")


def _item_text(item: dict) -> str:
    """The text a conversation item contributes to the prompt (for the word-count usage)."""
    if item["type"] == "message":
        return content_text(item["content"])
    if item["type"] == "function_call":
        return item["arguments"]
    output = item["output"]
    return output if isinstance(output, str) else json.dumps(output)


def _normalise_input(value):
    """Validate a Responses ``input``; return (items, None) or (None, error body).

    Items come back as the API lists them (``input_items``): with an id and a status, message
    content as a list of parts (a string becomes one ``input_text`` / ``output_text`` part).
    """
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    elif not isinstance(value, list):
        return None, _invalid_type("input", "one of a string or an array of input items", value)
    if not value:
        return None, openai_error("Invalid 'input': empty array. Expected an array with minimum length 1, "
                                  "but got an empty array instead.", param="input", code="empty_array")
    items = []
    for i, raw in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(raw, dict):
            return None, _invalid_type(where, "an input item object", raw)
        kind = raw.get("type", "message" if "role" in raw else None)
        if kind is None:
            return None, _missing(f"{where}.type")
        if kind not in _INPUT_ITEM_TYPES:
            return None, _invalid_value(f"{where}.type", kind, _INPUT_ITEM_TYPES)
        if kind == "message":
            role, content = raw.get("role"), raw.get("content")
            if role is None:
                return None, _missing(f"{where}.role")
            if role not in _INPUT_ROLES:
                return None, _invalid_value(f"{where}.role", role, _INPUT_ROLES)
            if content is None:
                return None, _missing(f"{where}.content")
            if isinstance(content, str):
                content = ([{"type": "output_text", "text": content, "annotations": []}] if role == "assistant"
                           else [{"type": "input_text", "text": content}])
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if not isinstance(part, dict):
                        return None, _invalid_type(f"{where}.content[{j}]", "an object", part)
                    if part.get("type") not in _INPUT_PART_TYPES:
                        return None, _invalid_value(f"{where}.content[{j}].type", part.get("type"),
                                                    _INPUT_PART_TYPES)
                    if part["type"] in ("input_text", "output_text") and not isinstance(part.get("text"), str):
                        return None, _missing(f"{where}.content[{j}].text")
            else:
                return None, _invalid_type(f"{where}.content", "one of a string or an array of content parts",
                                           content)
            items.append({"id": raw.get("id") or _new_id("msg_"), "type": "message", "role": role,
                          "content": content, "status": raw.get("status") or "completed"})
        else:
            needed = ("call_id", "name", "arguments") if kind == "function_call" else ("call_id", "output")
            for field in needed:
                if field not in raw:
                    return None, _missing(f"{where}.{field}")
            if kind == "function_call":
                for field in needed:
                    if not isinstance(raw[field], str):
                        return None, _invalid_type(f"{where}.{field}", "a string", raw[field])
                items.append({"id": raw.get("id") or _new_id("fc_"), "type": "function_call",
                              "status": raw.get("status") or "completed", "arguments": raw["arguments"],
                              "call_id": raw["call_id"], "name": raw["name"]})
            else:
                if not isinstance(raw["output"], (str, list)):
                    return None, _invalid_type(f"{where}.output", "one of a string or an array of content parts",
                                               raw["output"])
                items.append({"id": raw.get("id") or _new_id("fco_"), "type": "function_call_output",
                              "call_id": raw["call_id"], "output": raw["output"],
                              "status": raw.get("status") or "completed"})
    return items, None


def _normalise_tools(value):
    """Validate Responses ``tools``; return (tools as the API echoes them, None) or (None, error body)."""
    if value is None:
        return [], None
    if not isinstance(value, list):
        return None, _invalid_type("tools", "an array of tools", value)
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            return None, _invalid_type(f"tools[{i}]", "an object", tool)
        if "type" not in tool:
            return None, _missing(f"tools[{i}].type")
        if tool["type"] == "function":
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                return None, _missing(f"tools[{i}].name")  # e.g. a Chat Completions tool {"function": {...}}
            tools.append({"type": "function", "name": tool["name"], "description": tool.get("description"),
                          "parameters": tool.get("parameters"), "strict": tool.get("strict", True)})
        else:
            tools.append(dict(tool))
    return tools, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # never wait for abandoned slow streams
    request_queue_size = 128  # the listen backlog: 64 callers' first connections arrive together

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
        self.speech_chunk_interval = 0.0  # /audio/speech: pause between audio chunks (0: none)
        self._counts: dict[str, int] = {}
        self.models = ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small"]
        self.requests: list[dict] = []
        self.disconnects: list[dict] = []
        self.responses: dict[str, dict] = {}  # stored Responses API objects by id (store defaults to true)
        self._response_items: dict[str, tuple[list, list]] = {}  # id -> (its input items, whole conversation)
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
        """Forget recorded requests, disconnects, per-model counts (flaky-N / ratelimit-N start over)
        and stored responses."""
        with self._cond:
            self.requests.clear()
            self.disconnects.clear()
            self._counts.clear()
            self.responses.clear()
            self._response_items.clear()

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

    def _store_response(self, response: dict, input_items: list, conversation: list):
        with self._cond:
            self.responses[response["id"]] = response
            self._response_items[response["id"]] = (input_items, conversation)

    def _stored_response(self, response_id: str):
        with self._cond:
            return self.responses.get(response_id)

    def _delete_response(self, response_id: str) -> bool:
        with self._cond:
            self._response_items.pop(response_id, None)
            return self.responses.pop(response_id, None) is not None

    def _response_input_items(self, response_id: str):
        """The input items of a stored response (oldest first), or None."""
        with self._cond:
            stored = self._response_items.get(response_id)
            return list(stored[0]) if stored else None

    def _response_conversation(self, response_id: str):
        """Every item of a stored response's conversation (earlier turns, its input, its output), or None."""
        with self._cond:
            stored = self._response_items.get(response_id)
            return list(stored[1]) if stored else None

    def _record(self, request: dict):
        with self._cond:
            self.requests.append(request)

    def _record_disconnect(self, path, model, chunks_sent, **extra):
        # chunks_sent counts the SSE events (audio: the HTTP chunks) that were written successfully;
        # extra: bytes_sent / bytes_total for an audio stream.
        with self._cond:
            self.disconnects.append({"path": path, "model": model, "time": time.monotonic(),
                                     "chunks_sent": chunks_sent, **extra})
            self._cond.notify_all()

    def _update_record(self, record: dict, **fields):
        with self._cond:
            record.update(fields)
