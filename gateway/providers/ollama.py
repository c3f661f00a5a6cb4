"""Ollama: `ollama/<model>` over /api/generate, `ollama_chat/<model>` over /api/chat, embeddings over /api/embed.

Wire format: https://github.com/ollama/ollama/blob/main/docs/api.md. Answers and streams (NDJSON, one
JSON object a line, the last with `done: true`) are translated to OpenAI's shapes here; model options
(`num_ctx`, `top_k`, `mirostat`...) given in `litellm_params` go into Ollama's `options`, as LiteLLM does.
"""


import orjson

from gateway import errors
from gateway.providers import shapes
from gateway.providers.base import Provider
from gateway.providers.base import UpstreamRequest
from gateway.providers.base import dumps
from gateway.providers.base import env_first

DEFAULT_API_BASE = "http://localhost:11434"
# Suffixes LiteLLM tolerates at the end of an api_base (users paste full endpoint URLs).
_ENDPOINT_SUFFIXES = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api")

# Ollama's runtime and load-time model options; deployment params with these names go into `options`.
OPTION_KEYS = frozenset({
    "numa", "num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all",
    "vocab_only", "use_mmap", "use_mlock", "embedding_only", "num_thread", "num_keep", "num_gqa",
    "top_k", "tfs_z", "typical_p", "repeat_last_n", "repeat_penalty", "mirostat", "mirostat_tau",
    "mirostat_eta", "penalize_newline", "min_p",
})
# Top-level request fields a deployment may set (LiteLLM passes them through).
TOP_LEVEL_KEYS = ("keep_alive", "think", "format")
GENERATE_ONLY_KEYS = ("system", "template", "raw")
# OpenAI parameter -> Ollama option.
OPTION_MAP = {"temperature": "temperature", "top_p": "top_p", "seed": "seed",
              "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty"}
FINISH = {"stop": "stop", "length": "length", "load": "stop", "unload": "stop"}
_CONTEXT_HINTS = ("context length", "context window", "exceeds maximum context", "too many tokens")


