"""Cohere: Chat v2 (`/v2/chat`, SSE stream of typed events) and Embed v2 (`/v2/embed`).

Model strings as LiteLLM users write them: `cohere/<model>`, `cohere_chat/<model>`, and bare
`command*` / `embed-english-*` / `embed-multilingual-*` / `embed-v4.0`. Key from
`litellm_params.api_key`, else `COHERE_API_KEY` or `CO_API_KEY`; base from `api_base`, else
`COHERE_API_BASE`, else https://api.cohere.com.
"""

import re

import orjson

from gateway import errors
from gateway.providers import rerank
from gateway.providers import shapes
from gateway.providers.base import Provider
from gateway.providers.base import UpstreamRequest
from gateway.providers.base import dumps
from gateway.providers.base import env_first
from gateway.errors import ConfigError

DEFAULT_BASE = "https://api.cohere.com"
KEY_ENVS = ("COHERE_API_KEY", "CO_API_KEY")
BASE_ENV = "COHERE_API_BASE"
# LiteLLM configs often name a full endpoint (`.../v1/chat`, `.../v2/chat`, `.../v1/generate`): keep the root.
_ENDPOINT_SUFFIX = re.compile(r"/v[12](/(chat|generate|embed|rerank))?/?$")

FINISH = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "tool_calls",
          "ERROR_TOXIC": "content_filter", "ERROR_LIMIT": "length", "USER_CANCEL": "stop"}
# Finish reasons that mean the generation failed: reported as an upstream error, never as success.
FAILED = ("ERROR", "TIMEOUT")
# Cohere-only request fields a deployment (litellm_params) or a client may set; sent as they are.
NATIVE_KEYS = ("k", "safety_mode", "documents", "citation_options", "strict_tools", "thinking", "priority")
TOOL_CHOICE = {"required": "REQUIRED", "none": "NONE"}


