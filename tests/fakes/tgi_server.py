"""A fake Hugging Face text-generation-inference (TGI) + text-embeddings-inference (TEI) server.

Speaks TGI's documented wire format closely enough that `huggingface_hub.InferenceClient` parses
every answer and raises its typed errors:

    POST /                     compat route: {"inputs", "parameters", "stream"} -> [answer] or SSE
    POST /generate             {"inputs", "parameters"} -> {"generated_text", "details"}
    POST /generate_stream      SSE: data: {"index", "token", "top_tokens", "generated_text", "details"}
    POST /v1/chat/completions  the Messages API (OpenAI-style, TGI 3.x shapes), stream or not
    POST /embed                TEI: {"inputs": str | [str]} -> [[float, ...], ...]
    GET  /health, /info

Errors are TGI's `{"error", "error_type"}` (422 validation, 424 generation, 429 overloaded); as in
TGI, errors found once a stream is under way arrive as a `data: {"error", ...}` event after a 200.
The fake tokenizer counts whitespace-separated words; the model allows MAX_INPUT_TOKENS input
tokens and MAX_TOTAL_TOKENS input + new tokens.

Answers are deterministic: /generate says `generate_answer(inputs)`; chat says
`"Hello from fake TGI chat: <last user text>"`, calls the first offered tool with
`{"location": "Paris"}` when the last user message mentions "weather", and answers
`"Tool said: <content>"` after a tool result. `legacy_tools = True` switches tool calls to TGI 2.x's
shapes (object arguments, id "0", one streamed `tool_calls` object carrying raw
`{"function": {"_name": ...}}` text). Triggers (anywhere in the prompt / last user message):
TRIGGER_OVERLOADED, TRIGGER_RATE_LIMIT (hosted 429 with Retry-After), TRIGGER_LOADING (hosted 503),
TRIGGER_GENERATION_ERROR (424), TRIGGER_STREAM_ERROR (an error event after two tokens),
TRIGGER_CUT_STREAM (a stream whose body ends after two tokens, without its final event),
TRIGGER_ECHO_AUTH (a 500 whose message repeats the Authorization header: a key-scrubbing check).
"""

import hashlib
import json
import re
import struct
import time

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

MODEL_ID = "fake-org/fake-model"
FINGERPRINT = "3.2.3-sha-fake"
MAX_INPUT_TOKENS = 1024
MAX_TOTAL_TOKENS = 2048
MAX_BEST_OF = 2
MAX_STOP_SEQUENCES = 4
DEFAULT_MAX_NEW_TOKENS = 100
EMBED_DIMENSIONS = 8
EMBED_MAX_TOKENS = 512
CHAT_PREFIX = "Hello from fake TGI chat: "
JSON_ANSWER = '{"answer": "Hello from fake TGI"}'


def generate_answer(inputs):
    """What /generate answers for a prompt."""
    return f"Hello from fake TGI! Your prompt had {len(inputs.split())} words."


def pieces(text):
    """The fake's tokens: each word with the whitespace before it."""
    return re.findall(r"\s*\S+", text)


def fake_embedding(text, dimensions=EMBED_DIMENSIONS):
    """A deterministic unit vector, rounded to float32 so every encoding carries the same numbers."""
    raw = b"".join(hashlib.sha256(f"{i}:{text}".encode()).digest() for i in range(dimensions // 8 + 1))
    values = [v / 2**31 - 1.0 for v in struct.unpack(f"<{dimensions}I", raw[:4 * dimensions])]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in values))))


def text_of(content):
    """The text of a message content (a string or a list of parts)."""
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


class TGIError(Exception):
    """An error answer: status, TGI body, extra headers."""

    def __init__(self, status, message, error_type=None, headers=None, extra=None):
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **({"error_type": error_type} if error_type else {}), **(extra or {})}
        self.headers = headers or {}


def validation(message):
    return TGIError(422, f"Input validation error: {message}", "validation")


def check_triggers(text, headers):
    """Raise the error a trigger word asks for."""
    if "TRIGGER_OVERLOADED" in text:
        raise TGIError(429, "Model is overloaded", "overloaded")
    if "TRIGGER_RATE_LIMIT" in text:
        raise TGIError(429, "Rate limit reached. You reached free usage limit (reset hourly). Please subscribe "
                       "to a plan at https://huggingface.co/pricing to use the API at this rate",
                       headers={"Retry-After": "30"})
    if "TRIGGER_LOADING" in text:
        raise TGIError(503, f"Model {MODEL_ID} is currently loading", extra={"estimated_time": 20.0})
    if "TRIGGER_GENERATION_ERROR" in text:
        raise TGIError(424, "Request failed during generation: Server error: CUDA out of memory. Tried to "
                       "allocate 2.00 GiB", "generation")
    if "TRIGGER_ECHO_AUTH" in text:
        raise TGIError(500, f"debug: request carried {headers.get('authorization', '')}", "generation")


