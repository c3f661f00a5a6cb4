"""A fake Anthropic Messages API upstream: a real HTTP/1.1 server on loopback.

It speaks the documented wire format closely enough that the official ``anthropic`` SDK parses
every answer and stream and raises its typed errors, and it validates requests the way the real API
does (required max_tokens, no extra top-level fields, alternating roles, tool_use answered by
tool_result in the next turn, image and document sources, thinking budgets and signatures,
cache_control markers), so a gateway that translates badly gets a 400.

Routes: POST /v1/messages and POST /v1/messages/count_tokens (the body of a messages call without
max_tokens, stream, metadata, stop_sequences, sampling parameters or service_tier, which it refuses
like the real API; it answers ``{"input_tokens": N}``). Auth: ``x-api-key: <api_key>``, or
``Authorization: Bearer`` with the api key or the auth token (newer SDKs send keys that way); an
``anthropic-version`` header is required. ``anthropic-beta`` headers (any value) are recorded with
the request and otherwise ignored.

Triggers (by model, on both routes): fail-400, fail-401, fail-403, fail-404, fail-413, fail-429,
fail-500, fail-529, context-length -> the matching error answer; stream-error -> two deltas of the
first block, then an ``error`` event; cut-stream -> two deltas, then the body ends (no
message_delta, no message_stop).

Answers are deterministic: ``"Hello from fake anthropic: <last user text>"`` (plus `` (images: N)``
and then `` (documents: N)`` when the last turn has images or documents). When the request offers
tools and the last user text mentions "weather", the answer is a tool_use call per city named
(Paris, London, Tokyo; Paris by default); after tool results the answer is
``"Hello from fake anthropic: tool said <results>"``.

Extended thinking: with ``"thinking": {"type": "enabled", "budget_tokens": N}`` (1024 <= N <
max_tokens, else a 400) the content starts with ``{"type": "thinking", "thinking": "Thinking about:
<last turn's text>", "signature": <signature(thinking)>}`` (a turn of only tool results: ``"Thinking
about: <results text>"``; with no text at all: ``"Thinking about: the request"``). The signature is
``base64("fake-anthropic-signature:" + sha256(thinking text))``, 76 characters. Streams send it as
content_block_start (empty thinking and signature), one thinking_delta per word, one
signature_delta, content_block_stop. ``{"type": "disabled"}`` is accepted. Assistant turns may carry
thinking blocks (a non-empty signature is required; it is not checked against the text) and
redacted_thinking blocks (non-empty ``data``); neither counts as input.

Token counts are whitespace word counts. Input: the words of every tool's name and description,
of the system prompt, and of the text and tool_result blocks of every message; each document block
is one word; images, tool_use inputs and thinking blocks count nothing. Output: the answer's words
(a tool_use block: the words of its JSON input) plus the thinking words.

Prompt caching (deterministic; no minimum length): the prompt is read in the API's order, tools ->
system -> messages, one unit per tool or block. A unit carrying ``cache_control`` (``{"type":
"ephemeral"}``, optional ``ttl`` "5m" or "1h"; at most 4 per request) is a breakpoint; its key is the
model plus the exact units up to and including it (cache_control markers left out). The words up to
the longest breakpoint whose key the server has seen before are ``cache_read_input_tokens``; the
words from there up to the last breakpoint, if that one is new, are ``cache_creation_input_tokens``
(split by each new breakpoint's ttl in ``usage.cache_creation``); every breakpoint's key is then
remembered (``FakeAnthropic.cache``, cleared by ``reset()``). ``input_tokens`` is the rest. So the
same marked prompt sent twice reports creation the first time and a read the second. Streams carry
the full usage in ``message_start.message.usage`` and repeat the input fields, with the final
``output_tokens``, in ``message_delta.usage``. count_tokens always answers the whole count.
"""

import base64
import hashlib
import json
import uuid

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

ANSWER_PREFIX = "Hello from fake anthropic: "
THINKING_PREFIX = "Thinking about: "
SIGNATURE_SALT = b"fake-anthropic-signature:"
MIN_THINKING_BUDGET = 1024
MAX_CACHE_BREAKPOINTS = 4
CITIES = ("Paris", "London", "Tokyo")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
TOP_LEVEL = frozenset({"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
                       "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
                       "context_management", "container", "mcp_servers"})
