"""Hugging Face: text-generation-inference (local or Inference Endpoints), the hosted API, TEI embeddings.

Model strings (LiteLLM's): `huggingface/<repo id>`, `huggingface/<task>/<repo id>` with the task
`text-generation-inference` or `text-generation`, and `huggingface/https://<endpoint url>`.

Where calls go:
- `api_base` (or a URL model string, or env `HF_API_BASE` / `HUGGINGFACE_API_BASE`): a TGI server
  (`http://0.0.0.0:8001`) or an Inference Endpoint. Chat and completions use TGI's `/generate` and
  `/generate_stream` with a prompt built by `prompts.prompt_builder` (the deployment's template keys).
- no base: the hosted Inference API at `https://router.huggingface.co/hf-inference/models/<repo id>`
  (TGI's compatible root route: `{"inputs", "parameters", "stream"}`).
- `litellm_params.use_chat_api: true`, or an `api_base` ending in `/v1` or `/chat/completions`: chat
  goes to TGI's OpenAI-style Messages API (`{api_base}/v1/chat/completions`; without a base,
  `https://router.huggingface.co/v1/chat/completions`), with tools and images; /completions are
  then answered through chat.
- `model_info.mode: embedding`: TEI / feature-extraction, POST `{"inputs": [...]}` to `api_base` as
  given (e.g. `http://tei:8080/embed`), or to the hosted `.../pipeline/feature-extraction`.

Key: `litellm_params.api_key`, else `HUGGINGFACE_API_KEY` or `HF_TOKEN`, sent as a bearer token. An
environment key goes only to Hugging Face hosts (`*.huggingface.co`, `*.huggingface.cloud`) or to the
base named by the environment, never to an arbitrary `api_base` set on one deployment.
"""

import math
import re
from urllib.parse import urlsplit

import orjson

from gateway import errors
from gateway.providers import shapes
from gateway.providers.base import Provider
from gateway.providers.base import UpstreamRequest
from gateway.providers.base import dumps
from gateway.providers.base import env_first
from gateway.providers.prompts import prompt_builder
from gateway.errors import ConfigError

HOSTED_BASE = "https://router.huggingface.co/hf-inference/models/"
ROUTER_CHAT_URL = "https://router.huggingface.co/v1/chat/completions"
KEY_ENVS = ("HUGGINGFACE_API_KEY", "HF_TOKEN")
BASE_ENVS = ("HF_API_BASE", "HUGGINGFACE_API_BASE")
TASKS = ("text-generation-inference", "text-generation")
RETIRED_TASKS = ("conversational", "text-classification")
DONE = b"[DONE]"

GENERATE_PARAMS = frozenset({"temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens",
                             "seed", "user", "response_format", "frequency_penalty", "echo"})
CHAT_API_PARAMS = frozenset({"temperature", "top_p", "stop", "max_tokens", "max_completion_tokens", "seed",
                             "user", "response_format", "frequency_penalty", "presence_penalty", "logprobs",
                             "top_logprobs", "tools", "tool_choice", "parallel_tool_calls"})
EMBED_PARAMS = frozenset({"user"})
# TGI's own generation parameters: LiteLLM passes them through from litellm_params or the request.
TGI_PASSTHROUGH = ("top_k", "repetition_penalty", "truncate", "typical_p", "watermark", "max_new_tokens",
                   "do_sample", "top_n_tokens", "adapter_id", "grammar", "decoder_input_details")
CHAT_API_KEYS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "logprobs",
                 "top_logprobs", "tools", "tool_choice", "tool_prompt")
TEI_PASSTHROUGH = ("truncate", "normalize", "prompt_name", "truncation_direction")

FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop", "stop": "stop",
          "tool_calls": "tool_calls", "content_filter": "content_filter"}
# TGI error_type -> the HTTP status TGI gives it (errors inside a stream arrive after a 200).
STREAM_ERROR_STATUS = {"validation": 422, "overloaded": 429, "generation": 424,
                       "incomplete_generation": 500}
CONTEXT_ERROR = re.compile(r"tokens \+ `max_new_tokens` must be <=|`inputs` must have less than \d+ tokens"
                           r"|maximum context length", re.I)



def chat_url(base):
    """TGI's Messages API URL under a base, as LiteLLM builds it."""
    base = base.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


def _is_hf_host(url):
    host = (urlsplit(url).hostname or "").lower()
    return host.endswith((".huggingface.co", ".huggingface.cloud")) or host == "huggingface.co"