class OllamaProvider(Provider):
    """`ollama/<model>`: chat as one prompt through /api/generate (Ollama applies the model's template)."""

    name = "ollama"
    title = "Ollama (/api/generate)"
    prefixes = ("ollama",)
    native_completions = True
    embeddings = True
    streaming = True
    tools = False
    vision = True
    supported_params = frozenset({
        "temperature", "top_p", "stop", "max_tokens", "max_completion_tokens", "seed", "response_format",
        "frequency_penalty", "presence_penalty", "user", "reasoning_effort", "suffix",
    })
    stream_format = "ndjson"
    key_env = "OLLAMA_API_KEY"  # optional: for proxies in front of Ollama (and ollama.com)
    base_env = "OLLAMA_API_BASE"
    chat_path = "/api/generate"

    def __init__(self, config, upstream_model):
        params = config.params
        key = self.env_key(params.get("api_key") or None)  # Ollama's own key env var goes to any base
        super().__init__(config, upstream_model, secrets=(key,))
        base = (params.get("api_base") or params.get("base_url") or env_first(self.base_env)
                or DEFAULT_API_BASE).rstrip("/")
        for suffix in _ENDPOINT_SUFFIXES:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        self.api_base = base
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:  # Ollama itself has no auth; proxies in front of it (and ollama.com) take a bearer key
            headers["Authorization"] = f"Bearer {key}"
        headers.update(params.get("headers") or {})
        headers.update(params.get("extra_headers") or {})
        self.headers = headers
        self.urls = {"chat": base + self.chat_path, "completions": base + "/api/generate",
                     "embeddings": base + "/api/embed"}

    # ---- requests -------------------------------------------------------------------------------

    def build_request(self, endpoint, body, stream):
        """The Ollama request for an OpenAI chat, completions or embeddings body."""
        if endpoint == "embeddings":
            payload = self._embed_payload(body)
        elif endpoint == "completions":
            payload = self._generate_payload(body, _completion_prompt(body), None, stream)
            if isinstance(body.get("suffix"), str):
                payload["suffix"] = body["suffix"]
        else:
            payload = self._chat_payload(body, stream)
        return UpstreamRequest("POST", self.urls[endpoint], self.headers, dumps(payload))

    def _chat_payload(self, body, stream):
        """ollama/: system messages -> `system`, the conversation -> one prompt, images -> `images`."""
        system, prompt, images = generate_prompt(body.get("messages") or [])
        payload = self._generate_payload(body, prompt, images, stream)
        if system and "system" not in payload:
            payload["system"] = system
        return payload

    def _generate_payload(self, body, prompt, images, stream):
        payload = {"model": self.model, "prompt": prompt, "stream": bool(stream)}
        if images:
            payload["images"] = images
        for key in GENERATE_ONLY_KEYS:
            if body.get(key) is not None:
                payload[key] = body[key]
        self._common(payload, body)
        return payload

    def _common(self, payload, body):
        """options, format, think and keep_alive, shared by /api/generate and /api/chat."""
        options = {k: v for k, v in body.items() if k in OPTION_KEYS and v is not None}
        if isinstance(body.get("options"), dict):
            options.update(body["options"])
        for openai_name, option in OPTION_MAP.items():
            if body.get(openai_name) is not None:
                options[option] = body[openai_name]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None:
            options["num_predict"] = limit
        stop = body.get("stop")
        if stop:
            options["stop"] = [stop] if isinstance(stop, str) else list(stop)
        if options:
            payload["options"] = options
        for key in TOP_LEVEL_KEYS:
            if body.get(key) is not None:
                payload[key] = body[key]
        fmt = response_format(body.get("response_format"))
        if fmt is not None:
            payload["format"] = fmt
        effort = body.get("reasoning_effort")
        if effort is not None:
            # gpt-oss takes the level itself; other thinking models take a boolean.
            payload["think"] = effort if self.model.startswith("gpt-oss") else effort not in ("none", "minimal")

    def _embed_payload(self, body):
        payload = {"model": self.model, "input": shapes.embedding_inputs(body)}
        if body.get("dimensions") is not None:
            payload["dimensions"] = body["dimensions"]
        options = {k: v for k, v in self.defaults.items() if k in OPTION_KEYS}
        if options:
            payload["options"] = options
        for key in ("keep_alive", "truncate"):
            if self.defaults.get(key) is not None:
                payload[key] = self.defaults[key]
        return payload

    # ---- answers --------------------------------------------------------------------------------

    def parse_response(self, endpoint, data, body):
        """An Ollama answer as an OpenAI chat.completion, text_completion or embeddings list."""
        if endpoint == "embeddings":
            return shapes.embeddings(self.model, data["embeddings"], data.get("prompt_eval_count"))
        usage = shapes.usage(data.get("prompt_eval_count"), data.get("eval_count"))
        finish = FINISH.get(data.get("done_reason") or "stop", "stop")
        if endpoint == "completions":
            answer = shapes.chat_completion(self.model, [], usage, id_=shapes.new_id("cmpl"))
            answer.update(object="text_completion", choices=[
                {"index": 0, "text": data.get("response") or "", "logprobs": None, "finish_reason": finish}])
            return answer
        message, has_calls = self._message(data)
        return shapes.chat_completion(self.model, [(message, "tool_calls" if has_calls else finish)], usage)

    def _message(self, data):
        """(OpenAI assistant message, whether it calls tools) from an Ollama answer."""
        if "message" not in data:  # /api/generate
            msg = shapes.message(data.get("response") or "")
            if data.get("thinking"):
                msg["reasoning_content"] = data["thinking"]
            return msg, False
        source = data["message"] or {}
        calls = [shapes.tool_call(None, c["function"]["name"], c["function"].get("arguments"))
                 for c in source.get("tool_calls") or []]
        content = source.get("content")
        msg = shapes.message(content if content or not calls else None, calls)
        if source.get("thinking"):
            msg["reasoning_content"] = source["thinking"]
        return msg, bool(calls)

    def parse_stream_event(self, endpoint, data, state):
        """One NDJSON line -> OpenAI chunks; an `error` line ends the stream with the upstream's error."""
        if state.get("done"):
            return None
        event = orjson.loads(data)
        if event.get("error"):
            raise errors.UpstreamError(self.scrub(f"Upstream error from {self.name}: {event['error']}"
                                                  f" (deployment: {self.label})"))
        chunks = []
        if endpoint == "completions":
            text = event.get("response") or ""
            if text:
                chunks.append(_text_chunk(state, text))
        else:
            chunks.extend(self._chat_deltas(event, state))
        if event.get("done"):  # the last line of every complete stream
            state["done"] = state["ended"] = True
            finish = FINISH.get(event.get("done_reason") or "stop", "stop")
            usage = shapes.usage(event.get("prompt_eval_count"), event.get("eval_count"))
            if endpoint == "completions":
                chunks.append(_text_chunk(state, "", finish))
            else:
                chunks.append(shapes.chat_chunk(state, {}, "tool_calls" if state["tools"] else finish))
            if state["include_usage"]:
                last = dict(chunks[-1], choices=[], usage=usage)
                chunks.append(last)
        return chunks

    def _chat_deltas(self, event, state):
        """Content, thinking and tool-call deltas of one chat (or generate-for-chat) line."""
        source = event.get("message") or {}
        text = source.get("content") if "message" in event else event.get("response")
        thinking = source.get("thinking") if "message" in event else event.get("thinking")
        out = []
        delta = {}
        if not state["role_sent"]:
            delta["role"] = "assistant"
            state["role_sent"] = True
        if thinking:
            delta["reasoning_content"] = thinking
        if text or (delta.get("role") and not source.get("tool_calls")):
            delta["content"] = text or ""
        if delta:
            out.append(shapes.chat_chunk(state, delta))
        for call in source.get("tool_calls") or []:
            # Ollama sends each call whole (arguments as an object, no id): one delta per call.
            index = len(state["tools"])
            built = shapes.tool_call(None, call["function"]["name"], call["function"].get("arguments"))
            state["tools"][index] = built["id"]
            out.append(shapes.chat_chunk(state, {"tool_calls": [{"index": index, **built}]}))
        return out

    # ---- errors ---------------------------------------------------------------------------------

    def map_error(self, status, raw, headers):
        """Ollama answers `{"error": "..."}`; context-length messages get OpenAI's code."""
        data = shapes.error_json(raw)
        message = data.get("error") if isinstance(data, dict) else None
        if not isinstance(message, str) or not message:
            message = (raw or b"").decode("utf-8", "replace").strip()[:500] or f"upstream answered HTTP {status}"
        code = "context_length_exceeded" if any(h in message.lower() for h in _CONTEXT_HINTS) else None
        if status == 404 and "not found" in message:
            code = "model_not_found"
        retry_after = headers.get("retry-after") if headers else None
        return errors.from_upstream_status(
            status, self.scrub(f"Upstream error from {self.name}: {message}"), code=code,
            headers={"Retry-After": retry_after} if retry_after and status == 429 else None,
            deployment=self.label)


