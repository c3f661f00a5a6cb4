"""Anthropic's Messages API on providers that speak OpenAI chat: requests to chat bodies, chat answers
and streams back to Messages answers and events (pure; the router calls these, as it does the
completions adapters in adapt.py, when a deployment has no native Messages API).

What cannot be carried is refused with a 400 naming it, never dropped silently, with one documented
exception: thinking blocks of earlier assistant turns. Anthropic itself ignores them for every turn
but the current tool loop, and their signatures mean nothing to another provider.
"""

import orjson

from gateway import errors
from gateway.providers import shapes
from gateway.providers.base import AddedUsageOption

# OpenAI finish_reason -> Anthropic stop_reason
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
# Anthropic's error types by HTTP status (errors rendered for Messages clients).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
               429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}
# Document sources an OpenAI `file` part can carry (providers that read files: OpenAI, Azure).
FILE_PROVIDERS = frozenset({"openai", "azure", "text-completion-openai"})
# Top-level request fields with no meaning off Anthropic (refused when set), and the ones handled.
_ANTHROPIC_ONLY = ("container", "mcp_servers", "context_management")
_PASSED = ("temperature", "top_p", "top_k", "service_tier")
# OpenAI's reasoning models (they take `reasoning_effort`), by upstream model name.
REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")


def _bad(message, param="messages"):
    return errors.BadRequestError(message, param=param, code="not_translatable")


def error_body(exc):
    """A GatewayError as Anthropic's error envelope (the type from its code, else its status)."""
    kind = exc.code if exc.code in ERROR_TYPES.values() or exc.code == "api_error" else None
    kind = kind or ERROR_TYPES.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def openai_usage(usage):
    """Messages usage -> OpenAI usage (prompt tokens include cache reads and writes, as OpenAI's do);
    the cache counts kept beside it for billing."""
    usage = usage or {}
    created = _count(usage.get("cache_creation_input_tokens"))
    read = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + created + read
    out = shapes.usage(prompt, _count(usage.get("output_tokens")))
    if created or read:
        out["prompt_tokens_details"] = {"cached_tokens": read}
        out["cache_creation_input_tokens"] = created
        out["cache_read_input_tokens"] = read
    return out


def messages_usage(usage):
    """OpenAI usage -> Messages usage (cached prompt tokens reported as cache reads)."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    read = _count(usage.get("cache_read_input_tokens")) or _count(details.get("cached_tokens"))
    created = _count(usage.get("cache_creation_input_tokens"))
    prompt = _count(usage.get("prompt_tokens"))
    return {"input_tokens": max(0, prompt - read - created), "output_tokens": _count(usage.get("completion_tokens")),
            "cache_creation_input_tokens": created, "cache_read_input_tokens": read}


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# ---- requests: Messages -> chat ---------------------------------------------------------------

def to_chat(body, provider, stream=False):
    """A Messages request body as an OpenAI chat body for `provider` (a 400 names what it cannot take);
    a stream asks for the usage chunk, to bill it exactly."""
    for name in _ANTHROPIC_ONLY:
        if body.get(name) is not None:
            raise _bad(f"`{name}` is Anthropic's own and cannot be carried to {provider.name}.", param=name)
    chat = {"model": body.get("model"), "messages": _system(body.get("system")) + _turns(body["messages"], provider),
            "max_tokens": body.get("max_tokens")}
    for name in _PASSED:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    if body.get("tools"):
        chat["tools"] = [_tool(t, provider) for t in body["tools"]]
    choice = body.get("tool_choice")
    if choice is not None:
        chat.update(_tool_choice(choice))
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled" and reasons(provider):
        budget = thinking.get("budget_tokens") if isinstance(thinking.get("budget_tokens"), int) else 0
        chat["reasoning_effort"] = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    return finish_chat(body, chat, stream)


# The gateway's own per-request controls: they travel on to the translated chat call.
CONTROLS = ("mock_response", "fallbacks", "num_retries", "timeout", "request_timeout")


def finish_chat(body, chat, stream):
    """A translated chat body's last fields: a stream asks for the usage chunk (to bill it exactly),
    and the gateway's controls travel on."""
    if stream:
        chat["stream"] = True
        chat["stream_options"] = AddedUsageOption(include_usage=True)
    for name in CONTROLS:
        if name in body:
            chat[name] = body[name]
    return chat


