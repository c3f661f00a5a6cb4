"""AI21: Jamba chat (`/studio/v1/chat/completions`, OpenAI-like) and legacy Jurassic-2 `complete`.

Model strings as LiteLLM users write them: `ai21/<model>`, `ai21_chat/<model>`, bare `jamba-*` and
`j2-light` / `j2-mid` / `j2-ultra` (any `j2-*`/`j1-*` name uses `/studio/v1/{model}/complete`; AI21 has
retired Jurassic, the translation stays for configs that still name it). Key from
`litellm_params.api_key`, else `AI21_API_KEY`; base from `api_base`, else `AI21_API_BASE`, else
https://api.ai21.com/studio/v1 (a bare host gets `/studio/v1` appended).
"""

import re
from urllib.parse import quote

import orjson

from gateway import errors
from gateway.providers import shapes
from gateway.providers.base import Provider
from gateway.providers.base import UpstreamRequest
from gateway.providers.base import dumps
from gateway.providers.base import env_first
from gateway.providers.prompts import prompt_builder
from gateway.errors import ConfigError

DEFAULT_BASE = "https://api.ai21.com/studio/v1"
KEY_ENV = "AI21_API_KEY"
BASE_ENV = "AI21_API_BASE"
DONE = b"[DONE]"

JAMBA_PARAMS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n", "seed", "tools",
    "tool_choice", "response_format",
})
JURASSIC_PARAMS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n", "presence_penalty",
    "frequency_penalty",
})
# AI21-only request fields (RAG documents) a deployment or client may set on Jamba; sent as they are.
JAMBA_NATIVE = ("documents",)
JAMBA_FINISH = {"stop": "stop", "endoftext": "stop", "length": "length", "tool_calls": "tool_calls",
                "content_filter": "content_filter"}
JURASSIC_FINISH = {"endoftext": "stop", "stop": "stop", "length": "length"}
_CONTEXT = re.compile(r"context (length|window)|(prompt|input) (is )?too long|too many (input |prompt )?tokens", re.I)


