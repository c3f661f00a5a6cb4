"""Anthropic's Messages API: OpenAI chat bodies -> POST /v1/messages, answers and SSE events back.

Model strings: `anthropic/<model>` and bare `claude-*` names (as LiteLLM resolves them). Settings:
`api_key` or ANTHROPIC_API_KEY (sent as `x-api-key`), else ANTHROPIC_AUTH_TOKEN (a bearer token);
`api_base` or ANTHROPIC_API_BASE / ANTHROPIC_BASE_URL, default https://api.anthropic.com.
"""

import re

import orjson

from gateway import errors
from gateway.providers import shapes
from gateway.providers.base import PreparedBody
from gateway.providers.messages import openai_usage  # Anthropic usage -> OpenAI usage (cache counts kept)
from gateway.providers.base import Provider
from gateway.providers.base import UpstreamRequest
from gateway.providers.base import dumps
from gateway.providers.base import env_first
from gateway.errors import ConfigError

DEFAULT_API_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# Anthropic requires max_tokens; LiteLLM fills in the same default when a request has none.
DEFAULT_MAX_TOKENS = 4096

FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}
# Anthropic's error `type` -> the HTTP status it is documented with (for errors inside a stream).
ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
    "overloaded_error": 529,
}
# How Anthropic words a prompt that does not fit the context window.
_TOO_LONG = re.compile(r"prompt is too long|exceed(s|ed)? (the )?context (limit|window)", re.I)


MESSAGES_ENDPOINTS = ("messages", "count_tokens")
# What /v1/messages/count_tokens takes (it refuses max_tokens, sampling and the rest).
COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "context_management",
                          "mcp_servers"})


class MessagesBody(PreparedBody):
    """A prepared Messages body and the headers its request goes with (the client's
    `anthropic-version` and `anthropic-beta` over the deployment's own)."""

    __slots__ = ("headers",)