def _stops(body):
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop]
    return [s for s in stop or [] if isinstance(s, str) and s]


def _cut_stop(text, stops, start=0):
    """(text, cut): TGI keeps the stop sequence that ended generation, and only notices one that ends
    a token; OpenAI answers end before the first stop sequence, wherever it falls."""
    cut = min((i for i in (text.find(s, start) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _grammar(response_format):
    """OpenAI response_format -> TGI's JSON grammar (None for plain text)."""
    if not isinstance(response_format, dict) or response_format.get("type") in (None, "text"):
        return None
    if response_format.get("type") == "json_schema":
        return {"type": "json", "value": (response_format.get("json_schema") or {}).get("schema") or {}}
    return {"type": "json", "value": response_format.get("value") or {"type": "object"}}


def _has_images(messages):
    return any(isinstance(m, dict) and isinstance(m.get("content"), list)
               and any(isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
               for m in messages or [])


class HuggingFaceProvider(Provider):
    """`huggingface/<repo id>`: TGI /generate, TGI's Messages API, or TEI embeddings (see module doc)."""

    name = "huggingface"
    title = "Hugging Face (TGI, Inference Endpoints, TEI)"
    prefixes = ("huggingface",)
    native_completions = True
    embeddings = True
    tools = True      # with the Messages API (use_chat_api); /generate deployments have none
    vision = True     # with the Messages API, for TGI vision models
    supported_params = GENERATE_PARAMS
    key_env = KEY_ENVS

    def __init__(self, config, upstream_model):
        params = config.params
        where = f"model_list[{config.index}].litellm_params"
        head, _, rest = upstream_model.partition("/")
        if head in RETIRED_TASKS:
            raise ConfigError(f"{where}.model: the Hugging Face `{head}` task API is retired; "
                              "use a text-generation model (TGI) instead")
        if head in TASKS and rest:
            upstream_model = rest
        env_base = env_first(BASE_ENVS)
        base = (params.get("api_base") or params.get("base_url")
                or (upstream_model if upstream_model.startswith(("http://", "https://")) else None) or env_base)
        key = params.get("api_key")
        # Only asked when no key is configured: a base that is no URL at all fails at call time.
        own = key is None and (base is None or base == env_base or _is_hf_host(base))
        key = self.env_key(key, own_upstream=own)
        super().__init__(config, upstream_model, secrets=(key,))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(params.get("headers") or {})
        headers.update(params.get("extra_headers") or {})
        self.headers = headers
        self.tgi_base = base  # None: the hosted API
        use_chat = params.get("use_chat_api")
        if isinstance(use_chat, str):
            use_chat = use_chat.strip().lower() in ("1", "true", "yes", "on")
        if use_chat is None and base:
            use_chat = base.rstrip("/").endswith(("/v1", "/chat/completions"))
        mode = (config.model_info or {}).get("mode")
        self.mode = "embedding" if mode == "embedding" else ("chat_api" if use_chat else "generate")
        self.compat = False
        if self.mode == "embedding":
            self.supported_params = EMBED_PARAMS
            self.embed_url = base or f"{HOSTED_BASE}{upstream_model}/pipeline/feature-extraction"
            self.api_base = self.embed_url
        elif self.mode == "chat_api":
            self.supported_params = CHAT_API_PARAMS
            self.native_completions = False
            self.chat_url = chat_url(base) if base else ROUTER_CHAT_URL
            self.api_base = self.chat_url
        else:
            self.tools = False
            self.vision = False
            if base:
                root = re.sub(r"/(generate|generate_stream)/?$", "", base.rstrip("/"))
                self.generate_url, self.stream_url = root + "/generate", root + "/generate_stream"
                self.api_base = root
            else:
                self.compat = True  # the hosted API has only the root route; `stream` in the body
                self.generate_url = self.stream_url = self.api_base = HOSTED_BASE + upstream_model
        self.prompt = prompt_builder(params, upstream_model)

    def supports(self, endpoint, stream):
        """Embedding deployments serve only embeddings; generation deployments everything else."""
        if self.mode == "embedding":
            return endpoint == "embeddings" and not stream
        return endpoint != "embeddings" and (not stream or self.streaming)

    # ---- requests ------------------------------------------------------------------------------

    def build_request(self, endpoint, body, stream):
        """An embeddings, Messages API or /generate(_stream) request for the deployment's mode."""
        if endpoint == "embeddings":
            payload = {"inputs": shapes.embedding_inputs(body)}
            payload.update({k: body[k] for k in TEI_PASSTHROUGH if body.get(k) is not None})
            return UpstreamRequest("POST", self.embed_url, self.headers, dumps(payload))
        if self.mode == "chat_api":
            return UpstreamRequest("POST", self.chat_url, self.headers, dumps(self._chat_body(body, stream)))
        if endpoint == "chat":
            if _has_images(body.get("messages")):
                raise errors.BadRequestError(
                    "This Hugging Face deployment calls TGI's /generate, which takes no images. Set "
                    "`use_chat_api: true` on a deployment of a TGI vision model.", param="messages",
                    code="unsupported_content")
            inputs = self.prompt(body.get("messages") or [])
        else:
            inputs = _prompt_text(body)
        payload = {"inputs": inputs, "parameters": self._parameters(endpoint, body, stream)}
        if self.compat:
            payload["stream"] = bool(stream)
        options = {k: body[k] for k in ("use_cache", "wait_for_model") if body.get(k) is not None}
        if options:
            payload["options"] = options
        url = self.stream_url if stream else self.generate_url
        return UpstreamRequest("POST", url, self.headers, dumps(payload))

    def _parameters(self, endpoint, body, stream):
        """OpenAI sampling parameters -> TGI's `parameters` object."""
        p = {k: body[k] for k in TGI_PASSTHROUGH if body.get(k) is not None}
        p["details"] = True  # finish reason and token counts
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None:
            p["max_new_tokens"] = limit
        temperature = body.get("temperature")
        if temperature is not None:
            if temperature <= 0:  # TGI wants a strictly positive temperature: 0 means greedy
                p["do_sample"] = False
            else:
                p["temperature"] = temperature
                p["do_sample"] = True
        top_p = body.get("top_p")
        if top_p is not None and top_p < 1:  # TGI wants top_p < 1; 1 keeps every token anyway
            p["top_p"] = top_p
        p.update({k: v for k, v in (("stop", _stops(body) or None), ("seed", body.get("seed")),
                                    ("frequency_penalty", body.get("frequency_penalty"))) if v is not None})
        n = body.get("n")
        if isinstance(n, int) and n > 1:
            if stream:
                raise errors.BadRequestError("TGI cannot stream more than one choice (n > 1).", param="n")
            p["best_of"] = n
            p["do_sample"] = True  # TGI's best_of needs sampling
        grammar = _grammar(body.get("response_format"))
        if grammar:
            p["grammar"] = grammar
        if endpoint == "completions" and body.get("echo") and not stream:
            p["return_full_text"] = True
        else:
            p.setdefault("return_full_text", False)
        return p

    def _chat_body(self, body, stream):
        """The Messages API body: OpenAI's, limited to what TGI reads."""
        out = {"model": self.model, "messages": [_chat_message(m) for m in body.get("messages") or []]}
        out.update({k: body[k] for k in CHAT_API_KEYS if body.get(k) is not None})
        out.update({k: v for k, v in (("max_tokens", body.get("max_completion_tokens") or body.get("max_tokens")),
                                      ("stop", _stops(body) or None)) if v is not None})
        response_format = body.get("response_format")
        if self.tgi_base and response_format is not None:  # TGI's own shape; the HF router takes OpenAI's
            grammar = _grammar(response_format)
            response_format = {"type": "json_object", "value": grammar["value"]} if grammar else None
        if response_format is not None:
            out["response_format"] = response_format
        if stream:
            out["stream"] = True
            if (body.get("stream_options") or {}).get("include_usage"):
                out["stream_options"] = {"include_usage": True}
        return out

    # ---- answers -------------------------------------------------------------------------------

    def parse_response(self, endpoint, data, body):
        """TGI's generate answer (dict, or a one-item list from the root route), chat or embeddings."""
        if isinstance(data, dict) and data.get("error") and "generated_text" not in data:
            raise self._error(502, data, None)
        if endpoint == "embeddings":
            return self._embeddings(data, body)
        if self.mode == "chat_api":
            return self._chat_answer(data, body)
        item = data[0] if isinstance(data, list) else data
        details = item.get("details") or {}
        stops = _stops(body)
        sequences = [(item["generated_text"], details.get("finish_reason"), details.get("generated_tokens"))]
        sequences += [(s["generated_text"], s.get("finish_reason"), s.get("generated_tokens"))
                      for s in details.get("best_of_sequences") or []]
        choices, completion_tokens = [], 0
        echoed = len(_prompt_text(body)) if endpoint == "completions" and body.get("echo") else 0
        for text, reason, tokens in sequences:
            text, cut = _cut_stop(text, stops, echoed)
            completion_tokens += tokens if isinstance(tokens, int) else shapes.estimate_tokens(len(text))
            choices.append((text, "stop" if cut else FINISH.get(reason, "stop")))
        prompt_tokens = len(details.get("prefill") or []) or shapes.estimate_tokens(_prompt_chars(endpoint, body))
        usage = shapes.usage(prompt_tokens, completion_tokens)
        if endpoint == "chat":
            return shapes.chat_completion(self.model, [(shapes.message(t), f) for t, f in choices], usage)
        state = shapes.stream_state(self.model, "cmpl")
        return {"id": state["id"], "object": "text_completion", "created": state["created"], "model": self.model,
                "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": f}
                            for i, (t, f) in enumerate(choices)], "usage": usage}

    def _chat_answer(self, data, body):
        """Messages API answer, normalized (older TGI: object arguments, placeholder ids, eos_token)."""
        pairs = []
        for choice in data.get("choices") or []:
            msg = choice.get("message") or {}
            calls = msg.get("tool_calls") or []
            calls = [calls] if isinstance(calls, dict) else calls
            tool_calls = [_tool_call(c) for c in calls]
            content, cut = _cut_stop(msg.get("content") or "", _stops(body))
            reason = "stop" if cut else choice.get("finish_reason")
            finish = "tool_calls" if tool_calls else FINISH.get(reason, reason or "stop")
            content = None if tool_calls and not content else content
            pairs.append((shapes.message(content, tool_calls), finish))
        usage = data.get("usage")
        if isinstance(usage, dict):
            usage = shapes.usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        else:
            text = "".join((m.get("content") or "") for m, _ in pairs)
            usage = shapes.usage(shapes.estimate_tokens(_prompt_chars("chat", body)), shapes.estimate_tokens(len(text)))
        return shapes.chat_completion(data.get("model") or self.model, pairs, usage,
                                      id_=data.get("id") or None, created=data.get("created"))

    def _embeddings(self, data, body):
        """TEI `[[floats], ...]` or feature-extraction's `[floats]` for one input -> OpenAI's list."""
        inputs = shapes.embedding_inputs(body)
        if data and isinstance(data[0], (int, float)):
            data = [data]
        # Token-level output (a model without pooling): keep the first ([CLS]) token's vector.
        vectors = [v[0] if v and isinstance(v[0], list) else v for v in data]
        return shapes.embeddings(self.model, vectors, shapes.estimate_tokens(sum(len(t) for t in inputs)))

    # ---- streams -------------------------------------------------------------------------------

    def new_stream_state(self, endpoint, body):
        """Stream state plus stop-sequence hold-back and counters for estimated usage."""
        state = super().new_stream_state(endpoint, body)
        state.update(endpoint=endpoint, stops=_stops(body), pending="", stopped=False, chars=0, done=False,
                     prompt_chars=_prompt_chars(endpoint, body),
                     echo=_prompt_text(body) if endpoint == "completions" and body.get("echo") else "")
        return state

    def parse_stream_event(self, endpoint, data, state):
        """One SSE event of /generate_stream (token events) or of the Messages API (chunks)."""
        if state["done"]:
            return None
        if self.mode == "chat_api":
            return self._chat_stream_event(data, state)
        event = orjson.loads(data)
        if event.get("error") and "token" not in event:
            raise self._stream_error(event)
        out = []
        if endpoint == "chat" and not state["role_sent"]:
            state["role_sent"] = True
            out.append(shapes.chat_chunk(state, {"role": "assistant", "content": ""}))
        text = state.pop("echo", "") or ""
        token = event.get("token") or {}
        if not token.get("special"):  # eos and other special tokens are not text
            text += self._hold(state, token.get("text") or "")
        details = event.get("details")
        if event.get("generated_text") is None and not details:
            if text:
                out.append(self._text_chunk(state, text))
            return out
        if not state["stopped"]:
            text, state["pending"] = text + state["pending"], ""
        if text:
            out.append(self._text_chunk(state, text))
        details = details or {}
        finish = "stop" if state["stopped"] else FINISH.get(details.get("finish_reason"), "stop")
        out.append(self._text_chunk(state, None, finish))
        state["ended"] = True  # TGI's final event (generated_text / details) ends every complete stream
        if state["include_usage"]:
            generated = details.get("generated_tokens")
            out.append(self._usage_chunk(state, details.get("input_length") or shapes.estimate_tokens(state["prompt_chars"]),
                                         generated if isinstance(generated, int) else shapes.estimate_tokens(state["chars"])))
        state["done"] = True
        return out

    def _hold(self, state, text):
        """Text safe to send now: hold back what may start a stop sequence, drop a completed one."""
        state["chars"] += len(text)
        if state["stopped"]:
            return ""
        if not state["stops"]:
            return text
        buf = state["pending"] + text
        cut = min((i for i in (buf.find(s) for s in state["stops"]) if i >= 0), default=-1)
        if cut >= 0:
            state["stopped"], state["pending"] = True, ""
            return buf[:cut]
        keep = max((k for s in state["stops"] for k in range(1, len(s)) if buf.endswith(s[:k])), default=0)
        state["pending"] = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep]

    def _chat_stream_event(self, data, state):
        if data == DONE:
            state["done"] = state["ended"] = True
            if not state["include_usage"]:
                return []
            usage = state["usage"] or {}
            return [self._usage_chunk(state, usage.get("prompt_tokens", shapes.estimate_tokens(state["prompt_chars"])),
                                      usage.get("completion_tokens", shapes.estimate_tokens(state["chars"])))]
        chunk = orjson.loads(data)
        if chunk.get("error") and not chunk.get("choices"):
            raise self._stream_error(chunk)
        if isinstance(chunk.get("usage"), dict):
            state["usage"] = chunk["usage"]
        out = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            new = {}
            if not state["role_sent"]:
                state["role_sent"] = True
                new["role"] = "assistant"
            reason = choice.get("finish_reason")
            if reason:
                state["ended"] = True  # TGI before 2.x sent no `[DONE]`
            text = self._hold(state, delta.get("content") or "")
            if reason and not state["stopped"]:
                text, state["pending"] = text + state["pending"], ""
            if text:
                new["content"] = text
            calls = _tool_deltas(delta.get("tool_calls"), state) + (_flush_legacy_calls(state) if reason else [])
            if calls:
                new["tool_calls"] = calls
            finish = None
            if reason:
                finish = "tool_calls" if state["tools"] else "stop" if state["stopped"] else FINISH.get(reason, reason)
            if new or finish:
                out.append(shapes.chat_chunk(state, new, finish, index=choice.get("index") or 0))
        return out

    def _text_chunk(self, state, text, finish=None):
        if state["endpoint"] == "chat":
            return shapes.chat_chunk(state, {"content": text} if text else {}, finish)
        return {"id": state["id"], "object": "text_completion", "created": state["created"], "model": state["model"],
                "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]}

    def _usage_chunk(self, state, prompt_tokens, completion_tokens):
        kind = "chat.completion.chunk" if state["endpoint"] == "chat" else "text_completion"
        return {"id": state["id"], "object": kind, "created": state["created"], "model": state["model"],
                "choices": [], "usage": shapes.usage(prompt_tokens, completion_tokens)}

    # ---- errors --------------------------------------------------------------------------------

    def map_error(self, status, raw, headers):
        """TGI/TEI `{"error", "error_type"}`, the hosted API's `{"error", "estimated_time"}`, or text."""
        data = shapes.error_json(raw)
        return self._error(status, data, headers, raw)

    def _stream_error(self, event):
        """An error event inside a 200 stream: TGI reports validation and overload errors this way."""
        return self._error(STREAM_ERROR_STATUS.get(event.get("error_type"), 502), event, None)

    def _error(self, status, data, headers, raw=b""):
        err = data.get("error") if isinstance(data, dict) else None
        code = None
        if isinstance(err, dict):  # the HF router answers in OpenAI's shape
            message, code = err.get("message"), err.get("code")
        else:
            message = err
        if not isinstance(message, str) or not message:
            text = raw.decode("utf-8", "replace").strip() if raw else ""
            message = text[:500] or f"upstream answered HTTP {status}"
        extra = {}
        retry_after = headers.get("retry-after") if headers else None
        if retry_after and status == 429:
            extra["Retry-After"] = retry_after
        estimated = data.get("estimated_time") if isinstance(data, dict) else None
        if status == 503 and isinstance(estimated, (int, float)):  # the hosted API is loading the model
            extra["Retry-After"] = str(max(1, math.ceil(estimated)))
        shown = status
        if CONTEXT_ERROR.search(message):  # TGI answers 422 (TEI 413): OpenAI clients expect a 400
            code, shown = "context_length_exceeded", 400 if 400 <= status < 500 else status
        err = errors.from_upstream_status(
            shown, self.scrub(f"Upstream error from huggingface: {message}"),
            code=code if isinstance(code, str) else None, headers=extra or None,
            request_id=headers.get("x-request-id") if headers else None, deployment=self.label)
        err.upstream_status = status
        return err


def _prompt_text(body):
    """A /completions prompt as one string (TGI takes one input per request)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise errors.BadRequestError("This model takes one prompt string per request.", param="prompt")
    return prompt


def _prompt_chars(endpoint, body):
    if endpoint == "chat":
        return sum(len(shapes.text_of(m.get("content"))) for m in body.get("messages") or []
                   if isinstance(m, dict))
    prompt = body.get("prompt")
    return len(prompt) if isinstance(prompt, str) else sum(len(p) for p in prompt or [] if isinstance(p, str))


def _chat_message(message):
    """One OpenAI message as TGI's Messages API reads it."""
    out = {k: v for k, v in message.items() if v is not None}
    if out.get("role") == "developer":
        out["role"] = "system"
    content = out.get("content")
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "image_url":
                shapes.image_source(part)  # a clear 400 for a malformed URL; TGI fetches http URLs itself
            elif kind != "text":
                raise errors.BadRequestError(f"TGI's Messages API takes text and image_url parts, not {kind!r}.",
                                             param="messages")
        if out.get("role") in ("tool", "system"):
            out["content"] = shapes.text_of(content)
    if "content" not in out and not out.get("tool_calls"):
        out["content"] = ""
    return out


def _tool_call(call):
    """One answered tool call in OpenAI's shape (object arguments and placeholder ids fixed)."""
    fn = call.get("function") or {}
    arguments = fn.get("arguments", fn.get("parameters"))  # TGI 1.4 named them `parameters`
    if isinstance(arguments, dict):
        arguments = {k: v for k, v in arguments.items() if k != "_name"}
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id or call_id.isdigit():
        call_id = None  # older TGI answers "0" for every call
    return shapes.tool_call(call_id, fn.get("name"), arguments)


def _call_id():
    return shapes.tool_call(None, "", "")["id"]


def _tool_deltas(calls, state):
    """Streamed tool-call deltas with their index; the id, type and name only on a call's first."""
    if isinstance(calls, dict):  # TGI 2.x sends one object, not a list
        calls = [calls]
    out = []
    for call in calls or []:
        index = call.get("index") or 0
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if args is not None and not isinstance(args, str):
            args = orjson.dumps(args).decode()
        known = state["tools"].get(index)
        if known is None:
            if not fn.get("name"):
                # TGI before 3.1 streams the raw `{"function": {"_name": ..., ...}}` text as arguments.
                state["tools"][index] = {"legacy": True, "buffer": args or ""}
                continue
            state["tools"][index] = {"legacy": False}
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id or call_id.isdigit():
                call_id = _call_id()  # TGI sends "" (or a placeholder number)
            out.append({"index": index, "id": call_id, "type": "function",
                        "function": {"name": fn["name"], "arguments": args or ""}})
        elif known["legacy"]:
            known["buffer"] += args or ""
        elif args:
            out.append({"index": index, "function": {"arguments": args}})
    return out


def _flush_legacy_calls(state):
    """At the finish: turn each buffered legacy tool-call text into one complete call delta."""
    out = []
    for index, known in sorted(state["tools"].items()):
        if not known.get("legacy") or known.get("sent"):
            continue
        known["sent"] = True
        try:
            value = orjson.loads(known["buffer"])
        except orjson.JSONDecodeError as exc:
            raise errors.UpstreamError("TGI streamed a tool call this gateway cannot read.") from exc
        fn = dict(value.get("function", value)) if isinstance(value, dict) else {}
        name = fn.pop("_name", None) or fn.pop("name", None)
        arguments = fn.pop("arguments", fn)
        call = shapes.tool_call(None, name, arguments)
        out.append({"index": index, **call})
    return out


PROVIDERS = (HuggingFaceProvider,)