COUNT_TOP_LEVEL = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking",
                             "context_management", "mcp_servers"})
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
BUDGET_ABOVE_MAX = ("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation "
                    "at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                    "#max-tokens-and-context-window-size")


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


def signature(thinking):
    """The deterministic signature of a thinking text: base64("fake-anthropic-signature:" + sha256)."""
    return base64.b64encode(SIGNATURE_SALT + hashlib.sha256(thinking.encode()).digest()).decode()


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


def block_words(block):
    """Input tokens of one content block: text words, one per document, tool_result contents; else 0."""
    kind = block.get("type")
    if kind == "text":
        return words(block.get("text") or "")
    if kind == "document":
        return 1
    if kind == "tool_result":
        return sum(block_words(b) for b in blocks_of(block.get("content") or []))
    return 0


def prompt_units(body):
    """The prompt in the API's order (tools, system, messages): (where, cache key part, words, cache_control)."""
    units = []
    for k, tool in enumerate(body.get("tools") or []):
        counted = words(str(tool.get("name") or "")) + words(str(tool.get("description") or ""))
        units.append((f"tools.{k}", ["tool", _unmarked(tool)], counted, tool.get("cache_control")))
    system = body.get("system")
    if isinstance(system, str):
        units.append(("system", ["system", system], words(system), None))
    else:
        for j, block in enumerate(system or []):
            units.append((f"system.{j}", ["system", _unmarked(block)], block_words(block),
                          block.get("cache_control")))
    for i, m in enumerate(body["messages"]):
        for j, block in enumerate(blocks_of(m["content"])):
            units.append((f"messages.{i}.content.{j}", [m["role"], _unmarked(block)], block_words(block),
                          block.get("cache_control")))
    return units


def _unmarked(block):
    """A block without its cache_control marker (the cache key ignores where the markers sit)."""
    return {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block


def prompt_tokens(body):
    """Input tokens of a valid body (cached or not): see the module docstring."""
    return sum(unit[2] for unit in prompt_units(body))


class Invalid(Exception):
    """A request the real API would refuse with invalid_request_error."""


def _check_image(block, where):
    source = block.get("source") or {}
    if source.get("type") == "base64":
        if source.get("media_type") not in IMAGE_TYPES or not source.get("data"):
            raise Invalid(f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                          "'image/gif' or 'image/webp'")
    elif source.get("type") != "url" or not str(source.get("url", "")).startswith(("http://", "https://")):
        raise Invalid(f"{where}.source: Input tag does not match any of the expected tags: 'base64', 'url'")


def _check_document(block, where):
    source = block.get("source") or {}
    kind = source.get("type")
    if kind in ("base64", "text"):
        media_type = "application/pdf" if kind == "base64" else "text/plain"
        if source.get("media_type") != media_type:
            raise Invalid(f"{where}.source.{kind}.media_type: Input should be '{media_type}'")
        if not isinstance(source.get("data"), str) or (kind == "base64" and not source["data"]):
            raise Invalid(f"{where}.source.{kind}.data: Field required")
    elif kind == "url":
        if not str(source.get("url", "")).startswith(("http://", "https://")):
            raise Invalid(f"{where}.source.url.url: Field required")
    elif kind != "content" or not source.get("content"):
        raise Invalid(f"{where}.source: Input tag {kind!r} found using 'type' does not match any of the expected "
                      "tags: 'base64', 'content', 'text', 'url'")


def _check_thinking_block(block, where):
    """A thinking block handed back in an assistant turn: text and a non-empty signature."""
    if not isinstance(block.get("thinking"), str):
        raise Invalid(f"{where}.thinking.thinking: Field required")
    if block.get("signature") is None:
        raise Invalid(f"{where}.thinking.signature: Field required")
    if not isinstance(block["signature"], str) or not block["signature"]:
        raise Invalid(f"{where}: Invalid `signature` in `thinking` block")


def _check_block(block, where, role, previous_tool_ids):
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        if not isinstance(block.get("text"), str) or not block["text"]:
            raise Invalid(f"{where}: text content blocks must be non-empty")
    elif kind == "image":
        _check_image(block, where)
    elif kind == "document" and role == "user":
        _check_document(block, where)
    elif kind == "thinking" and role == "assistant":
        _check_thinking_block(block, where)
    elif kind == "redacted_thinking" and role == "assistant":
        if not isinstance(block.get("data"), str) or not block["data"]:
            raise Invalid(f"{where}.redacted_thinking.data: Field required")
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


def _check_thinking_config(body, count):
    """`thinking`: disabled, or enabled with 1024 <= budget_tokens (< max_tokens for a messages call)."""
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict):
        raise Invalid("thinking: Input should be a valid dictionary or object to extract fields from")
    kind = thinking.get("type")
    if kind == "disabled":
        return
    if kind != "enabled":
        raise Invalid(f"thinking: Input tag {kind!r} found using 'type' does not match any of the expected tags: "
                      "'disabled', 'enabled'")
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise Invalid("thinking.enabled.budget_tokens: Field required")
    if budget < MIN_THINKING_BUDGET:
        raise Invalid(f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_THINKING_BUDGET}")
    if not count and budget >= body["max_tokens"]:
        raise Invalid(BUDGET_ABOVE_MAX)


def thinking_enabled(body):
    """Whether a (valid) body asks for extended thinking."""
    return (body.get("thinking") or {}).get("type") == "enabled"


def _check_tools(body):
    for k, tool in enumerate(body.get("tools") or []):
        if "type" not in tool and (tool.get("input_schema") or {}).get("type") != "object":
            raise Invalid(f"tools.{k}.custom.input_schema: Field required")
    choice = body.get("tool_choice")
    if choice is not None and (choice.get("type") not in ("auto", "any", "tool", "none")
                               or (choice["type"] == "tool" and not choice.get("name"))):
        raise Invalid("tool_choice: Input tag does not match any of the expected tags")


def _check_cache_controls(units):
    """Every cache_control is ephemeral with a 5m/1h ttl, and there are at most 4 of them."""
    marked = [(where, mark) for where, _, _, mark in units if mark is not None]
    for where, mark in marked:
        if not isinstance(mark, dict) or mark.get("type") != "ephemeral":
            kind = mark.get("type") if isinstance(mark, dict) else None
            raise Invalid(f"{where}.cache_control: Input tag {kind!r} found using 'type' does not match any of the "
                          "expected tags: 'ephemeral'")
        if mark.get("ttl", "5m") not in ("5m", "1h"):
            raise Invalid(f"{where}.cache_control.ephemeral.ttl: Input should be '5m' or '1h'")
    if len(marked) > MAX_CACHE_BREAKPOINTS:
        raise Invalid(f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
                      f"Found {len(marked)}.")


def _check_messages(messages):
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


def validate(body, count=False):
    """Raise Invalid with the real API's wording for what this fake checks (count: a count_tokens body)."""
    extra = sorted(set(body) - (COUNT_TOP_LEVEL if count else TOP_LEVEL))
    if extra:
        raise Invalid(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("model"), str):
        raise Invalid("model: Field required")
    if not count and (not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1):
        raise Invalid("max_tokens: Field required")
    if body.get("temperature") is not None and not 0 <= body["temperature"] <= 1:
        raise Invalid("temperature: Input should be less than or equal to 1")
    if set(body.get("metadata") or {}) - {"user_id"}:
        raise Invalid("metadata: only user_id is permitted")
    _check_thinking_config(body, count)
    _check_tools(body)
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        for j, block in enumerate(system):
            _check_block(block, f"system.{j}", "system", ())
    _check_messages(body.get("messages"))
    _check_cache_controls(prompt_units(body))


def thinking_block(said, results):
    """The deterministic thinking block: "Thinking about: <last user text>" and its signature."""
    thinking = THINKING_PREFIX + (said or text_of(results) or "the request")
    return {"type": "thinking", "thinking": thinking, "signature": signature(thinking)}


def _tool_calls(said, tools, choice):
    """The tool_use answer: one call per city named in the last user text (Paris by default)."""
    cities = sorted((c for c in CITIES if c.lower() in said.lower()), key=lambda c: said.lower().index(c.lower()))
    cities = cities or ["Paris"]
    if choice.get("disable_parallel_tool_use"):
        cities = cities[:1]
    name = choice["name"] if choice["type"] == "tool" else tools[0]["name"]
    content = [] if choice["type"] in ("any", "tool") else [{"type": "text", "text": "Let me check the weather."}]
    return content + [{"type": "tool_use", "id": new_id("toolu"), "name": name, "input": {"location": city}}
                      for city in cities]


def _text_answer(body, last, said, results, limit):
    """([text block], stop_reason, stop_sequence); at most `limit` words."""
    text = ANSWER_PREFIX + (f"tool said {text_of(results)}" if results else said)
    for kind, label in (("image", "images"), ("document", "documents")):
        count = sum(1 for b in last if b.get("type") == kind)
        if count:
            text += f" ({label}: {count})"
    stop_reason, stop_sequence = "end_turn", None
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s and s in text]
    if hits:
        cut, stop_sequence = min(hits)
        text, stop_reason = text[:cut], "stop_sequence"
    pieces = text.split(" ")
    if len(text.split()) > limit:
        text, stop_reason, stop_sequence = " ".join(pieces[:limit]), "max_tokens", None
    return [{"type": "text", "text": text}], stop_reason, stop_sequence