def validate(inputs, params, stream):
    """TGI's validation of a generate request; returns max_new_tokens."""
    temperature, top_p = params.get("temperature"), params.get("top_p")
    if temperature is not None and temperature <= 0:
        raise validation("`temperature` must be strictly positive")
    if top_p is not None and not 0 < top_p < 1:
        raise validation("`top_p` must be > 0.0 and < 1.0")
    best_of = params.get("best_of") or 1
    if best_of > 1:
        if stream:
            raise validation("`best_of` != 1 is not allowed for this endpoint")
        if best_of > MAX_BEST_OF:
            raise validation(f"`best_of` must be > 0 and <= {MAX_BEST_OF}. Given: {best_of}")
        if not (params.get("do_sample") or temperature or top_p):
            raise validation("you must use sampling when `best_of` is > 1")
    if stream and params.get("decoder_input_details"):
        raise validation("`decoder_input_details` == true is not supported when streaming tokens")
    stop = params.get("stop") or []
    if len(stop) > MAX_STOP_SEQUENCES:
        raise validation(f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(stop)}")
    max_new = params.get("max_new_tokens")
    if max_new is not None and max_new <= 0:
        raise validation("`max_new_tokens` must be strictly positive")
    max_new = max_new or DEFAULT_MAX_NEW_TOKENS
    n_inputs = len(inputs.split())
    if n_inputs > MAX_INPUT_TOKENS:
        raise validation(f"`inputs` must have less than {MAX_INPUT_TOKENS} tokens. Given: {n_inputs}")
    if n_inputs + max_new > MAX_TOTAL_TOKENS:
        raise validation(f"`inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL_TOKENS}. Given: {n_inputs} "
                         f"`inputs` tokens and {max_new} `max_new_tokens`")
    return max_new


def run(answer, max_new, stop):
    """Generate: (tokens, finish_reason, generated_text); tokens are (text, special) pairs."""
    tokens = [(p, False) for p in pieces(answer)]
    text = ""
    for i, (piece, _) in enumerate(tokens):
        if i == max_new:
            return tokens[:i], "length", text
        text += piece
        if any(text.endswith(s) for s in stop):  # TGI checks the output's end after each token
            return tokens[:i + 1], "stop_sequence", text
    if len(tokens) >= max_new:
        return tokens, "length", text
    return tokens + [("</s>", True)], "eos_token", text


def token_obj(i, text, special):
    return {"id": 1000 + i, "text": text, "logprob": -0.25, "special": special}


