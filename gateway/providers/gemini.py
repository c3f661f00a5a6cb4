"""Google Gemini over the Generative Language API (API key auth), and the retired PaLM API.

`gemini/<model>` speaks `generateContent`, `streamGenerateContent?alt=sse` and `batchEmbedContents`
under `{api_base}/v1beta/models/<model>`. The key travels in the `x-goog-api-key` header only, never
in the URL, so no access log can show it. `palm/<model>` answers a 404 at call time: Google retired
the PaLM API and LiteLLM documents no replacement mapping.
"""

import math
import re
import uuid
from urllib.parse import quote

import orjson

from gateway import errors
from gateway.providers import shapes
from gateway.providers.base import Provider
from gateway.providers.base import UpstreamRequest
from gateway.providers.base import dumps
from gateway.providers.base import env_first
from gateway.errors import ConfigError

DEFAULT_API_BASE = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
# An api_base that already ends in an API version (a proxy such as Cloudflare AI Gateway's
# `.../google-ai-studio/v1beta`) gets `/models/...` appended, as LiteLLM does; else `/v1beta/models/...`.
_VERSIONED_BASE = re.compile(r"/v\d+(?:(?:alpha|beta)\d*)?$")
# Gemini 2.5+/3 attach a thought signature to function calls and want it back on the next turn; it
# rides inside the OpenAI tool call id (clients echo ids verbatim), as LiteLLM does.
THOUGHT_SEP = "__thought__"
_FILES_API = re.compile(r"^https://generativelanguage\.googleapis\.com/v\w+/files/")

FINISH_REASONS = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter", "IMAGE_PROHIBITED_CONTENT": "content_filter",
}
# The OpenAPI subset Gemini's `Schema` accepts; anything else (additionalProperties, $schema,
# strict...) makes the API answer 400 "Unknown name", so it is dropped on the way out.
SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
})
# Gemini-native tools a client may put in `tools` next to functions (LiteLLM passes them on).
NATIVE_TOOLS = frozenset({"googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"})
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
# LiteLLM's reasoning_effort -> thinkingBudget defaults.
THINKING_BUDGETS = {"none": 0, "disable": 0, "minimal": 128, "low": 1024, "medium": 2048, "high": 4096}
_CONTEXT_LENGTH = ("exceeds the maximum number of tokens", "input token count", "context window")