def plan(body):
    """(content blocks, stop_reason, stop_sequence, input_tokens, output_tokens) for a valid body.

    input_tokens is the whole prompt, cached or not (the handler splits it into the cache fields)."""
    messages = body["messages"]
    last = blocks_of(messages[-1]["content"])
    said = " ".join(b["text"] for b in last if b.get("type") == "text")
    results = [b for b in last if b.get("type") == "tool_result"]
    thinking = thinking_block(said, results) if thinking_enabled(body) else None
    thought = words(thinking["thinking"]) if thinking else 0
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    if messages[-1]["role"] == "user" and tools and not results and "weather" in said.lower() \
            and choice["type"] != "none":
        content, stop_reason, stop_sequence = _tool_calls(said, tools, choice), "tool_use", None
        out_tokens = sum(words(b.get("text") or json.dumps(b.get("input"))) for b in content)
    else:
        content, stop_reason, stop_sequence = _text_answer(body, last, said, results, body["max_tokens"] - thought)
        out_tokens = words(content[0]["text"])
    if thinking:
        content = [thinking] + content
    return content, stop_reason, stop_sequence, prompt_tokens(body), out_tokens + thought


def _opening(block):
    """A block as content_block_start shows it: empty text/thinking/signature, empty input."""
    if block["type"] == "text":
        return {**block, "text": ""}
    if block["type"] == "thinking":
        return {**block, "thinking": "", "signature": ""}
    return {**block, "input": {}}