def reasons(provider):
    """Whether the deployment's model takes `reasoning_effort`: its model_info says
    `supports_reasoning`, or it is one of OpenAI's reasoning models. Elsewhere a Messages `thinking`
    request is left out: asking to think is a hint, and a model without reasoning refuses the field."""
    config = getattr(provider, "config", None)
    info = getattr(config, "model_info", None) or {}
    if info.get("supports_reasoning") is not None:
        return info["supports_reasoning"] is True
    model = str(getattr(provider, "model", "") or "").rsplit("/", 1)[-1]
    return model.startswith(REASONING_MODELS)


def _system(system):
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    if not isinstance(system, list):
        raise _bad("`system` must be a string or a list of text blocks.", param="system")
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _bad(f"system[{i}]: only text blocks can be carried.", param="system")
        texts.append(block["text"])
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _turns(messages, provider):
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise _bad(f"{where}.content must be a string or a list of content blocks.")
        if role == "user":
            out.extend(_user_turn(blocks, where, provider))
        elif role == "assistant":
            turn = _assistant_turn(blocks, where)
            if turn is not None:
                out.append(turn)
        else:
            raise _bad(f"{where}.role must be user or assistant.")
    return out


def _user_turn(blocks, where, provider):
    """Tool results become tool messages (first, as OpenAI wants them right after the call), the
    rest one user message."""
    results, parts = [], []
    for j, block in enumerate(blocks):
        here = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            results.append(_tool_result(block, here))
        else:
            part = _part(block, kind, here, provider)
            if part is not None:
                parts.append(part)
    turns = results
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        content = "\n".join(p["text"] for p in parts) if only_text and len(parts) == 1 else parts
        turns.append({"role": "user", "content": content})
    return turns


def _part(block, kind, where, provider):
    """One user content block as an OpenAI content part."""
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _bad(f"{where}.text must be a string.")
        return {"type": "text", "text": block["text"]} if block["text"] else None
    if kind == "image":
        source = block.get("source") if isinstance(block.get("source"), dict) else {}
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            url = f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
        elif source.get("type") == "url" and isinstance(source.get("url"), str):
            url = source["url"]
        else:
            raise _bad(f"{where}.source must be a base64 or url image source.")
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document":
        return _document(block, where, provider)
    raise _bad(f"{where}: content block type {kind!r} cannot be carried to {provider.name}.")