class GeminiProvider(Provider):
    """`gemini/<model>`: Google AI Studio's Gemini API with an API key."""

    name = "gemini"
    title = "Google Gemini (AI Studio)"
    prefixes = ("gemini",)
    bare_models = None  # LiteLLM sends bare `gemini-*` names to Vertex AI, not to this API
    native_completions = False
    embeddings = True
    tools = True
    vision = True
    supported_params = frozenset({
        "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
        "frequency_penalty", "seed", "response_format", "tools", "tool_choice", "functions", "function_call",
        "parallel_tool_calls", "user", "reasoning_effort", "dimensions",
    })
    key_env = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    base_env = "GEMINI_API_BASE"

    def __init__(self, config, upstream_model):
        params = config.params
        custom_base = params.get("api_base") or params.get("base_url")
        # As for every provider here: the env key goes only to Google or to GEMINI_API_BASE, never to
        # an api_base one deployment names.
        key = self.env_key(params.get("api_key"),
                           own_upstream=not custom_base or custom_base.rstrip("/") == DEFAULT_API_BASE)
        api_base = (custom_base or env_first(self.base_env) or DEFAULT_API_BASE).rstrip("/")
        if not key and api_base == DEFAULT_API_BASE:
            raise ConfigError(f"model_list[{config.index}].litellm_params.api_key: required for gemini "
                              "(or set GEMINI_API_KEY)")
        super().__init__(config, upstream_model, secrets=(key,))
        self.api_base = api_base
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["x-goog-api-key"] = key
        headers.update(params.get("headers") or {})
        headers.update(params.get("extra_headers") or {})
        self.headers = headers
        named = upstream_model.startswith(("models/", "tunedModels/"))
        self.model_path = upstream_model if named else f"models/{upstream_model}"
        root = api_base if _VERSIONED_BASE.search(api_base) else f"{api_base}/{API_VERSION}"
        root = f"{root}/{quote(self.model_path, safe='/')}"
        self.urls = {"chat": root + ":generateContent", "stream": root + ":streamGenerateContent?alt=sse",
                     "embeddings": root + ":batchEmbedContents"}

    # --- requests ---------------------------------------------------------------------------------

    def build_request(self, endpoint, body, stream):
        """The generateContent / streamGenerateContent / batchEmbedContents request (pure)."""
        if endpoint == "embeddings":
            url, payload = self.urls["embeddings"], self.embed_body(body)
        else:
            url, payload = self.urls["stream" if stream else "chat"], chat_body(body)
        return UpstreamRequest("POST", url, self.headers, dumps(payload))

    def embed_body(self, body):
        """batchEmbedContents: one request per input string."""
        extra = {}
        if body.get("dimensions") is not None:
            extra["outputDimensionality"] = body["dimensions"]
        if isinstance(body.get("task_type"), str):  # LiteLLM's Google-specific embedding parameter
            extra["taskType"] = body["task_type"].upper()
        return {"requests": [{"model": self.model_path, "content": {"parts": [{"text": text}]}, **extra}
                             for text in shapes.embedding_inputs(body)]}

    # --- answers ----------------------------------------------------------------------------------

    def parse_response(self, endpoint, data, body):
        """A GenerateContentResponse (or batch embeddings) in OpenAI's shape."""
        if endpoint == "embeddings":
            vectors = [e["values"] for e in data["embeddings"]]
            tokens = (data.get("usageMetadata") or {}).get("promptTokenCount", 0)
            return shapes.embeddings(self.model, vectors, tokens)
        candidates = sorted(data.get("candidates") or [], key=lambda c: c.get("index", 0))
        choices = []
        for cand in candidates:
            text, reasoning, calls = candidate_parts(cand)
            finish = finish_reason(cand.get("finishReason"), bool(calls))
            msg = shapes.message(text if text or not calls else None, calls)
            if reasoning:
                msg["reasoning_content"] = reasoning
            choices.append((msg, finish or "stop"))
        if not choices:
            # No candidates: the prompt itself was blocked (promptFeedback.blockReason); LiteLLM
            # answers an empty content_filter choice rather than an error.
            blocked = (data.get("promptFeedback") or {}).get("blockReason")
            choices.append((shapes.message(None), "content_filter" if blocked else "stop"))
        return shapes.chat_completion(self.model, choices, usage_of(data.get("usageMetadata")))

    def new_stream_state(self, endpoint, body):
        """Base state plus per-candidate tool counters, candidates seen and candidates finished."""
        state = super().new_stream_state(endpoint, body)
        state.update(tool_counts={}, roles=set(), finished=set(), usage_sent=False)
        return state

    def parse_stream_event(self, endpoint, data, state):
        """One SSE event (a partial GenerateContentResponse) -> OpenAI chunks.

        The API sends no end marker: the body ends after the event carrying finishReason. So the
        usage chunk goes out once every candidate seen has finished (events carry cumulative
        usageMetadata); waiting for all `n` could lose usage when fewer candidates come back.
        """
        event = orjson.loads(data)
        if isinstance(event, dict) and "error" in event:  # an error reported inside the stream
            err = event["error"] if isinstance(event["error"], dict) else {}
            raise self.map_error(int(err.get("code") or 500), data, {})
        if event.get("usageMetadata"):
            state["usage"] = event["usageMetadata"]
        chunks = []
        candidates = event.get("candidates") or []
        if not candidates and (event.get("promptFeedback") or {}).get("blockReason"):
            chunks.append(shapes.chat_chunk(state, {"role": "assistant", "content": None}))
            chunks.append(shapes.chat_chunk(state, {}, "content_filter"))
            state["roles"].add(0)
            state["finished"].add(0)
        for cand in candidates:
            chunks.extend(self._candidate_chunks(cand, cand.get("index", 0), state))
        finished = state["finished"]
        if finished and finished >= state["roles"]:
            state["ended"] = True  # no end marker: every candidate seen has its finishReason
        if state["include_usage"] and not state["usage_sent"] and finished and finished >= state["roles"]:
            state["usage_sent"] = True
            chunks.append({"id": state["id"], "object": "chat.completion.chunk", "created": state["created"],
                           "model": state["model"], "choices": [], "usage": usage_of(state["usage"])})
        return chunks

    def _candidate_chunks(self, cand, index, state):
        text, reasoning, calls = candidate_parts(cand)
        delta = {}
        if reasoning:
            delta["reasoning_content"] = reasoning
        if text:
            delta["content"] = text
        if calls:
            first = state["tool_counts"].get(index, 0)
            state["tool_counts"][index] = first + len(calls)
            delta["tool_calls"] = [{"index": first + i, **call} for i, call in enumerate(calls)]
        raw_finish = cand.get("finishReason")
        chunks = []
        if delta or (raw_finish and index not in state["roles"]):
            if index not in state["roles"]:  # the first delta of a choice carries the role
                state["roles"].add(index)
                delta = {"role": "assistant", "content": None if calls else "", **delta}
            chunks.append(shapes.chat_chunk(state, delta, None, index))
        if raw_finish and index not in state["finished"]:
            state["finished"].add(index)
            reason = finish_reason(raw_finish, index in state["tool_counts"])
            chunks.append(shapes.chat_chunk(state, {}, reason, index))
        return chunks

    # --- errors -----------------------------------------------------------------------------------

    def map_error(self, status, raw, headers):
        """Google's `{"error": {code, message, status, details}}` -> the gateway's error tree."""
        data = shapes.error_json(raw)
        if isinstance(data, list) and data:  # the non-SSE stream endpoint wraps errors in a list
            data = data[0]
        err = data.get("error") if isinstance(data, dict) else None
        err = err if isinstance(err, dict) else {}
        text = err.get("message") or (raw.decode("utf-8", "replace").strip()[:500] if raw else "")
        text = text or f"upstream answered HTTP {status}"
        details = [d for d in err.get("details") or [] if isinstance(d, dict)]
        reasons = {d.get("reason") for d in details}
        code = None
        if "API_KEY_INVALID" in reasons or err.get("status") == "UNAUTHENTICATED":
            # Google says 400 INVALID_ARGUMENT; it is an auth failure, for clients and for the router
            # (which falls back on an upstream 401, as for any provider's rejected key).
            status = 401
        elif status == 400 and any(marker in text.lower() for marker in _CONTEXT_LENGTH):
            code = "context_length_exceeded"
        retry_after = headers.get("retry-after") if headers else None
        if status == 429 and not retry_after:
            delay = next((d.get("retryDelay") for d in details if d.get("retryDelay")), None)
            retry_after = _seconds(delay)
        extra = {"Retry-After": retry_after} if status == 429 and retry_after else None
        return errors.from_upstream_status(
            status, self.scrub(f"Upstream error from {self.name}: {text}"), code=code, headers=extra,
            request_id=headers.get("x-request-id") if headers else None, deployment=self.label)