def _deltas(block):
    """A block's content_block_delta payloads: a word at a time, the signature whole, JSON in 8-char pieces."""
    if block["type"] in ("text", "thinking"):
        kind = block["type"]
        pieces = block[kind].split(" ")
        deltas = [{"type": f"{kind}_delta", kind: p if i == 0 else " " + p} for i, p in enumerate(pieces)]
        if kind == "thinking":
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        return deltas
    args = json.dumps(block["input"])
    return [{"type": "input_json_delta", "partial_json": ""}] + [
        {"type": "input_json_delta", "partial_json": args[k:k + 8]} for k in range(0, len(args), 8)]


def stream_events(message, fail_midway=False, cut_midway=False):
    """A message as Anthropic's stream: the list of (event name, data) pairs, in order.

    fail_midway: two deltas of the first block, then an ``error`` event; cut_midway: the list just ends
    after two deltas (no message_delta, no message_stop)."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 1}}
    events = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": _opening(block)}))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        for n, delta in enumerate(_deltas(block)):
            if fail_midway and n == 2:
                return events + [("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                       "message": "Overloaded"}})]
            if cut_midway and n == 2:
                return events
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    final = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                                   "output_tokens")}
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"],
                                               "stop_sequence": message["stop_sequence"]},
                                     "usage": final}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


class AnthropicHandler(FakeHandler):
    """POST /v1/messages and /v1/messages/count_tokens in Anthropic's wire format."""

    server_version = "fake-anthropic"
    routes = {"/v1/messages": "messages", "/v1/messages/count_tokens": "count_tokens"}

    def error(self, status, etype, message, headers=None):
        """An error answer with Anthropic's envelope and a request-id header."""
        request_id = new_id("req")
        self.send_json(status, error_body(etype, message, request_id), {"request-id": request_id, **(headers or {})})

    def refusal(self, headers, body):
        """(status, error type, message) when auth, the version header or the JSON body is wrong."""
        fake = self.server.fake
        bearer = headers.get("authorization", "")
        if "x-api-key" not in headers and not bearer:
            return 401, "authentication_error", "x-api-key header is required"
        # x-api-key is the classic scheme (what LiteLLM and this gateway send); newer SDKs send the key,
        # or an auth token, as a bearer token.
        tokens = {f"Bearer {t}" for t in (fake.api_key, fake.auth_token) if t}
        if headers.get("x-api-key") != fake.api_key and bearer not in tokens:
            return 401, "authentication_error", "invalid x-api-key"
        if not headers.get("anthropic-version"):
            return 400, "invalid_request_error", "anthropic-version: header is required"
        if not isinstance(body, dict):
            return 400, "invalid_request_error", "Request body is not valid JSON"
        return None

    def route(self, method, path, query, headers, body):
        endpoint = self.routes.get(path) if method == "POST" else None
        if endpoint is None:
            return self.error(404, "not_found_error", "Not Found")
        refused = self.refusal(headers, body)
        if refused:
            return self.error(*refused)
        failure = FAILURES.get(body.get("model"))
        if failure:
            status, etype, message = failure
            return self.error(status, etype, message, RATE_LIMIT_HEADERS if status == 429 else None)
        try:
            validate(body, count=endpoint == "count_tokens")
        except Invalid as exc:
            return self.error(400, "invalid_request_error", str(exc))
        if endpoint == "count_tokens":
            return self.send_json(200, {"input_tokens": prompt_tokens(body)}, {"request-id": new_id("req")})
        return self.answer(body)

    def answer(self, body):
        """The message for a valid body, whole or streamed; the prompt cache is consulted and updated."""
        content, stop_reason, stop_sequence, _, output_tokens = plan(body)
        usage = self.server.fake.cache_usage(body)
        message = {"id": new_id("msg"), "type": "message", "role": "assistant", "model": body["model"],
                   "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
                   "usage": {"input_tokens": usage.pop("input_tokens"), "output_tokens": output_tokens, **usage}}
        if body.get("stream"):
            return self.stream(message, body["model"] == "stream-error", body["model"] == "cut-stream")
        return self.send_json(200, message, {"request-id": new_id("req")})

    def event(self, name, data):
        """One named SSE event, as Anthropic frames them (`event:` line, then `data:`)."""
        self.write_sse(data, event=name)

    def stream(self, message, fail_midway, cut_midway=False):
        """The message as Anthropic's event sequence (see stream_events)."""
        self.start_chunked("text/event-stream; charset=utf-8", headers={"request-id": new_id("req"),
                                                                       "cache-control": "no-cache"})
        for name, data in stream_events(message, fail_midway, cut_midway):
            self.event(name, data)
        self.end_chunked()