class AnthropicProvider(Provider):
    """`anthropic/<model>` and bare `claude-*` names on the Messages API."""

    name = "anthropic"
    title = "Anthropic"
    prefixes = ("anthropic",)
    bare_models = re.compile(r"^claude-")
    native_completions = False
    embeddings = False
    streaming = True
    tools = True
    vision = True
    supported_params = frozenset({
        "temperature", "top_p", "stop", "max_tokens", "max_completion_tokens", "user", "tools",
        "tool_choice", "parallel_tool_calls",
    })
    stream_format = "sse"
    native_messages = True  # /v1/messages bodies, answers and events pass through unchanged
    native_count_tokens = True
    key_env = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")  # x-api-key, else a bearer token

    def __init__(self, config, upstream_model):
        params = config.params
        custom_base = params.get("api_base") or params.get("base_url")
        env_base = env_first(("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"))
        api_base = (custom_base or env_base or DEFAULT_API_BASE).rstrip("/")
        key, token = params.get("api_key"), None
        # Environment credentials go only to Anthropic itself or the base set beside them in the
        # environment, never to a server one deployment names (same rule as OPENAI_API_KEY).
        own = not custom_base or api_base in (DEFAULT_API_BASE, (env_base or "").rstrip("/"))
        if key is None and own:
            key = self.env_key(None, names=self.key_env[0])
            token = None if key else self.env_key(None, names=self.key_env[1])
        if not key and not token and api_base == DEFAULT_API_BASE:
            raise ConfigError(f"model_list[{config.index}].litellm_params.api_key: required for anthropic "
                              "(or set ANTHROPIC_API_KEY)")
        super().__init__(config, upstream_model, secrets=(key, token))
        self.api_base = api_base
        if api_base.endswith("/v1/messages"):
            self.url = api_base
        elif api_base.endswith("/v1"):
            self.url = api_base + "/messages"
        else:
            self.url = api_base + "/v1/messages"
        headers = {"content-type": "application/json", "accept": "application/json",
                   "anthropic-version": API_VERSION}
        if key:
            headers["x-api-key"] = key
        elif token:
            headers["authorization"] = f"Bearer {token}"
        headers.update(params.get("headers") or {})
        headers.update(params.get("extra_headers") or {})
        self.headers = headers

    # ---- request ---------------------------------------------------------------------------

    def prepare_body(self, endpoint, body):
        """A chat body as the base prepares it; a Messages body (`messages`, `count_tokens`) as the
        client sent it, with its model set, Anthropic's `metadata.user_id` kept and the client's
        `anthropic-version` / `anthropic-beta` headers carried beside it (MessagesBody)."""
        prepared = super().prepare_body(endpoint, body)
        if endpoint not in MESSAGES_ENDPOINTS:
            return prepared
        if endpoint == "count_tokens":  # the prompt only, as count_tokens takes it
            out = MessagesBody((k, v) for k, v in prepared.items() if k in COUNT_FIELDS)
        else:
            out = MessagesBody(prepared)
            out.pop("stream_options", None)
            metadata = body.get("metadata")
            if isinstance(metadata, dict) and metadata.get("user_id") is not None:
                out["metadata"] = {"user_id": metadata["user_id"]}
        client = body.get("anthropic_headers")
        out.headers = {**self.headers, **client} if client else self.headers
        return out

    def build_request(self, endpoint, body, stream):
        """POST {api_base}/v1/messages with the translated body (a Messages body as it is)."""
        if endpoint == "messages":
            return UpstreamRequest("POST", self.url, body.headers, dumps(body))
        if endpoint == "count_tokens":
            return UpstreamRequest("POST", self.url + "/count_tokens", body.headers, dumps(body))
        return UpstreamRequest("POST", self.url, self.headers, dumps(self.messages_body(body, stream)))

    def messages_body(self, body, stream):
        """The Messages API body for an OpenAI chat body (pure)."""
        system, messages = convert_messages(body.get("messages") or [])
        max_tokens = next((body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None),
                          DEFAULT_MAX_TOKENS)
        out = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        if system:
            out["system"] = system
        for key in ("temperature", "top_p", "top_k", "thinking"):  # the last two: Anthropic's own, as given
            if body.get(key) is not None:
                out[key] = body[key]
        stop = body.get("stop")
        if stop:
            out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if body.get("user"):
            out["metadata"] = {"user_id": body["user"]}
        tools = body.get("tools")
        if tools:
            out["tools"] = [convert_tool(t) for t in tools]
            choice = convert_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
            if choice:
                out["tool_choice"] = choice
        if stream:
            out["stream"] = True
        return out

    # ---- answers ---------------------------------------------------------------------------

    def parse_response(self, endpoint, data, body):
        """A Messages API `message` as a chat.completion (as it is, for a Messages client)."""
        if endpoint in MESSAGES_ENDPOINTS:
            if not isinstance(data, dict) or (endpoint == "messages" and data.get("type") != "message"):
                raise ValueError("not a message")
            return data
        texts, calls, thinking = [], [], []
        for block in data.get("content") or []:
            kind = block.get("type")
            if kind == "text":
                texts.append(block.get("text") or "")
            elif kind == "tool_use":
                calls.append(shapes.tool_call(block.get("id"), block.get("name"), block.get("input") or {}))
            elif kind == "thinking":
                thinking.append(block.get("thinking") or "")
        msg = shapes.message("".join(texts) if texts or not calls else None, calls)
        if thinking:  # LiteLLM's name for a reasoning model's thoughts
            msg["reasoning_content"] = "".join(thinking)
        finish = FINISH_REASONS.get(data.get("stop_reason"), "stop")
        return shapes.chat_completion(data.get("model") or self.model, [(msg, finish)],
                                      openai_usage(data.get("usage")), id_=data.get("id"))

    def new_stream_state(self, endpoint, body):
        """Base state (its `tools` maps Anthropic block index -> OpenAI tool-call index) + usage so far."""
        state = super().new_stream_state(endpoint, body)
        state["usage"] = {}
        return state

    def parse_stream_event(self, endpoint, data, state):
        """One Messages API SSE event -> OpenAI chunks (an `error` event raises); for a Messages
        client, the event itself."""
        event = orjson.loads(data)
        kind = event.get("type")
        if endpoint == "messages":
            if kind == "error":
                raise self.stream_error(event.get("error") or {})
            if kind == "message_stop":
                state["ended"] = True
            return [event]
        if kind == "content_block_delta":
            delta = event["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                return [shapes.chat_chunk(state, {"content": delta.get("text") or ""})]
            if dtype == "input_json_delta":
                piece = delta.get("partial_json") or ""
                if not piece:
                    return []
                call = {"index": state["tools"][event["index"]], "function": {"arguments": piece}}
                return [shapes.chat_chunk(state, {"tool_calls": [call]})]
            if dtype == "thinking_delta":
                return [shapes.chat_chunk(state, {"reasoning_content": delta.get("thinking") or ""})]
            return []  # signature_delta, citations_delta: nothing OpenAI-shaped to say
        if kind == "message_start":
            message = event.get("message") or {}
            state["id"] = message.get("id") or state["id"]
            state["model"] = message.get("model") or state["model"]
            state["usage"] = dict(message.get("usage") or {})
            return [shapes.chat_chunk(state, {"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = state["tools"][event["index"]] = len(state["tools"])
                call = {"index": index, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}
                return [shapes.chat_chunk(state, {"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [shapes.chat_chunk(state, {"content": block["text"]})]
            return []
        if kind == "message_delta":
            # usage here is cumulative: it replaces what message_start said
            state["usage"].update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            stop = (event.get("delta") or {}).get("stop_reason")
            return [shapes.chat_chunk(state, {}, FINISH_REASONS.get(stop, "stop"))] if stop else []
        if kind == "message_stop":  # the documented last event of every complete stream
            state["ended"] = True
            if not state["include_usage"]:
                return []
            return [{"id": state["id"], "object": "chat.completion.chunk", "created": state["created"],
                     "model": state["model"], "choices": [], "usage": openai_usage(state["usage"])}]
        if kind == "error":
            raise self.stream_error(event.get("error") or {})
        return []  # ping, and event types added after this was written

    # ---- errors ----------------------------------------------------------------------------

    def stream_error(self, err):
        """An `error` event inside a 200 stream: an UpstreamError carrying Anthropic's message."""
        etype = err.get("type") if isinstance(err.get("type"), str) else "api_error"
        message = self.scrub(f"Upstream error from anthropic: {err.get('message') or etype}")
        return errors.UpstreamError(f"{message} (deployment: {self.label})", code=etype,
                                    upstream_status=ERROR_STATUS.get(etype, 500))

    def map_error(self, status, raw, headers):
        """`{"type": "error", "error": {"type", "message"}}` -> the gateway's error for the status."""
        etype, message = None, None
        data = shapes.error_json(raw)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            etype = err.get("type") if isinstance(err.get("type"), str) else None
            message = err.get("message") if isinstance(err.get("message"), str) else None
        if not message:
            text = raw.decode("utf-8", "replace").strip() if raw else ""
            message = text[:500] or f"upstream answered HTTP {status}"
        if status == 400 and _TOO_LONG.search(message):
            code = "context_length_exceeded"
        elif status in (401, 413, 429):
            code = None  # keep the codes OpenAI clients know (invalid_api_key, rate_limit_exceeded, ...)
        else:
            code = etype
        headers = headers or {}
        retry_after = headers.get("retry-after")
        request_id = headers.get("request-id") or (data.get("request_id") if isinstance(data, dict) else None)
        return errors.from_upstream_status(
            status, self.scrub(f"Upstream error from anthropic: {message}"), code=code,
            headers={"Retry-After": retry_after} if retry_after and status == 429 else None,
            request_id=request_id, deployment=self.label)


# ---- OpenAI messages -> Anthropic system + alternating turns ------------------------------------

def _bad(message):
    return errors.BadRequestError(message, param="messages")


def _text_block(text, part=None):
    block = {"type": "text", "text": text}
    if part and part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def content_blocks(content, where, images=True):
    """OpenAI message content (string or parts) -> Anthropic text/image blocks; empty text dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        return [_text_block(content)] if content else []
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of content parts.")
    blocks = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text"):
            if part.get("text"):
                blocks.append(_text_block(part["text"], part))
        elif kind == "image_url" and images:
            source_kind, media_type, value = shapes.image_source(part)
            source = ({"type": "base64", "media_type": media_type, "data": value} if source_kind == "base64"
                      else {"type": "url", "url": value})
            blocks.append({"type": "image", "source": source})
        else:
            raise _bad(f"{where}: content part type {kind!r} is not supported by anthropic here.")
    return blocks


def convert_messages(messages):
    """(system blocks, turns): system/developer text goes top-level; tool results become user
    turns; consecutive same-role turns are merged, as Anthropic wants roles to alternate."""
    system, turns = [], []
    legacy_ids = {}  # legacy function_call name -> the id given to its tool_use block
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad(f"{where} must be an object.")
        role = m.get("role")
        if role in ("system", "developer"):
            system.extend(content_blocks(m.get("content"), where, images=False))
            continue
        if role == "user":
            blocks = content_blocks(m.get("content"), where)
        elif role == "assistant":
            blocks = assistant_blocks(m, where, legacy_ids, i)
        elif role in ("tool", "function"):
            call_id = m.get("tool_call_id") or legacy_ids.pop(m.get("name"), None)
            if not call_id:
                raise _bad(f"{where}.tool_call_id is required.")
            result = {"type": "tool_result", "tool_use_id": call_id}
            content = m.get("content")
            if isinstance(content, list):
                result["content"] = content_blocks(content, where)
            elif content:
                result["content"] = str(content)
            blocks, role = [result], "user"
        else:
            raise _bad(f"{where}.role {role!r} is not supported.")
        if not blocks:
            continue
        if m.get("cache_control"):  # LiteLLM's message-level prompt caching marks the last block
            blocks[-1] = {**blocks[-1], "cache_control": m["cache_control"]}
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        # Anthropic wants a user turn's tool_result blocks before any other content.
        turn["content"].sort(key=lambda b: b.get("type") != "tool_result")
    return system, turns


def assistant_blocks(m, where, legacy_ids, position):
    """An assistant message: its text, then one tool_use block per tool call."""
    blocks = content_blocks(m.get("content"), where, images=False)
    for call in m.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not call.get("id") or not function.get("name"):
            raise _bad(f"{where}.tool_calls[] needs an id and function.name.")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"],
                       "input": shapes.tool_arguments(function.get("arguments"))})
    legacy = m.get("function_call")
    if isinstance(legacy, dict) and legacy.get("name"):
        call_id = legacy_ids[legacy["name"]] = f"toolu_legacy_{position}"
        blocks.append({"type": "tool_use", "id": call_id, "name": legacy["name"],
                       "input": shapes.tool_arguments(legacy.get("arguments"))})
    return blocks


def convert_tool(tool):
    """An OpenAI function tool -> {name, description, input_schema}; Anthropic's own tool types
    (web_search, bash, ...) pass through unchanged."""
    if not isinstance(tool, dict):
        raise errors.BadRequestError("tools[] must be objects.", param="tools")
    if tool.get("type", "function") != "function":
        return tool
    function = tool.get("function") or {}
    if not function.get("name"):
        raise errors.BadRequestError("tools[].function.name is required.", param="tools")
    out = {"name": function["name"],
           "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    cache = tool.get("cache_control") or function.get("cache_control")
    if cache:
        out["cache_control"] = cache
    return out


def convert_tool_choice(choice, parallel):
    """OpenAI tool_choice (+ parallel_tool_calls) -> Anthropic's tool_choice object, or None."""
    if choice is None or choice == "auto":
        out = {"type": "auto"} if parallel is False else None
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise errors.BadRequestError("tool_choice must be auto, none, required or a named function.",
                                     param="tool_choice")
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


PROVIDERS = (AnthropicProvider,)