class AI21Provider(Provider):
    """`ai21/<model>`: Jamba chat with streaming and tools; Jurassic-2 completions (no stream, no tools)."""

    name = "ai21"
    title = "AI21 (Jamba, Jurassic-2)"
    prefixes = ("ai21", "ai21_chat")
    bare_models = re.compile(r"^(jamba-|j2-)")
    native_completions = False  # Jamba; Jurassic deployments answer /completions natively (set per instance)
    embeddings = False
    streaming = True
    tools = True
    vision = False
    supported_params = JAMBA_PARAMS
    key_env = KEY_ENV

    def __init__(self, config, upstream_model):
        params = config.params
        custom_base = params.get("api_base") or params.get("base_url")
        env_base = env_first(BASE_ENV)
        # AI21_API_KEY goes only to AI21 itself or the base named by AI21_API_BASE, never elsewhere.
        own = not custom_base or custom_base.rstrip("/") in (DEFAULT_BASE, (env_base or "").rstrip("/"))
        key = self.env_key(params.get("api_key"), own_upstream=own)
        if not key:
            raise ConfigError(f"model_list[{config.index}].litellm_params.api_key: required for ai21 "
                              f"(or set {KEY_ENV})")
        super().__init__(config, upstream_model, secrets=(key,))
        root = (custom_base or env_base or DEFAULT_BASE).rstrip("/")
        # The AI21 SDK's host (`https://api.ai21.com/studio/v1`) and LiteLLM's api_base are the same
        # string; a bare host (`https://api.ai21.com`) gets the path added.
        self.api_base = root if root.endswith("/v1") else root + "/studio/v1"
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Authorization": f"Bearer {key}"}
        headers.update(params.get("headers") or {})
        headers.update(params.get("extra_headers") or {})
        self.headers = headers
        self.jurassic = bool(re.match(r"^j[12]-", upstream_model))
        if self.jurassic:
            # Instance attributes: the router and adapt read capabilities from the deployment object.
            self.native_completions = True
            self.streaming = False
            self.tools = False
            self.supported_params = JURASSIC_PARAMS
            self.prompt = prompt_builder(params, upstream_model)
            self.url = f"{self.upstream_base}/{quote(upstream_model, safe='')}/complete"
        else:
            self.url = self.upstream_base + "/chat/completions"

    # ---- requests -------------------------------------------------------------------------------

    def build_request(self, endpoint, body, stream):
        """Jamba: an OpenAI-like chat body; Jurassic: a `complete` body from the prompt."""
        if self.jurassic:
            return UpstreamRequest("POST", self.url, self.headers, dumps(self.jurassic_body(endpoint, body)))
        if endpoint != "chat":
            raise errors.BadRequestError("AI21 Jamba models answer /completions through chat.",
                                         code="unsupported_endpoint")
        return UpstreamRequest("POST", self.url, self.headers, dumps(jamba_body(body, stream)))

    def jurassic_body(self, endpoint, body):
        """The Jurassic-2 `complete` request: the prompt (chat through the prompt template) and params."""
        if endpoint == "chat":
            prompt = self.prompt(body.get("messages") or [])
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise errors.BadRequestError("Jurassic-2 takes one prompt string per request.", param="prompt")
        out = {"prompt": prompt}
        limit = body.get("max_completion_tokens")
        limit = body.get("max_tokens") if limit is None else limit
        for key, value in (("maxTokens", limit), ("temperature", body.get("temperature")),
                           ("topP", body.get("top_p")), ("numResults", body.get("n"))):
            if value is not None:
                out[key] = value
        stop = body.get("stop")
        if stop:
            out["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
        for key, name in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
            if body.get(key) is not None:
                out[name] = {"scale": body[key]}
        return out

    # ---- answers --------------------------------------------------------------------------------

    def parse_response(self, endpoint, data, body):
        """A Jamba chat answer or a Jurassic `complete` answer in OpenAI's shape."""
        if self.jurassic:
            return self._jurassic_answer(endpoint, data)
        choices = []
        for choice in sorted(data.get("choices") or [], key=lambda c: c.get("index", 0)):
            message = choice.get("message") or {}
            calls = [shapes.tool_call(c.get("id"), (c.get("function") or {}).get("name"),
                                      (c.get("function") or {}).get("arguments"))
                     for c in message.get("tool_calls") or []]
            content = message.get("content")
            msg = shapes.message(content if content or not calls else None, calls)
            choices.append((msg, _jamba_finish(choice.get("finish_reason"), calls)))
        usage = data.get("usage") or {}
        return shapes.chat_completion(self.model, choices,
                                      shapes.usage(usage.get("prompt_tokens"), usage.get("completion_tokens")),
                                      id_=data.get("id"))

    def _jurassic_answer(self, endpoint, data):
        """A `complete` answer as a chat.completion or a text_completion; usage from token lists."""
        completions = data.get("completions") or []
        prompt_tokens = len((data.get("prompt") or {}).get("tokens") or [])
        completion_tokens = sum(len((c.get("data") or {}).get("tokens") or []) for c in completions)
        usage = shapes.usage(prompt_tokens, completion_tokens)
        pairs = [((c.get("data") or {}).get("text") or "",
                  JURASSIC_FINISH.get((c.get("finishReason") or {}).get("reason"), "stop")) for c in completions]
        if endpoint == "chat":
            return shapes.chat_completion(self.model, [(shapes.message(text), finish) for text, finish in pairs],
                                          usage, id_=data.get("id"))
        answer = shapes.chat_completion(self.model, [], usage, id_=data.get("id"))
        answer["object"] = "text_completion"
        answer["choices"] = [{"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                             for i, (text, finish) in enumerate(pairs)]
        return answer

    def parse_stream_event(self, endpoint, data, state):
        """One Jamba SSE chunk (OpenAI-like; usage rides on the last one) as OpenAI chunks."""
        if data.strip() == DONE:
            return None
        event = orjson.loads(data)
        if (event.get("error") or event.get("detail")) and not event.get("choices"):
            raise self.map_error(200, data, {})  # an error reported inside the stream
        out = []
        for choice in event.get("choices") or []:
            delta = {k: v for k, v in (choice.get("delta") or {}).items() if k in ("role", "content")}
            calls = (choice.get("delta") or {}).get("tool_calls")
            if calls:
                delta["tool_calls"] = [_tool_delta(c, i) for i, c in enumerate(calls)]
                state["saw_tools"] = True
            reason = choice.get("finish_reason")
            if reason:
                state["ended"] = True  # `[DONE]` follows; a finish_reason is the answer's own end
            finish = _jamba_finish(reason, state.get("saw_tools")) if reason else None
            if delta or finish:
                out.append(shapes.chat_chunk(state, delta, finish, index=choice.get("index", 0)))
        if event.get("usage"):
            usage = event["usage"]
            state["usage"] = shapes.usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
            if state["include_usage"]:
                out.append({"id": state["id"], "object": "chat.completion.chunk", "created": state["created"],
                            "model": state["model"], "choices": [], "usage": state["usage"]})
        return out

    # ---- errors ---------------------------------------------------------------------------------

    def map_error(self, status, raw, headers):
        """AI21's `{"detail": ...}` errors (a string, or FastAPI's list of field errors)."""
        data = shapes.error_json(raw)
        detail = None
        if isinstance(data, dict):
            detail = data.get("detail", data.get("message"))
            if isinstance(data.get("error"), dict):
                detail = data["error"].get("message")
        if isinstance(detail, list):
            detail = "; ".join(_field_error(d) for d in detail)
        if not isinstance(detail, str) or not detail:
            detail = (raw or b"").decode("utf-8", "replace").strip()[:500] or f"upstream answered HTTP {status}"
        code = "context_length_exceeded" if status in (400, 413, 422) and _CONTEXT.search(detail) else None
        retry_after = headers.get("retry-after") if headers else None
        return errors.from_upstream_status(
            400 if code and status == 413 else status, self.scrub(f"Upstream error from ai21: {detail}"), code=code,
            headers={"Retry-After": retry_after} if retry_after and status == 429 else None,
            request_id=headers.get("x-request-id") if headers else None, deployment=self.label)


def jamba_body(body, stream):
    """The Jamba chat request for an OpenAI chat body (pure): text-only messages, AI21's fields."""
    out = {"model": body["model"], "messages": [_message(m) for m in body.get("messages") or []]}
    for key in ("temperature", "top_p", "n", "seed", "tools", "tool_choice"):
        if body.get(key) is not None:
            out[key] = body[key]
    limit = body.get("max_completion_tokens")
    limit = body.get("max_tokens") if limit is None else limit
    if limit is not None:
        out["max_tokens"] = limit
    stop = body.get("stop")
    if stop:
        out["stop"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        # Jamba knows text and json_object; a JSON schema request still gets JSON mode.
        out["response_format"] = {"type": "text" if fmt.get("type") == "text" else "json_object"}
    for key in JAMBA_NATIVE:
        if body.get(key) is not None:
            out[key] = body[key]
    out["stream"] = bool(stream)
    return out


def _message(m):
    """One OpenAI message as a Jamba message: content is always a string."""
    role = m.get("role")
    content = m.get("content")
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("text", "input_text"):
                raise errors.BadRequestError(f"AI21 models take text only; `{kind}` parts are not supported.",
                                             param="messages")
    text = shapes.text_of(content)
    if role == "developer":
        role = "system"
    if role in ("system", "user"):
        return {"role": role, "content": text}
    if role == "assistant":
        out = {"role": "assistant", "content": text}
        if m.get("tool_calls"):
            out["tool_calls"] = [{"id": c.get("id"), "type": "function", "function": {
                "name": (c.get("function") or {}).get("name"),
                "arguments": _arguments((c.get("function") or {}).get("arguments"))}} for c in m["tool_calls"]]
        return out
    if role in ("tool", "function"):
        return {"role": "tool", "tool_call_id": m.get("tool_call_id") or m.get("name") or "", "content": text}
    raise errors.BadRequestError(f"Unsupported message role for ai21: {role!r}", param="messages")


def _arguments(arguments):
    """Tool call arguments as a JSON string."""
    if isinstance(arguments, str):
        return arguments or "{}"
    return orjson.dumps(arguments if arguments is not None else {}).decode()


def _tool_delta(call, position):
    """A streamed tool call delta with OpenAI's `index` (added when the upstream leaves it out)."""
    function = call.get("function") or {}
    out = {"index": call.get("index", position)}
    if call.get("id"):
        out["id"] = call["id"]
        out["type"] = "function"
    piece = {}
    if function.get("name"):
        piece["name"] = function["name"]
    if "arguments" in function:
        args = function["arguments"]
        piece["arguments"] = args if isinstance(args, str) else orjson.dumps(args).decode()
    out["function"] = piece
    return out


def _jamba_finish(reason, tool_calls):
    """OpenAI's finish_reason; an answer that carries tool calls finished with `tool_calls`."""
    if tool_calls and reason in (None, "stop", "tool_calls"):
        return "tool_calls"
    return JAMBA_FINISH.get(reason, "stop")


def _field_error(item):
    """One FastAPI validation error as `loc.path: msg`."""
    if not isinstance(item, dict):
        return str(item)
    where = ".".join(str(p) for p in item.get("loc") or [])
    return f"{where}: {item.get('msg')}" if where else str(item.get("msg"))


PROVIDERS = (AI21Provider,)