class PalmProvider(Provider):
    """`palm/<model>`: Google retired the PaLM API; every call answers a 404 naming the way out."""

    name = "palm"
    title = "Google PaLM (retired by Google: answers 404, use gemini/)"
    prefixes = ("palm",)
    native_completions = False
    streaming = False
    key_env = None

    def __init__(self, config, upstream_model):
        super().__init__(config, upstream_model)
        self.api_base = DEFAULT_API_BASE

    def retired(self):
        """The error every call gets; marked as the upstream's 404 (what Google answers for a removed
        model) so configured fallbacks take over."""
        return errors.NotFoundError(
            f"PaLM model {self.model} is retired by Google; use a gemini/ model instead "
            "(for example gemini/gemini-2.0-flash with GEMINI_API_KEY).", param="model", code="model_not_found",
            upstream_status=404)

    def supports(self, endpoint, stream):
        """Raise the retirement error: the router asks this first, before any other check (tools,
        params, streaming) could answer with a less useful message."""
        raise self.retired()

    def execute(self, ctx, endpoint, body, stream):
        """Direct callers (not through the router) get the same answer."""
        raise self.retired()


# --- pure translation helpers ----------------------------------------------------------------------


def chat_body(body):
    """An OpenAI chat body -> a Gemini GenerateContentRequest."""
    system, contents = convert_messages(body.get("messages") or [])
    out = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    if body.get("tools"):
        out["tools"] = convert_tools(body["tools"])
        if body.get("tool_choice") is not None:
            out["toolConfig"] = tool_config(body["tool_choice"])
    config = generation_config(body)
    if config:
        out["generationConfig"] = config
    safety = body.get("safety_settings", body.get("safetySettings"))
    if safety:  # LiteLLM's Gemini-specific pass-through
        out["safetySettings"] = safety
    if body.get("cached_content"):
        out["cachedContent"] = body["cached_content"]
    return out