class CohereProvider(Provider):
    """`cohere/<model>`: chat, streaming, tools, images (vision models) and embeddings."""

    name = "cohere"
    title = "Cohere"
    prefixes = ("cohere", "cohere_chat")
    bare_models = re.compile(r"^(command(-|$)|embed-(english|multilingual)-|embed-v4)")
    native_completions = False
    embeddings = True
    streaming = True
    tools = True
    vision = True  # image_url parts, for Cohere's vision models (command-a-vision, aya-vision)
    supported_params = frozenset({
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "frequency_penalty",
        "presence_penalty", "tools", "tool_choice", "response_format", "dimensions",
    })
    key_env = KEY_ENVS
    surfaces = frozenset({"rerank"})  # /v2/rerank

    def __init__(self, config, upstream_model):
        params = config.params
        custom_base = params.get("api_base") or params.get("base_url")
        env_base = env_first(BASE_ENV)
        # The key env vars go only to Cohere itself or to the base named beside them (COHERE_API_BASE),
        # never to some other api_base written on one deployment.
        own = not custom_base or custom_base in (DEFAULT_BASE, env_base)
        key = self.env_key(params.get("api_key"), own_upstream=own)
        if not key:
            raise ConfigError(f"model_list[{config.index}].litellm_params.api_key: required for cohere "
                              f"(or set {' or '.join(KEY_ENVS)})")
        super().__init__(config, upstream_model, secrets=(key,))
        self.api_base = _ENDPOINT_SUFFIX.sub("", (custom_base or env_base or DEFAULT_BASE).rstrip("/"))
        self.urls = {"chat": self.upstream_base + "/v2/chat", "embeddings": self.upstream_base + "/v2/embed",
                     "rerank": self.upstream_base + "/v2/rerank"}
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": f"Bearer {key}"}
        headers.update(params.get("headers") or {})
        headers.update(params.get("extra_headers") or {})
        self.headers = headers
        self.stream_headers = {**headers, "Accept": "text/event-stream"}

    # ---- requests -------------------------------------------------------------------------------

    def build_request(self, endpoint, body, stream):
        """An OpenAI chat or embeddings body as a Cohere v2 request."""
        if endpoint == "embeddings":
            return UpstreamRequest("POST", self.urls["embeddings"], self.headers, dumps(embed_body(body)))
        if endpoint == "rerank":
            return UpstreamRequest("POST", self.urls["rerank"], self.headers, dumps(rerank.cohere_body(body)))
        if endpoint != "chat":
            raise errors.BadRequestError("Cohere answers /completions through chat.", code="unsupported_endpoint")
        return UpstreamRequest("POST", self.urls["chat"], self.stream_headers if stream else self.headers,
                               dumps(chat_body(body, stream)))

    # ---- answers --------------------------------------------------------------------------------

    def parse_response(self, endpoint, data, body):
        """A Cohere chat or embed answer in OpenAI's shape (a rerank answer in Cohere's own)."""
        if endpoint == "rerank":
            return rerank.from_cohere(data, body)
        if endpoint == "embeddings":
            vectors = (data.get("embeddings") or {}).get("float")
            if not isinstance(vectors, list):
                raise errors.UpstreamError(f"Cohere answered without float embeddings (deployment: {self.label})")
            billed = (data.get("meta") or {}).get("billed_units") or {}
            return shapes.embeddings(self.model, vectors, billed.get("input_tokens"))
        message = data.get("message") or {}
        finish = self._finish(data.get("finish_reason"), message.get("tool_calls"))
        calls = [shapes.tool_call(c.get("id"), (c.get("function") or {}).get("name"),
                                  (c.get("function") or {}).get("arguments"))
                 for c in message.get("tool_calls") or []]
        parts = message.get("content") or []
        text = "".join(p.get("text") or "" for p in parts if p.get("type") == "text")
        msg = shapes.message(text if text or not calls else None, calls)
        thinking = "".join(p.get("thinking") or "" for p in parts if p.get("type") == "thinking")
        if thinking:
            msg["reasoning_content"] = thinking
        return shapes.chat_completion(self.model, [(msg, finish)], usage_of(data.get("usage")), id_=data.get("id"))

    def parse_stream_event(self, endpoint, data, state):
        """One Cohere v2 stream event (its JSON carries `type`) as OpenAI chunks."""
        if data.strip() == b"[DONE]":
            return None
        event = orjson.loads(data)
        kind = event.get("type")
        delta = event.get("delta") or {}
        message = delta.get("message") or {}
        if kind == "message-start":
            if event.get("id") and not state["role_sent"]:
                state["id"] = event["id"]
            state["role_sent"] = True
            return [shapes.chat_chunk(state, {"role": "assistant", "content": ""})]
        if kind == "content-delta":
            content = message.get("content") or {}
            if content.get("thinking"):
                return [shapes.chat_chunk(state, {"reasoning_content": content["thinking"]})]
            return [shapes.chat_chunk(state, {"content": content.get("text") or ""})] if content.get("text") else []
        if kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            function = call.get("function") or {}
            index = state["tools"].setdefault(event.get("index", 0), len(state["tools"]))
            piece = {"index": index, "id": call.get("id") or shapes.tool_call(None, "", "")["id"],
                     "type": "function", "function": {"name": function.get("name"),
                                                      "arguments": function.get("arguments") or ""}}
            return [shapes.chat_chunk(state, {"tool_calls": [piece]})]
        if kind == "tool-call-delta":
            arguments = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments") or ""
            index = state["tools"].get(event.get("index", 0), 0)
            if not arguments:
                return []
            return [shapes.chat_chunk(state, {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})]
        if kind == "message-end":  # the documented last event
            state["ended"] = True
            finish = self._finish(delta.get("finish_reason"), state["tools"], delta.get("error"))
            state["usage"] = usage_of(delta.get("usage"))
            chunks = [shapes.chat_chunk(state, {}, finish)]
            if state["include_usage"]:
                chunks.append(usage_chunk(state))
            return chunks
        # content-start/-end, tool-plan-delta, tool-call-end, citation-*, debug: nothing OpenAI shows.
        return []

    def _finish(self, reason, tool_calls, error=None):
        """OpenAI's finish_reason for Cohere's; a failed generation is an upstream error."""
        if reason in FAILED:
            detail = f": {error}" if error else ""
            raise errors.UpstreamError(self.scrub(
                f"Upstream error from cohere: the generation ended with {reason}{detail} (deployment: {self.label})"))
        if tool_calls and reason in (None, "COMPLETE", "TOOL_CALL"):
            return "tool_calls"
        return FINISH.get(reason, "stop")

    # ---- errors ---------------------------------------------------------------------------------

    def map_error(self, status, raw, headers):
        """Cohere's `{"message": ...}` errors; `too many tokens` is a context window error."""
        data = shapes.error_json(raw)
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, str) or not message:
            message = (raw or b"").decode("utf-8", "replace").strip()[:500] or f"upstream answered HTTP {status}"
        code = None
        if status in (400, 422) and "too many tokens" in message.lower():
            code = "context_length_exceeded"
        # 498 is Cohere's "invalid token" (an authentication failure); 499 means the request was cancelled
        # upstream, which the client did not do: report it as an upstream failure.
        mapped = {498: 401, 499: 502}.get(status, status)
        retry_after = headers.get("retry-after") if headers else None
        err = errors.from_upstream_status(
            mapped, self.scrub(f"Upstream error from cohere: {message}"), code=code,
            headers={"Retry-After": retry_after} if retry_after and status == 429 else None,
            request_id=(headers.get("x-request-id") or headers.get("x-trace-id")) if headers else None,
            deployment=self.label)
        err.upstream_status = status
        return err