class OllamaChatProvider(OllamaProvider):
    """`ollama_chat/<model>`: messages, tools and images through /api/chat."""

    name = "ollama_chat"
    title = "Ollama (/api/chat)"
    prefixes = ("ollama_chat",)
    native_completions = False
    tools = True
    supported_params = OllamaProvider.supported_params - {"suffix"} | {
        "tools", "tool_choice", "parallel_tool_calls"}
    chat_path = "/api/chat"

    def _chat_payload(self, body, stream):
        payload = {"model": self.model, "messages": chat_messages(body.get("messages") or []),
                   "stream": bool(stream)}
        tools = select_tools(body.get("tools"), body.get("tool_choice"))
        if tools:
            payload["tools"] = tools
        self._common(payload, body)
        return payload


def response_format(value):
    """OpenAI response_format -> Ollama `format` ("json" or a JSON schema), or None."""
    if not isinstance(value, dict):
        return None
    if value.get("type") == "json_object":
        return "json"
    if value.get("type") == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else "json"
    return None


def select_tools(tools, choice):
    """Tools to offer: Ollama has no tool_choice, so "none" offers none and a named choice only that one."""
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        named = [t for t in tools if (t.get("function") or {}).get("name") == wanted]
        if not named:
            raise errors.BadRequestError(f"tool_choice names `{wanted}`, which is not in `tools`.",
                                         param="tool_choice")
        return named
    return tools