def convert_messages(messages):
    """(systemInstruction parts, contents): roles mapped, tool results as functionResponse parts,
    consecutive same-role turns merged."""
    system, contents, names = [], [], {}
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            text = shapes.text_of(m.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "user":
            turn, parts = "user", user_parts(m.get("content"))
        elif role == "assistant":
            turn, parts = "model", assistant_parts(m, names)
        elif role in ("tool", "function"):
            turn, parts = "user", [tool_result_part(m, names)]
        else:
            raise errors.BadRequestError(f"Unsupported message role {role!r} for gemini.", param="messages")
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    if not contents:
        if not system:
            raise errors.BadRequestError("Gemini needs at least one non-empty message.", param="messages")
        contents, system = [{"role": "user", "parts": system}], []  # a lone system prompt is the prompt
    return system, contents


def user_parts(content):
    """A user message's content -> Gemini parts (text, inline images/audio/files, Files API URIs)."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text"):
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            image = image if isinstance(image, dict) else {"url": image}
            parts.append(media_part(image.get("url"), image.get("format")))
        elif kind == "file":
            file = part.get("file") or {}
            parts.append(media_part(file.get("file_data") or file.get("file_id"), file.get("format")))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}",
                                         "data": audio.get("data") or ""}})
        else:
            raise errors.BadRequestError(f"gemini does not take message parts of type {kind!r}.", param="messages")
    return parts


def media_part(url, mime=None):
    """A base64 data URL -> inlineData; a Gemini Files API URI -> fileData; other URLs are refused."""
    if isinstance(url, str) and _FILES_API.match(url):
        return {"fileData": {"fileUri": url, **({"mimeType": mime} if mime else {})}}
    kind, data_mime, data = shapes.image_source({"image_url": {"url": url}})
    if kind == "url":
        raise errors.BadRequestError(
            "gemini takes images and files as base64 data URLs (data:image/png;base64,...) or Gemini Files API "
            "URIs; this gateway never fetches client-supplied URLs.", param="messages", code="image_url_not_supported")
    return {"inlineData": {"mimeType": data_mime, "data": data}}


def assistant_parts(m, names):
    """An assistant turn -> text and functionCall parts; remembers call id -> function name."""
    parts = []
    text = shapes.text_of(m.get("content"))
    if text:
        parts.append({"text": text})
    calls = list(m.get("tool_calls") or [])
    if m.get("function_call"):  # a legacy assistant message
        calls.append({"id": None, "function": m["function_call"]})
    for call in calls:
        fn = call.get("function") or {}
        name = fn.get("name")
        if not name:
            raise errors.BadRequestError("tool_calls[].function.name is required.", param="messages")
        part = {"functionCall": {"name": name, "args": shapes.tool_arguments(fn.get("arguments"))}}
        call_id = call.get("id") or ""
        names[call_id or name] = name
        if THOUGHT_SEP in call_id:
            part["thoughtSignature"] = call_id.split(THOUGHT_SEP, 1)[1]
        parts.append(part)
    return parts


def tool_result_part(m, names):
    """role:tool (or legacy role:function) -> a functionResponse part named after its call."""
    name = names.get(m.get("tool_call_id") or "") or m.get("name")
    if not name:
        raise errors.BadRequestError(
            f"tool message tool_call_id {m.get('tool_call_id')!r} matches no earlier assistant tool call.",
            param="messages")
    return {"functionResponse": {"name": name, "response": {"content": shapes.text_of(m.get("content"))}}}


def convert_tools(tools):
    """OpenAI tools -> one Gemini tool holding every function declaration (+ native tools)."""
    declarations, native = [], []
    for tool in tools:
        if isinstance(tool, dict) and tool.keys() & NATIVE_TOOLS and "function" not in tool:
            native.append(tool)
            continue
        fn = tool.get("function") or {}
        if not fn.get("name"):
            raise errors.BadRequestError("tools[].function.name is required.", param="tools")
        decl = {"name": fn["name"]}
        if fn.get("description"):
            decl["description"] = fn["description"]
        params = clean_schema(fn.get("parameters")) if fn.get("parameters") else None
        if params and params.get("properties"):  # Gemini refuses an OBJECT without properties
            decl["parameters"] = params
        declarations.append(decl)
    return ([{"functionDeclarations": declarations}] if declarations else []) + native


def tool_config(choice):
    """tool_choice -> toolConfig.functionCallingConfig."""
    if isinstance(choice, str) and choice in TOOL_MODES:
        return {"functionCallingConfig": {"mode": TOOL_MODES[choice]}}
    if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}}
    raise errors.BadRequestError(f"Unsupported tool_choice {choice!r} for gemini.", param="tool_choice")


def clean_schema(schema, defs=None, depth=0):
    """A JSON Schema -> Gemini's OpenAPI subset: $refs inlined, type lists -> nullable, unknown keys out."""
    if not isinstance(schema, dict):
        return schema
    if depth > 24:
        raise errors.BadRequestError("A tool or response schema is too deep (or recursive) for gemini.", param="tools")
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    if isinstance(schema.get("$ref"), str):
        target = defs.get(schema["$ref"].rsplit("/", 1)[-1])
        if not isinstance(target, dict):
            raise errors.BadRequestError(f"Unresolvable schema $ref {schema['$ref']!r}.", param="tools")
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return clean_schema(merged, defs, depth + 1)
    out = {}
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            continue
        if key == "type" and isinstance(value, list):
            kinds = [v for v in value if v != "null"]
            if len(kinds) < len(value):
                out["nullable"] = True
            value = kinds[0] if kinds else "string"
        elif key == "format" and value not in ("enum", "date-time"):
            continue  # Gemini takes only these string formats
        elif key == "properties" and isinstance(value, dict):
            value = {name: clean_schema(sub, defs, depth + 1) for name, sub in value.items()}
            if not value:
                continue
        elif key == "items":
            value = clean_schema(value, defs, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            options = [o for o in value if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(options) < len(value):
                out["nullable"] = True
            if len(options) == 1:  # Optional[X] -> X, nullable
                out.update(clean_schema(options[0], defs, depth + 1))
                continue
            value = [clean_schema(o, defs, depth + 1) for o in options]
        out[key] = value
    return out


def generation_config(body):
    """Sampling and output parameters -> generationConfig."""
    config = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("seed", "seed"),
                     ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if body.get(src) is not None:
            config[dst] = body[src]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        config["maxOutputTokens"] = limit
    if body.get("n") not in (None, 1):
        config["candidateCount"] = body["n"]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if fmt["type"] == "json_schema" and isinstance(schema, dict):
            config["responseSchema"] = clean_schema(schema)
    effort = body.get("reasoning_effort")
    if effort is not None:
        budget = THINKING_BUDGETS.get(effort)
        if budget is None:
            raise errors.BadRequestError(f"Unsupported reasoning_effort {effort!r} for gemini.",
                                         param="reasoning_effort")
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return config


def candidate_parts(cand):
    """(text, reasoning text, OpenAI tool calls) of one candidate's content parts."""
    text, reasoning, calls = [], [], []
    for part in (cand.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            fc = part["functionCall"]
            call_id = fc.get("id") or f"call_{uuid.uuid4().hex[:24]}"
            if part.get("thoughtSignature"):
                call_id += THOUGHT_SEP + part["thoughtSignature"]
            calls.append(shapes.tool_call(call_id, fc.get("name"), fc.get("args") or {}))
        elif isinstance(part.get("text"), str):
            (reasoning if part.get("thought") else text).append(part["text"])
    return "".join(text), "".join(reasoning), calls


def finish_reason(raw, has_tool_calls):
    """Gemini finishReason -> OpenAI finish_reason (None while the candidate is unfinished)."""
    if not raw:
        return None
    reason = FINISH_REASONS.get(raw, "stop")
    return "tool_calls" if has_tool_calls and reason == "stop" else reason


def usage_of(meta):
    """usageMetadata -> OpenAI usage; thinking tokens count as completion tokens (billed as output)."""
    meta = meta or {}
    # Tool-use prompt tokens (grounding, code execution) are billed as input.
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    out = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    if meta.get("cachedContentTokenCount"):
        out["prompt_tokens_details"] = {"cached_tokens": int(meta["cachedContentTokenCount"])}
    return out


def _seconds(delay):
    """A google.protobuf.Duration string ("37s", "1.5s") -> whole seconds for Retry-After."""
    if not isinstance(delay, str) or not delay.endswith("s"):
        return None
    try:
        return str(max(1, math.ceil(float(delay[:-1]))))
    except ValueError:
        return None


PROVIDERS = (GeminiProvider, PalmProvider)