def chat_body(body, stream):
    """The Cohere v2 chat request for an OpenAI chat body (pure)."""
    out = {"model": body["model"], "messages": [_message(m) for m in body.get("messages") or []]}
    if body.get("temperature") is not None:
        out["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        out["p"] = body["top_p"]
    limit = body.get("max_completion_tokens")
    limit = body.get("max_tokens") if limit is None else limit
    if limit is not None:
        out["max_tokens"] = limit
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for key in ("seed", "frequency_penalty", "presence_penalty"):
        if body.get(key) is not None:
            out[key] = body[key]
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools:
        if isinstance(choice, dict):
            # Cohere cannot name the tool to call: offer only that one, and require a call.
            wanted = (choice.get("function") or {}).get("name")
            tools = [t for t in tools if (t.get("function") or {}).get("name") == wanted]
            if not tools:
                raise errors.BadRequestError(f"tool_choice names `{wanted}`, which is not in `tools`.",
                                             param="tool_choice")
            choice = "required"
        out["tools"] = [_tool(t) for t in tools]
        if choice in TOOL_CHOICE:
            out["tool_choice"] = TOOL_CHOICE[choice]
    fmt = _response_format(body.get("response_format"))
    if fmt:
        out["response_format"] = fmt
    for key in NATIVE_KEYS:
        if body.get(key) is not None:
            out[key] = body[key]
    out["stream"] = bool(stream)
    return out


def embed_body(body):
    """The Cohere v2 embed request for an OpenAI embeddings body (pure)."""
    out = {"model": body["model"], "texts": shapes.embedding_inputs(body),
           "input_type": body.get("input_type") or "search_document", "embedding_types": ["float"]}
    if body.get("dimensions") is not None:
        out["output_dimension"] = body["dimensions"]
    if body.get("truncate") is not None:
        out["truncate"] = body["truncate"]
    return out


def _message(m):
    """One OpenAI message as a Cohere v2 message."""
    role = m.get("role")
    content = m.get("content")
    if role in ("system", "developer"):
        return {"role": "system", "content": shapes.text_of(content)}
    if role == "user":
        return {"role": "user", "content": _user_content(content)}
    if role == "assistant":
        out = {"role": "assistant"}
        text = shapes.text_of(content)
        calls = m.get("tool_calls") or ([{"id": m["function_call"].get("name"), "function": m["function_call"]}]
                                        if isinstance(m.get("function_call"), dict) else [])
        if calls:
            out["tool_calls"] = [{"id": c.get("id"), "type": "function", "function": {
                "name": (c.get("function") or {}).get("name"),
                "arguments": _arguments((c.get("function") or {}).get("arguments"))}} for c in calls]
            if text:
                out["tool_plan"] = text  # Cohere's own answers carry a tool call's preamble here
        else:
            out["content"] = text
        return out
    if role in ("tool", "function"):
        return {"role": "tool", "tool_call_id": m.get("tool_call_id") or m.get("name") or "",
                "content": shapes.text_of(content)}
    raise errors.BadRequestError(f"Unsupported message role for cohere: {role!r}", param="messages")


def _user_content(content):
    """A user message's content: a string, or Cohere's text / image_url parts."""
    if not isinstance(content, list):
        return content if isinstance(content, str) else ""
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text"):
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "image_url":
            shapes.image_source(part)  # validates: http(s) URL or base64 data URL; Cohere takes both
            image = part["image_url"] if isinstance(part["image_url"], dict) else {"url": part["image_url"]}
            parts.append({"type": "image_url", "image_url": {k: image[k] for k in ("url", "detail") if image.get(k)}})
        else:
            raise errors.BadRequestError(f"cohere does not take `{kind}` message parts.", param="messages")
    return parts


def _arguments(arguments):
    """Tool call arguments as the JSON string Cohere expects."""
    if isinstance(arguments, str):
        return arguments or "{}"
    return orjson.dumps(arguments if arguments is not None else {}).decode()


def _tool(tool):
    """An OpenAI tool in Cohere v2's (OpenAI-like) shape, without fields Cohere does not know."""
    function = tool.get("function") or {}
    out = {"name": function.get("name")}
    if function.get("description"):
        out["description"] = function["description"]
    out["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "function", "function": out}


def _response_format(fmt):
    """OpenAI response_format -> Cohere's: json_object, json_schema (as json_object + schema), text."""
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        return {"type": "json_object", **({"json_schema": schema} if schema else {})}
    if kind == "text":
        return {"type": "text"}
    raise errors.BadRequestError(f"cohere does not support response_format type {kind!r}.",
                                 param="response_format")


def usage_of(usage):
    """OpenAI usage from Cohere's: counted `tokens` first, else `billed_units`."""
    usage = usage or {}
    counts = usage.get("tokens") or usage.get("billed_units") or {}
    return shapes.usage(counts.get("input_tokens"), counts.get("output_tokens"))


def usage_chunk(state):
    """OpenAI's last stream chunk for include_usage: no choices, the usage."""
    return {"id": state["id"], "object": "chat.completion.chunk", "created": state["created"],
            "model": state["model"], "choices": [], "usage": state["usage"] or shapes.usage(0, 0)}


PROVIDERS = (CohereProvider,)