class Handler(FakeHandler):
    """One request to the fake TGI/TEI server."""

    server_version = "text-generation-inference/fake"

    def route(self, method, path, query, headers, body):
        fake = self.server.fake
        if method == "GET" and path == "/health":
            return self.send_json(200, b"")
        if method == "GET" and path == "/info":
            return self.send_json(200, {"model_id": MODEL_ID, "max_input_tokens": MAX_INPUT_TOKENS,
                                        "max_total_tokens": MAX_TOTAL_TOKENS, "max_best_of": MAX_BEST_OF,
                                        "max_stop_sequences": MAX_STOP_SEQUENCES, "version": "3.2.3"})
        handlers = {"/": self.compat, "/generate": self.generate, "/generate_stream": self.generate_stream,
                    "/v1/chat/completions": self.chat, "/embed": self.embed}
        handler = handlers.get(path) if method == "POST" else None
        if handler is None:
            return self.send_json(404, b"", content_type="text/plain")
        if fake.api_key and headers.get("authorization") != f"Bearer {fake.api_key}":
            return self.send_json(401, {"error": "Invalid credentials in Authorization header"})
        if not isinstance(body, dict):
            return self.send_json(400, b"Failed to parse the request body as JSON", content_type="text/plain")
        try:
            handler(body, headers)
        except TGIError as err:
            self.send_json(err.status, err.body, headers=err.headers)

    # ---- text generation ------------------------------------------------------------------------

    def _inputs(self, body):
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            raise TGIError(422, "Failed to deserialize the JSON body into the target type: missing field "
                           "`inputs`")
        return inputs, body.get("parameters") or {}

    def _answer(self, inputs, params):
        return JSON_ANSWER if params.get("grammar") else generate_answer(inputs)

    def compat(self, body, headers):
        if body.get("stream"):
            return self.generate_stream(body, headers)
        self.send_json(200, [self._generate(body, headers)])

    def generate(self, body, headers):
        self.send_json(200, self._generate(body, headers))

    def _generate(self, body, headers):
        inputs, params = self._inputs(body)
        check_triggers(inputs, headers)
        if "TRIGGER_STREAM_ERROR" in inputs:
            raise TGIError(424, "Request failed during generation: Server error: unhandled", "generation")
        max_new = validate(inputs, params, False)
        tokens, finish, text = run(self._answer(inputs, params), max_new, params.get("stop") or [])
        prefix = inputs if params.get("return_full_text") else ""
        out = {"generated_text": prefix + text}
        if params.get("details") or params.get("decoder_input_details"):
            seed = params.get("seed") if params.get("do_sample") else None
            details = {"finish_reason": finish, "generated_tokens": len(tokens), "seed": seed,
                       "prefill": ([{"id": i, "text": w, "logprob": None if i == 0 else -1.5}
                                    for i, w in enumerate(pieces(inputs))]
                                   if params.get("decoder_input_details") else []),
                       "tokens": [token_obj(i, t, s) for i, (t, s) in enumerate(tokens)], "top_tokens": None}
            best_of = params.get("best_of") or 1
            if best_of > 1:
                details["best_of_sequences"] = [
                    {"generated_text": prefix + text, "finish_reason": finish, "generated_tokens": len(tokens),
                     "seed": seed, "prefill": [], "tokens": details["tokens"], "top_tokens": None}
                    for _ in range(best_of - 1)]
            out["details"] = details
        return out

    def generate_stream(self, body, headers):
        fake = self.server.fake
        inputs, params = self._inputs(body)
        check_triggers(inputs, headers)
        self.start_chunked("text/event-stream", headers={"X-Accel-Buffering": "no"})
        try:  # TGI validates inside the stream: its errors come as events after the 200
            max_new = validate(inputs, params, True)
        except TGIError as err:
            self.write_sse(err.body)
            return self.end_chunked()
        tokens, finish, text = run(self._answer(inputs, params), max_new, params.get("stop") or [])
        for i, (piece, special) in enumerate(tokens):
            if fake.stream_interval:
                time.sleep(fake.stream_interval)
            if "TRIGGER_STREAM_ERROR" in inputs and i == 2:
                self.write_sse({"error": "Request failed during generation: Server error: connection lost",
                                "error_type": "generation"})
                return self.end_chunked()
            if "TRIGGER_CUT_STREAM" in inputs and i == 2:
                return self.end_chunked()  # the body just ends: no final event with generated_text
            last = i == len(tokens) - 1
            details = None
            if last and params.get("details"):
                details = {"finish_reason": finish, "generated_tokens": len(tokens),
                           "seed": params.get("seed") if params.get("do_sample") else None,
                           "input_length": len(inputs.split())}
            full = (inputs if params.get("return_full_text") else "") + text
            self.write_sse({"index": i + 1, "token": token_obj(i, piece, special), "top_tokens": None,
                            "generated_text": full if last else None, "details": details})
        self.end_chunked()

    # ---- Messages API ---------------------------------------------------------------------------

    def chat(self, body, headers):
        fake = self.server.fake
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise TGIError(422, "Failed to deserialize the JSON body into the target type: missing field "
                           "`messages`")
        last = messages[-1]
        users = [m for m in messages if m.get("role") == "user"]
        said = text_of(users[-1].get("content")).strip() if users else ""
        check_triggers(said, headers)
        n_inputs = sum(len(text_of(m.get("content")).split()) for m in messages)
        max_new = body.get("max_tokens")
        validate(" ".join(text_of(m.get("content")) for m in messages),
                 {"max_new_tokens": max_new, "temperature": None, "stop": body.get("stop")}, False)
        tools = body.get("tools") or []
        choice = body.get("tool_choice")
        call = None
        if last.get("role") == "tool":
            answer = f"Tool said: {text_of(last.get('content'))}"
        elif tools and choice != "none" and "weather" in said.lower():
            name = tools[0]["function"]["name"]
            if isinstance(choice, dict):
                name = choice["function"]["name"]
            call = (name, {"location": "Paris"})
            answer = ""
        else:
            images = sum(1 for p in (users[-1].get("content") if users else None) or []
                         if isinstance(p, dict) and p.get("type") == "image_url")
            answer = CHAT_PREFIX + said + (f" (saw {images} image{'s' if images > 1 else ''})" if images else "")
        if "TRIGGER_STREAM_ERROR" in said and not body.get("stream"):
            raise TGIError(424, "Request failed during generation: Server error: unhandled", "generation")
        tokens, finish, text = run(answer, max_new or DEFAULT_MAX_NEW_TOKENS, body.get("stop") or [])
        usage = {"prompt_tokens": n_inputs, "completion_tokens": len(tokens) if not call else 8,
                 "total_tokens": n_inputs + (len(tokens) if not call else 8)}
        base = {"id": "", "created": int(time.time()), "model": MODEL_ID, "system_fingerprint": FINGERPRINT}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text if not call else None}
            if call:
                args = call[1] if fake.legacy_tools else json.dumps(call[1])
                message["tool_calls"] = [{"id": "0", "type": "function", "function": {
                    "description": None, "name": call[0], "arguments": args}}]
                finish = "eos_token" if fake.legacy_tools else "tool_calls"
            elif not fake.legacy_tools:  # TGI 3.x reports OpenAI's reasons; 2.x its own
                finish = {"eos_token": "stop", "stop_sequence": "stop"}.get(finish, finish)
            return self.send_json(200, {**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}], "usage": usage})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.start_chunked("text/event-stream", headers={"X-Accel-Buffering": "no"})

        def chunk(delta, finish_reason=None, with_usage=False):
            self.write_sse({**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"role": "assistant", **delta}, "logprobs": None,
                 "finish_reason": finish_reason}], "usage": usage if with_usage else None})
            if fake.stream_interval:
                time.sleep(fake.stream_interval)

        if call:
            self._stream_call(chunk, call, include_usage)
        else:
            for i, (piece, special) in enumerate(tokens):
                if "TRIGGER_STREAM_ERROR" in said and i == 2:
                    self.write_sse({"error": "Request failed during generation: Server error: connection lost",
                                    "error_type": "generation"})
                    return self.end_chunked()
                if "TRIGGER_CUT_STREAM" in said and i == 2:
                    return self.end_chunked()  # no finish_reason, no [DONE]
                is_last = i == len(tokens) - 1
                chunk({"content": "" if special else piece},
                      {"eos_token": "stop", "stop_sequence": "stop"}.get(finish, finish) if is_last else None,
                      include_usage and is_last)
        self.write_sse("[DONE]")
        self.end_chunked()

    def _stream_call(self, chunk, call, include_usage):
        name, args = call
        if self.server.fake.legacy_tools:
            raw = json.dumps({"function": {"_name": name, **args}})
            for piece in [raw[i:i + 7] for i in range(0, len(raw), 7)]:
                chunk({"tool_calls": {"index": 0, "id": "", "type": "function",
                                      "function": {"name": None, "arguments": piece}}})
            return chunk({"content": ""}, "eos_token", include_usage)
        chunk({"tool_calls": [{"index": 0, "id": "", "type": "function",
                               "function": {"name": name, "arguments": ""}}]})
        raw = json.dumps(args)
        for piece in [raw[i:i + 5] for i in range(0, len(raw), 5)]:
            chunk({"tool_calls": [{"index": 0, "id": "", "type": "function",
                                   "function": {"name": None, "arguments": piece}}]})
        chunk({"content": ""}, "tool_calls", include_usage)

    # ---- TEI embeddings -------------------------------------------------------------------------

    def embed(self, body, headers):
        inputs = body.get("inputs")
        items = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(items, list) or not items:
            raise TGIError(422, "`inputs` cannot be empty", "empty")
        for item in items:
            check_triggers(item, headers)
            if len(item.split()) > EMBED_MAX_TOKENS and not body.get("truncate"):
                raise TGIError(413, f"Input validation error: `inputs` must have less than {EMBED_MAX_TOKENS} "
                               f"tokens. Given: {len(item.split())}", "validation")
        self.send_json(200, [fake_embedding(item) for item in items])


class FakeTGI(FakeServer):
    """The fake TGI/TEI server; `api_key` (None: no auth), `stream_interval`, `legacy_tools`."""

    handler = Handler

    def __init__(self, api_key="hf_fake_tgi_key_0123456789", **kwargs):
        super().__init__(**kwargs)
        self.api_key = api_key
        self.stream_interval = 0.0
        self.legacy_tools = False
