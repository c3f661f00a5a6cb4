"""A fake Anthropic Messages API upstream: a real HTTP/1.1 server on loopback.

It speaks the documented wire format closely enough that the official ``anthropic`` SDK parses
every answer and stream and raises its typed errors, and it validates requests the way the real API
does (required max_tokens, no extra top-level fields, alternating roles, tool_use answered by
tool_result in the next turn, image sources), so a gateway that translates badly gets a 400.

Route: POST /v1/messages. Auth: ``x-api-key: <api_key>``, or ``Authorization: Bearer`` with the api key
or the auth token (newer SDKs send keys that way); an ``anthropic-version`` header is required.

Triggers (by model): fail-400, fail-401, fail-403, fail-404, fail-413, fail-429, fail-500, fail-529,
context-length -> the matching error answer; stream-error -> two text deltas, then an ``error`` event;
cut-stream -> two text deltas, then the body ends (no message_delta, no message_stop).

Answers are deterministic: ``"Hello from fake anthropic: <last user text>"`` (plus `` (images: N)``
when the last turn has images). When the request offers tools and the last user text mentions
"weather", the answer is a tool_use call per city named (Paris, London, Tokyo; Paris by default);
after tool results the answer is ``"Hello from fake anthropic: tool said <results>"``. Token counts
are whitespace word counts.
"""

import json
import uuid

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

ANSWER_PREFIX = "Hello from fake anthropic: "
CITIES = ("Paris", "London", "Tokyo")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOP_LEVEL = frozenset({"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
                       "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier"})
FAILURES = {
    "fail-400": (400, "invalid_request_error", "temperature: Input should be less than or equal to 1"),
    "fail-401": (401, "authentication_error", "invalid x-api-key"),
    "fail-403": (403, "permission_error", "Your API key does not have permission to use the specified resource."),
    "fail-404": (404, "not_found_error", "model: fail-404"),
    "fail-413": (413, "request_too_large", "Request exceeds the maximum allowed number of bytes."),
    "fail-429": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit "
                 "(https://docs.anthropic.com/en/api/rate-limits); see the response headers for current usage."),
    "fail-500": (500, "api_error", "Internal server error"),
    "fail-529": (529, "overloaded_error", "Overloaded"),
    "context-length": (400, "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"),
}
RATE_LIMIT_HEADERS = {"retry-after": "7", "anthropic-ratelimit-requests-limit": "50",
                      "anthropic-ratelimit-requests-remaining": "0",
                      "anthropic-ratelimit-requests-reset": "2024-01-01T00:00:07Z"}


def error_body(etype, message, request_id=None):
    """Anthropic's error envelope."""
    return {"type": "error", "error": {"type": etype, "message": message},
            "request_id": request_id or new_id("req")}


def new_id(prefix):
    """An Anthropic-style object id (msg_..., toolu_..., req_...)."""
    return f"{prefix}_01{uuid.uuid4().hex[:22]}"


def words(text):
    """The fake's token count."""
    return len(text.split())