def _document(block, where, provider):
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if provider.name not in FILE_PROVIDERS:
        raise _bad(f"{where}: a document block cannot be carried to {provider.name} (only text documents are).")
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") or "application/pdf"
        return {"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                         "file_data": f"data:{media};base64,{source['data']}"}}
    raise _bad(f"{where}: a document source of type {source.get('type')!r} cannot be carried to {provider.name}.")


def _tool_result(block, where):
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{where}.tool_use_id is required.")
    content = block.get("content")
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _bad(f"{where}.content[{k}]: only text can be carried in a tool result off Anthropic.")
            texts.append(part.get("text") or "")
        content = "\n".join(texts)
    elif content is None:
        content = ""
    elif not isinstance(content, str):
        raise _bad(f"{where}.content must be a string or a list of text blocks.")
    if block.get("is_error"):
        content = f"Error: {content}"
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _assistant_turn(blocks, where):
    texts, calls = [], []
    for j, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(f"{where}.content[{j}]: a tool_use block needs an id and a name.")
            calls.append(shapes.tool_call(block["id"], block["name"], block.get("input") or {}))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' thoughts: see the module docstring
        else:
            raise _bad(f"{where}.content[{j}]: content block type {kind!r} cannot be carried in an assistant turn.")
    if not texts and not calls:
        return None
    return shapes.message("".join(texts) if texts else None, calls)


def _tool(tool, provider):
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise _bad("tools[] must be objects with a name.", param="tools")
    if tool.get("type") not in (None, "custom"):
        raise _bad(f"The tool type {tool['type']!r} ({tool['name']}) runs on Anthropic's servers and cannot be "
                   f"carried to {provider.name}.", param="tools")
    function = {"name": tool["name"],
                "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice):
    kind = choice.get("type") if isinstance(choice, dict) else None
    out = {}
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _bad("tool_choice must be {type: auto | any | none | tool}.", param="tool_choice")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


# ---- answers: chat -> Messages ----------------------------------------------------------------

def message_id(chat_id=None):
    """A Messages id (`msg_...`) for a translated answer."""
    return f"msg_{chat_id}" if isinstance(chat_id, str) and chat_id else shapes.new_id("msg")


def from_chat(answer, model):
    """A chat.completion as a Messages `message` (the first choice)."""
    choice = (answer.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content = []
    reasoning = msg.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if isinstance(msg.get("content"), str) and msg["content"]:
        content.append({"type": "text", "text": msg["content"]})
    for call in msg.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or shapes.new_id("toolu"),
                        "name": function.get("name"), "input": _arguments(function.get("arguments"))})
    return {"id": message_id(answer.get("id")), "type": "message", "role": "assistant",
            "model": model, "content": content,
            "stop_reason": STOP_REASONS.get(choice.get("finish_reason"), "end_turn"), "stop_sequence": None,
            "usage": messages_usage(answer.get("usage"))}


def _arguments(arguments):
    """A tool call's arguments as the object Messages wants; text that is not a JSON object is kept
    whole under `arguments` rather than lost."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def events_from_chunks(chunks, model):
    """Chat chunks as the Messages event sequence: message_start, ping, one content block per kind
    (thinking, text, each tool call), message_delta with the stop reason and usage, message_stop."""
    state = _Blocks()
    started = False
    stop, usage = None, {}
    for chunk in chunks:
        if not started:
            started = True
            yield {"type": "message_start", "message": {
                "id": message_id(chunk.get("id")), "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}
            yield {"type": "ping"}
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            yield from state.delta(choice.get("delta") or {})
            if choice.get("finish_reason"):
                stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")
    if not started:
        raise errors.UpstreamError("Upstream stream ended before its first chunk.", code="upstream_stream_incomplete")
    yield from state.close()
    yield {"type": "message_delta", "delta": {"stop_reason": stop or "end_turn", "stop_sequence": None},
           "usage": messages_usage(usage)}
    yield {"type": "message_stop"}


class _Blocks:
    """The open content block of a translated stream, and the next block index."""

    __slots__ = ("kind", "index", "tools")

    def __init__(self):
        self.kind = None  # "thinking", "text", or ("tool", openai index)
        self.index = -1
        self.tools = {}  # OpenAI tool-call index -> block index

    def open(self, kind, block):
        yield from self.close()
        self.kind, self.index = kind, self.index + 1
        yield {"type": "content_block_start", "index": self.index, "content_block": block}

    def close(self):
        if self.kind is not None:
            if self.kind == "thinking":  # translated thoughts carry no signature
                yield {"type": "content_block_delta", "index": self.index,
                       "delta": {"type": "signature_delta", "signature": ""}}
            yield {"type": "content_block_stop", "index": self.index}
            self.kind = None

    def delta(self, delta):
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            if self.kind != "thinking":
                yield from self.open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            yield {"type": "content_block_delta", "index": self.index,
                   "delta": {"type": "thinking_delta", "thinking": reasoning}}
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.kind != "text":
                yield from self.open("text", {"type": "text", "text": ""})
            yield {"type": "content_block_delta", "index": self.index, "delta": {"type": "text_delta", "text": text}}
        for call in delta.get("tool_calls") or ():
            yield from self.tool_delta(call)

    def tool_delta(self, call):
        key = ("tool", call.get("index", 0))
        function = call.get("function") or {}
        if self.kind != key:
            if key in self.tools:  # a call interleaved with another: OpenAI never does this
                raise errors.UpstreamError("Upstream interleaved two tool calls' arguments.",
                                           code="upstream_invalid_answer")
            yield from self.open(key, {"type": "tool_use", "id": call.get("id") or shapes.new_id("toolu"),
                                       "name": function.get("name") or "", "input": {}})
            self.tools[key] = self.index
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            yield {"type": "content_block_delta", "index": self.index,
                   "delta": {"type": "input_json_delta", "partial_json": piece}}