class FakeAnthropic(FakeServer):
    """Fake Anthropic upstream; ``requests`` keeps every request it received, ``cache`` the prompt
    prefixes it has cached (key -> words up to that breakpoint)."""

    handler = AnthropicHandler

    def __init__(self, api_key="sk-ant-fake-upstream-key-0001", auth_token=None, **kwargs):
        super().__init__(**kwargs)
        self.api_key = api_key
        self.auth_token = auth_token
        self.cache = {}

    def reset(self):
        """Forget recorded requests and the prompt cache."""
        super().reset()
        with self._lock:
            self.cache.clear()

    def cache_usage(self, body):
        """The input usage fields of a valid body under the module docstring's caching rule (remembers
        every breakpoint it saw)."""
        units = prompt_units(body)
        total, marks = 0, []
        for n, (_, _, counted, mark) in enumerate(units):
            total += counted
            if mark is not None:
                key = json.dumps([body["model"]] + [unit[1] for unit in units[:n + 1]], sort_keys=True)
                marks.append((key, total, mark.get("ttl", "5m")))
        by_ttl = {"5m": 0, "1h": 0}
        with self._lock:
            last_hit = max((i for i, (key, _, _) in enumerate(marks) if key in self.cache), default=-1)
            read = marks[last_hit][1] if last_hit >= 0 else 0
            boundary = read
            for _, upto, ttl in marks[last_hit + 1:]:
                by_ttl[ttl] += upto - boundary
                boundary = upto
            self.cache.update({key: upto for key, upto, _ in marks})
        return {"input_tokens": total - boundary, "cache_creation_input_tokens": boundary - read,
                "cache_read_input_tokens": read,
                "cache_creation": {"ephemeral_5m_input_tokens": by_ttl["5m"],
                                   "ephemeral_1h_input_tokens": by_ttl["1h"]}}