def blocks_of(content):
    """Message content as a list of blocks (a string is one text block)."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def text_of(blocks):
    """The text of text blocks (and of tool_result contents), space-joined."""
    out = []
    for block in blocks:
        if block.get("type") == "text":
            out.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            out.append(text_of(blocks_of(block.get("content") or [])))
    return " ".join(t for t in out if t)


class Invalid(Exception):
    """A request the real API would refuse with invalid_request_error."""


def _check_block(block, where, role, previous_tool_ids):
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        if not isinstance(block.get("text"), str) or not block["text"]:
            raise Invalid(f"{where}: text content blocks must be non-empty")
    elif kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            if source.get("media_type") not in IMAGE_TYPES or not source.get("data"):
                raise Invalid(f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                              "'image/gif' or 'image/webp'")
        elif source.get("type") != "url" or not str(source.get("url", "")).startswith(("http://", "https://")):
            raise Invalid(f"{where}.source: Input tag does not match any of the expected tags: 'base64', 'url'")
    elif kind == "tool_use" and role == "assistant":
        if not block.get("id") or not block.get("name") or not isinstance(block.get("input"), dict):
            raise Invalid(f"{where}.tool_use: id, name and an input object are required")
    elif kind == "tool_result" and role == "user":
        if block.get("tool_use_id") not in previous_tool_ids:
            raise Invalid(f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: "
                          f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                          "`tool_use` block in the previous message.")
    else:
        raise Invalid(f"{where}.type: unexpected content block type {kind!r} in a {role} message")


def validate(body):
    """Raise Invalid with the real API's wording for what this fake checks."""
    extra = sorted(set(body) - TOP_LEVEL)
    if extra:
        raise Invalid(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str):
        raise Invalid("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise Invalid("max_tokens: Field required")
    if body.get("temperature") is not None and not 0 <= body["temperature"] <= 1:
        raise Invalid("temperature: Input should be less than or equal to 1")
    if set(body.get("metadata") or {}) - {"user_id"}:
        raise Invalid("metadata: only user_id is permitted")
    for k, tool in enumerate(body.get("tools") or []):
        if "type" not in tool and (tool.get("input_schema") or {}).get("type") != "object":
            raise Invalid(f"tools.{k}.custom.input_schema: Field required")
    choice = body.get("tool_choice")
    if choice is not None and (choice.get("type") not in ("auto", "any", "tool", "none")
                               or (choice["type"] == "tool" and not choice.get("name"))):
        raise Invalid("tool_choice: Input tag does not match any of the expected tags")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        for j, block in enumerate(system):
            _check_block(block, f"system.{j}", "system", ())
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: Field required")
    previous_role, pending = None, []
    for i, m in enumerate(messages):
        role = m.get("role")
        if role == "system":
            raise Invalid('messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                          "parameter, not \"system\" as an input message role.")
        if role not in ("user", "assistant"):
            raise Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if role == previous_role:
            raise Invalid(f'messages: roles must alternate between "user" and "assistant", but found multiple '
                          f'"{role}" roles in a row')
        blocks = blocks_of(m.get("content"))
        if not isinstance(blocks, list) or not blocks:
            raise Invalid(f"messages.{i}: all messages must have non-empty content")
        for j, block in enumerate(blocks):
            _check_block(block, f"messages.{i}.content.{j}", role, pending)
        answered = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if pending and sorted(answered) != sorted(pending):
            raise Invalid(f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
                          f"after: {', '.join(p for p in pending if p not in answered)}")
        kinds = [b.get("type") for b in blocks]
        if "tool_result" in kinds and kinds[:kinds.count("tool_result")] != ["tool_result"] * kinds.count("tool_result"):
            raise Invalid(f"messages.{i}: tool_result blocks must come first in the content")
        pending = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        previous_role = role
    if pending:
        raise Invalid("messages: the final assistant tool_use blocks have no tool_result")


def plan(body):
    """(content blocks, stop_reason, stop_sequence, input_tokens, output_tokens) for a valid body."""
    messages = body["messages"]
    last = blocks_of(messages[-1]["content"])
    system = body.get("system") or ""
    prompt_text = (system if isinstance(system, str) else text_of(system)) + " " + " ".join(
        text_of(blocks_of(m["content"])) for m in messages)
    said = " ".join(b["text"] for b in last if b.get("type") == "text")
    results = [b for b in last if b.get("type") == "tool_result"]
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    if messages[-1]["role"] == "user" and tools and not results and "weather" in said.lower() \
            and choice["type"] != "none":
        cities = sorted((c for c in CITIES if c.lower() in said.lower()), key=lambda c: said.lower().index(c.lower()))
        cities = cities or ["Paris"]
        if choice.get("disable_parallel_tool_use"):
            cities = cities[:1]
        name = choice["name"] if choice["type"] == "tool" else tools[0]["name"]
        content = [] if choice["type"] in ("any", "tool") else [{"type": "text", "text": "Let me check the weather."}]
        content += [{"type": "tool_use", "id": new_id("toolu"), "name": name, "input": {"location": city}}
                    for city in cities]
        out_tokens = sum(words(b.get("text") or json.dumps(b.get("input"))) for b in content)
        return content, "tool_use", None, words(prompt_text), out_tokens
    text = ANSWER_PREFIX + (f"tool said {text_of(results)}" if results else said)
    images = sum(1 for b in last if b.get("type") == "image")
    if images:
        text += f" (images: {images})"
    stop_reason, stop_sequence = "end_turn", None
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s and s in text]
    if hits:
        cut, stop_sequence = min(hits)
        text, stop_reason = text[:cut], "stop_sequence"
    pieces = text.split(" ")
    if len(text.split()) > body["max_tokens"]:
        text, stop_reason, stop_sequence = " ".join(pieces[:body["max_tokens"]]), "max_tokens", None
    return [{"type": "text", "text": text}], stop_reason, stop_sequence, words(prompt_text), words(text)


class AnthropicHandler(FakeHandler):
    """POST /v1/messages in Anthropic's wire format."""

    server_version = "fake-anthropic"

    def error(self, status, etype, message, headers=None):
        """An error answer with Anthropic's envelope and a request-id header."""
        request_id = new_id("req")
        self.send_json(status, error_body(etype, message, request_id), {"request-id": request_id, **(headers or {})})

    def route(self, method, path, query, headers, body):
        fake = self.server.fake
        if (method, path) != ("POST", "/v1/messages"):
            return self.error(404, "not_found_error", "Not Found")
        bearer = headers.get("authorization", "")
        if "x-api-key" not in headers and not bearer:
            return self.error(401, "authentication_error", "x-api-key header is required")
        # x-api-key is the classic scheme (what LiteLLM and this gateway send); newer SDKs send the key,
        # or an auth token, as a bearer token.
        tokens = {f"Bearer {t}" for t in (fake.api_key, fake.auth_token) if t}
        if headers.get("x-api-key") != fake.api_key and bearer not in tokens:
            return self.error(401, "authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return self.error(400, "invalid_request_error", "anthropic-version: header is required")
        if not isinstance(body, dict):
            return self.error(400, "invalid_request_error", "Request body is not valid JSON")
        failure = FAILURES.get(body.get("model"))
        if failure:
            status, etype, message = failure
            return self.error(status, etype, message, RATE_LIMIT_HEADERS if status == 429 else None)
        try:
            validate(body)
        except Invalid as exc:
            return self.error(400, "invalid_request_error", str(exc))
        content, stop_reason, stop_sequence, input_tokens, output_tokens = plan(body)
        message = {"id": new_id("msg"), "type": "message", "role": "assistant", "model": body["model"],
                   "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
                   "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        if body.get("stream"):
            return self.stream(message, body["model"] == "stream-error", body["model"] == "cut-stream")
        return self.send_json(200, message, {"request-id": new_id("req")})

    def event(self, name, data):
        """One named SSE event, as Anthropic frames them (`event:` line, then `data:`)."""
        self.write_sse(data, event=name)

    def stream(self, message, fail_midway, cut_midway=False):
        """The message as Anthropic's event sequence (cut_midway: the body just ends after two deltas,
        without message_delta or message_stop)."""
        self.start_chunked("text/event-stream; charset=utf-8", headers={"request-id": new_id("req"),
                                                                       "cache-control": "no-cache"})
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**usage, "output_tokens": 1}}
        self.event("message_start", {"type": "message_start", "message": start})
        for index, block in enumerate(message["content"]):
            opening = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
            self.event("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": opening})
            if index == 0:
                self.event("ping", {"type": "ping"})
            if block["type"] == "text":
                pieces = block["text"].split(" ")
                deltas = [{"type": "text_delta", "text": p if i == 0 else " " + p} for i, p in enumerate(pieces)]
            else:
                args = json.dumps(block["input"])
                deltas = [{"type": "input_json_delta", "partial_json": ""}] + [
                    {"type": "input_json_delta", "partial_json": args[k:k + 8]} for k in range(0, len(args), 8)]
            for n, delta in enumerate(deltas):
                if fail_midway and n == 2:
                    self.event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                    "message": "Overloaded"}})
                    return self.end_chunked()
                if cut_midway and n == 2:
                    return self.end_chunked()
                self.event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            self.event("content_block_stop", {"type": "content_block_stop", "index": index})
        self.event("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"],
                                               "stop_sequence": message["stop_sequence"]},
                                     "usage": {"output_tokens": usage["output_tokens"]}})
        self.event("message_stop", {"type": "message_stop"})
        self.end_chunked()


class FakeAnthropic(FakeServer):
    """Fake Anthropic upstream; ``requests`` keeps every request it received."""

    handler = AnthropicHandler

    def __init__(self, api_key="sk-ant-fake-upstream-key-0001", auth_token=None, **kwargs):
        super().__init__(**kwargs)
        self.api_key = api_key
        self.auth_token = auth_token