def _images(content):
    """Base64 payloads of a message's image parts (Ollama takes raw base64, never URLs)."""
    images = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                kind, _mime, data = shapes.image_source(part)
                if kind == "url":
                    raise errors.BadRequestError(
                        "Ollama takes images as base64 data URLs (data:image/png;base64,...); this gateway "
                        "never fetches image URLs for it.", param="messages", code="image_url_not_supported")
                images.append(data)
    return images


def _text(content):
    """Message text; parts joined by newlines so separate text parts stay separate."""
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content
                         if isinstance(p, dict) and p.get("type") in ("text", "input_text"))
    return shapes.text_of(content)


def chat_messages(messages):
    """OpenAI messages -> /api/chat messages (images on the message, tool calls with object arguments)."""
    names = {}  # tool_call_id -> function name, for the `tool_name` of tool results
    out = []
    for m in messages:
        role = m.get("role")
        if role == "developer":
            role = "system"
        item = {"role": "tool" if role == "function" else role, "content": _text(m.get("content"))}
        images = _images(m.get("content"))
        if images:
            item["images"] = images
        if role == "assistant":
            calls = []
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                names[call.get("id")] = fn.get("name")
                calls.append({"function": {"name": fn.get("name") or "",
                                           "arguments": shapes.tool_arguments(fn.get("arguments"))}})
            if calls:
                item["tool_calls"] = calls
            if m.get("reasoning_content"):
                item["thinking"] = m["reasoning_content"]
        elif role in ("tool", "function"):
            name = m.get("name") or names.get(m.get("tool_call_id"))
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


def generate_prompt(messages):
    """(system text, prompt, images) for /api/generate.

    A single user turn is sent as it is, so the model's own template wraps it exactly as `ollama run`
    would; longer conversations become a `### User:` / `### Assistant:` transcript (LiteLLM's shape).
    """
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    images = [img for m in turns for img in _images(m.get("content"))]
    if len(turns) == 1 and turns[0].get("role") == "user":
        return system, _text(turns[0].get("content")), images
    sections = []
    for m in turns:
        text = _text(m.get("content"))
        if m.get("role") == "assistant":
            calls = [f"{c['function']['name']}({c['function'].get('arguments') or '{}'})"
                     for c in m.get("tool_calls") or [] if isinstance(c, dict) and c.get("function")]
            if calls:
                text = f"{text}\nTool calls: {'; '.join(calls)}".strip()
            sections.append(f"### Assistant:\n{text}")
        elif m.get("role") in ("tool", "function"):
            sections.append(f"### User:\nTool result: {text}")
        else:
            sections.append(f"### User:\n{text}")
    return system, "\n\n".join(sections) + "\n\n### Assistant:\n", images


def _completion_prompt(body):
    """The /completions prompt as one string (Ollama takes one prompt a request)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0]
        raise errors.BadRequestError("Ollama takes one prompt string per request.", param="prompt")
    if not isinstance(prompt, str):
        raise errors.BadRequestError("`prompt` must be a string.", param="prompt")
    return prompt


def _text_chunk(state, text, finish=None):
    """A text_completion stream chunk."""
    return {"id": state["id"], "object": "text_completion", "created": state["created"], "model": state["model"],
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


PROVIDERS = (OllamaProvider, OllamaChatProvider)
