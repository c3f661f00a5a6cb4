"""Replicate: create a prediction, then poll it or read its SSE stream (https://replicate.com/docs/reference/http).

`replicate/<owner>/<model>` runs a model's latest version (POST /v1/models/{owner}/{model}/predictions),
`replicate/<owner>/<model>:<version>` a pinned version (POST /v1/predictions {version}), and
`replicate/deployments/<owner>/<name>` a deployment. Chat becomes one `prompt` through the deployment's
prompt template (gateway.providers.prompts); `supports_system_prompt: true` sends system text as the
`system_prompt` input the Llama models take. Other `litellm_params` (top_k, min_new_tokens,
prompt_template...) go into `input` as LiteLLM passes them: Replicate's meta-llama-3 models wrap `prompt`
in their own `prompt_template`, so set `prompt_template: "{prompt}"` there to avoid a double template.
finish_reason is always "stop": Replicate does not say why generation ended. Follow-up URLs from
answers are used only when they point at the configured api_base (or Replicate's own stream hosts): a
poisoned answer cannot make the gateway send its token elsewhere.
"""

import logging
import time
from urllib.parse import quote
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
from gateway.wire.sse import SSEDecoder
from gateway.wire.transport import release
from gateway.wire.upstream import ChunkStream
from gateway.wire.upstream import load_json
from gateway.wire.upstream import read_raw
from gateway.wire.upstream import translated_chunks

log = logging.getLogger("gateway.providers.replicate")

DEFAULT_API_BASE = "https://api.replicate.com"
# Replicate serves `urls.stream` from its own streaming hosts (stream-b.svc.rno2.c.replicate.net).
REPLICATE_STREAM_SUFFIXES = (".replicate.net", ".replicate.com")
TERMINAL = ("succeeded", "failed", "canceled")
MAX_PREFER_WAIT = 60          # Replicate's sync mode (`Prefer: wait=n`) holds at most 60 s
POLL_START, POLL_MAX = 0.1, 1.0  # poll quickly at first, back off to one request a second
# Gateway-level and OpenAI keys that must not leak into a model's `input`.
_NOT_INPUT = frozenset({
    "model", "messages", "prompt", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens",
    "stop", "temperature", "top_p", "seed", "user", "tools", "tool_choice", "functions", "function_call",
    "response_format", "logit_bias", "logprobs", "top_logprobs", "parallel_tool_calls", "echo", "best_of",
    "suffix", "presence_penalty", "frequency_penalty", "supports_system_prompt", "encoding_format",
})
_CONTEXT_HINTS = ("context length", "context window", "too long", "maximum context", "too many tokens")


class ReplicateProvider(Provider):
    """`replicate/<owner>/<model>[:<version>]` and `replicate/deployments/<owner>/<name>`."""

    name = "replicate"
    title = "Replicate"
    prefixes = ("replicate",)
    native_completions = True
    embeddings = False
    streaming = True
    tools = False
    vision = True
    supported_params = frozenset({"temperature", "top_p", "stop", "max_tokens", "max_completion_tokens",
                                  "seed", "user", "presence_penalty", "frequency_penalty"})
    key_env = ("REPLICATE_API_KEY", "REPLICATE_API_TOKEN")
    base_env = "REPLICATE_API_BASE"
    poll_start = POLL_START

    def __init__(self, config, upstream_model):
        params = config.params
        custom_base = _normalize(params.get("api_base") or params.get("base_url"))
        env_base = _normalize(env_first(self.base_env))
        # The env token goes only to Replicate itself or to the base set beside it in the environment.
        own = not custom_base or custom_base in (DEFAULT_API_BASE, env_base)
        key = self.env_key(params.get("api_key"), own_upstream=own)
        if not key:
            raise ConfigError(f"model_list[{config.index}].litellm_params.api_key: required for replicate "
                              "(or set REPLICATE_API_KEY / REPLICATE_API_TOKEN)")
        super().__init__(config, upstream_model, secrets=(key,))
        base = custom_base or env_base or DEFAULT_API_BASE
        self.api_base = base
        origin = urlsplit(self.upstream_base)
        self.origin = (origin.scheme, origin.netloc)
        self.official = base == DEFAULT_API_BASE
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                   "Accept": "application/json"}
        headers.update(params.get("headers") or {})
        headers.update(params.get("extra_headers") or {})
        self.headers = headers
        self.create_url, self.version = self._create_target(config, upstream_model)
        self.prompt = prompt_builder(params, upstream_model)
        self.system_prompt = bool(params.get("supports_system_prompt"))
        self.max_tokens_key = ("max_length" if any(m in upstream_model.lower() for m in ("vicuna", "flan"))
                               else "max_new_tokens")

    def _create_target(self, config, model):
        """(create URL, version id or None) for the model string, checked once at start-up."""
        name, _, version = model.partition(":")
        parts = name.split("/")
        if parts[0] == "deployments" and len(parts) == 3 and all(parts) and not version:
            return f"{self.upstream_base}/v1/deployments/{quote(parts[1])}/{quote(parts[2])}/predictions", None
        if version and len(parts) == 2 and all(parts):
            return f"{self.upstream_base}/v1/predictions", version
        if not version and len(parts) == 1 and len(name) == 64:  # a bare version id
            return f"{self.upstream_base}/v1/predictions", name
        if not version and len(parts) == 2 and all(parts) and parts[0] != "deployments":
            return f"{self.upstream_base}/v1/models/{quote(parts[0])}/{quote(parts[1])}/predictions", None
        raise ConfigError(f"model_list[{config.index}].litellm_params.model: expected replicate/<owner>/<model>"
                          f"[:<version>] or replicate/deployments/<owner>/<name>, got {config.model!r}")

    # ---- pure halves ----------------------------------------------------------------------------

    def build_input(self, endpoint, body):
        """The prediction `input` for an OpenAI chat or completions body."""
        data = {k: v for k, v in body.items() if k not in _NOT_INPUT and v is not None}
        if endpoint == "completions":
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise errors.BadRequestError("Replicate takes one prompt string per request.", param="prompt")
            data["prompt"] = prompt
        else:
            messages = list(body.get("messages") or [])
            image = _image(messages)
            if image is not None:
                data["image"] = image
            if self.system_prompt:
                system = [shapes.text_of(m.get("content")) for m in messages
                          if m.get("role") in ("system", "developer")]
                messages = [m for m in messages if m.get("role") not in ("system", "developer")]
                if system:
                    data["system_prompt"] = "\n".join(system)
            data["prompt"] = self.prompt(messages)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None:
            data[self.max_tokens_key] = limit
        for key in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
            if body.get(key) is not None:
                data[key] = body[key]
        stop = body.get("stop")
        if stop:
            # Replicate's language models document `stop_sequences` as one comma-separated string.
            data["stop_sequences"] = stop if isinstance(stop, str) else ",".join(stop)
        return data

    def build_request(self, endpoint, body, stream):
        """The create-prediction request; poll() adds `Prefer: wait=n` (sync mode) to non-streams."""
        payload = {"input": self.build_input(endpoint, body)}
        if self.version:
            payload["version"] = self.version
        if stream:
            payload["stream"] = True
        return UpstreamRequest("POST", self.create_url, self.headers, dumps(payload))

    def parse_response(self, endpoint, data, body):
        """A finished prediction as an OpenAI chat.completion or text_completion."""
        status = data.get("status")
        if status != "succeeded":
            raise self.prediction_error(data)
        text = output_text(data.get("output"))
        usage = prediction_usage(data)
        if endpoint == "completions":
            answer = shapes.chat_completion(self.model, [], usage, id_=shapes.new_id("cmpl"))
            answer.update(object="text_completion",
                          choices=[{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}])
            return answer
        return shapes.chat_completion(self.model, [(shapes.message(text), "stop")], usage)

    def parse_stream_event(self, endpoint, data, state):
        """One stream event -> OpenAI chunks; None once the prediction is over.

        `data` is an sse.Event from `urls.stream` (`output` / `error` / `done`) or, when the gateway polls
        instead, a prediction dict whose new output since the last poll becomes the delta.
        """
        if state.get("done"):
            return None
        if isinstance(data, dict):
            text = output_text(data.get("output"))
            delta, state["seen"] = text[len(state.get("seen", "")):], text
            chunks = [self._delta(endpoint, state, delta)] if delta else []
            if data.get("status") in TERMINAL:
                if data["status"] != "succeeded":
                    raise self.prediction_error(data)
                chunks += self._finish(endpoint, state, prediction_usage(data))
            return chunks
        if data.event == "output":
            return [self._delta(endpoint, state, data.data.decode("utf-8"))]
        if data.event == "error":
            raise self.prediction_error({"status": "failed", "error": _event_message(data.data)})
        if data.event == "done":
            reason = _done_reason(data.data)
            if reason in ("error", "canceled"):
                raise self.prediction_error({"status": "canceled" if reason == "canceled" else "failed",
                                             "error": f"prediction ended: {reason}"})
            return self._finish(endpoint, state, None)
        return []  # `logs` and unknown events carry no output

    def _delta(self, endpoint, state, text):
        if endpoint == "completions":
            return _text_chunk(state, text)
        delta = {"content": text}
        if not state["role_sent"]:
            delta["role"] = "assistant"
            state["role_sent"] = True
        return shapes.chat_chunk(state, delta)

    def _finish(self, endpoint, state, usage):
        """The finish chunk; the usage chunk follows when known (polling) or after a final read (SSE)."""
        state["done"] = state["ended"] = True
        chunks = [_text_chunk(state, "", "stop") if endpoint == "completions"
                  else shapes.chat_chunk(state, {} if state["role_sent"] else {"role": "assistant", "content": ""},
                                         "stop")]
        if usage is not None and state["include_usage"]:
            chunks.append(dict(chunks[0], choices=[], usage=usage))
            state["usage_sent"] = True
        return chunks

    def prediction_error(self, data):
        """A failed or canceled prediction as a gateway error (context overflows as 400)."""
        message = data.get("error") or f"prediction {data.get('status') or 'did not finish'}"
        if not isinstance(message, str):
            message = orjson.dumps(message).decode()
        text = self.scrub(f"Upstream error from {self.name}: {message} (deployment: {self.label})")
        if any(h in message.lower() for h in _CONTEXT_HINTS):
            return errors.ContextWindowExceededError(text, param="messages")
        code = "prediction_canceled" if data.get("status") == "canceled" else "prediction_failed"
        return errors.UpstreamError(text, code=code)

    def map_error(self, status, raw, headers):
        """Replicate's RFC 7807 problem bodies `{"title", "detail", "status"}`."""
        data = shapes.error_json(raw)
        message = None
        if isinstance(data, dict):
            detail, title = data.get("detail"), data.get("title")
            message = ": ".join(str(p) for p in (title, detail) if p) or data.get("error")
        if not message:
            message = (raw or b"").decode("utf-8", "replace").strip()[:500] or f"upstream answered HTTP {status}"
        message = str(message)
        code = "context_length_exceeded" if any(h in message.lower() for h in _CONTEXT_HINTS) else None
        retry_after = headers.get("retry-after") if headers else None
        return errors.from_upstream_status(
            status, self.scrub(f"Upstream error from {self.name}: {message}"), code=code,
            headers={"Retry-After": retry_after} if retry_after and status == 429 else None,
            deployment=self.label)

    # ---- I/O ------------------------------------------------------------------------------------

    def poll(self, io, endpoint, body, req, stream):
        """The I/O hook: send the create request `req`, then wait for the prediction (polling) or
        stream it (SSE, else polling), all through `io` (wire.upstream.HttpIO)."""
        deadline = time.monotonic() + io.timeout
        if not stream:
            # Sync mode: Replicate holds the create call until the prediction ends (at most n seconds).
            wait = max(1, min(MAX_PREFER_WAIT, int(io.timeout) - 1))
            req.headers = {**req.headers, "Prefer": f"wait={wait}"}
        prediction = self._send_json(io, req, io.timeout)
        if not stream:
            prediction = self._wait(io, prediction, deadline)
            try:
                return self.parse_response(endpoint, prediction, body)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                raise errors.UpstreamError(f"Upstream answered in a shape this gateway cannot read "
                                           f"(deployment: {self.label})") from exc
        state = self.new_stream_state(endpoint, body)
        stream_url = self.follow_url(prediction, "stream", stream=True)
        resp = None
        if stream_url:
            # Opened here, before the answer starts, so a refused stream is an HTTP error, not an event.
            headers = {**self.headers, "Accept": "text/event-stream", "Cache-Control": "no-store"}
            resp = io.send(UpstreamRequest("GET", stream_url, headers), io.timeout, stream=True)
            events = sse_events(resp)
        else:
            events = self._polls(io, prediction, deadline)
        chunks = translated_chunks(self, endpoint, events, state, io.timeout)

        def run():
            yield from chunks  # raises incomplete_stream() when the stream ends before `done`
            if state["include_usage"] and not state.get("usage_sent"):
                yield self._final_usage(io, endpoint, prediction, state)

        def close():
            if resp is not None:
                release(resp, state.get("done"))
            if not state.get("done"):  # the client left: stop paying for tokens nobody reads
                self._cancel(io, prediction)

        return ChunkStream(self, endpoint, run(), on_close=close)

    def _send_json(self, io, req, timeout):
        resp = io.send(req, max(timeout, 0.001))
        data = load_json(self, resp.data)
        if not isinstance(data, dict):
            raise errors.UpstreamError(f"Upstream answered with an unexpected body (deployment: {self.label})")
        if data.get("error") and "status" not in data:  # not a (failed) prediction: an error answered with 2xx
            raise self.map_error(200, resp.data, resp.headers)
        return data

    def _get(self, io, url, deadline):
        return self._send_json(io, UpstreamRequest("GET", url, self.headers),
                               max(deadline - time.monotonic(), 0.5))

    def _wait(self, io, prediction, deadline):
        """Poll `urls.get` until the prediction is over or the call's timeout runs out (then cancel it)."""
        delay = self.poll_start
        while prediction.get("status") not in TERMINAL:
            if time.monotonic() + delay >= deadline:
                self._cancel(io, prediction)
                raise errors.UpstreamTimeoutError(
                    f"Replicate prediction did not finish within {io.timeout:g}s (deployment: {self.label})")
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
            prediction = self._get(io, self.prediction_url(prediction), deadline)
        return prediction

    def _polls(self, io, prediction, deadline):
        """Streaming without `urls.stream`: each poll's prediction, for parse_stream_event to diff."""
        delay = self.poll_start
        yield prediction
        while prediction.get("status") not in TERMINAL:
            if time.monotonic() + delay >= deadline:
                raise errors.UpstreamTimeoutError(
                    f"Replicate prediction did not finish within {io.timeout:g}s (deployment: {self.label})")
            time.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
            prediction = self._get(io, self.prediction_url(prediction), deadline)
            yield prediction

    def _final_usage(self, io, endpoint, prediction, state):
        """After an SSE stream: read the finished prediction once for its token metrics."""
        usage = shapes.usage(0, 0)
        deadline = time.monotonic() + min(io.timeout, 10)
        try:
            final = self._get(io, self.prediction_url(prediction), deadline)
            delay = self.poll_start
            while final.get("status") not in TERMINAL and time.monotonic() + delay < deadline:
                time.sleep(delay)  # metrics land a moment after `done`
                delay = min(delay * 2, POLL_MAX)
                final = self._get(io, self.prediction_url(prediction), deadline)
            usage = prediction_usage(final)
        except errors.GatewayError as exc:
            log.warning("replicate: no usage for prediction %s: %s", prediction.get("id"), exc.message)
        return dict(shapes.chat_chunk(state) if endpoint == "chat" else _text_chunk(state, ""),
                    choices=[], usage=usage)

    def _cancel(self, io, prediction):
        """Best effort: cancel a prediction nobody will read."""
        url = self.follow_url(prediction, "cancel")
        if not url and prediction.get("id"):
            url = f"{self.upstream_base}/v1/predictions/{quote(str(prediction['id']), safe='')}/cancel"
        if not url:
            return
        try:
            io.send(UpstreamRequest("POST", url, self.headers), 5)
        except errors.GatewayError as exc:
            log.info("replicate: cancel of %s failed: %s", prediction.get("id"), type(exc).__name__)

    def prediction_url(self, prediction):
        """`urls.get` when it points at our api_base, else the documented URL built from the id."""
        url = self.follow_url(prediction, "get")
        if url:
            return url
        if prediction.get("id"):
            return f"{self.upstream_base}/v1/predictions/{quote(str(prediction['id']), safe='')}"
        raise errors.UpstreamError(f"Replicate answered without a prediction id or a usable urls.get "
                                   f"(deployment: {self.label})")

    def follow_url(self, prediction, name, stream=False):
        """A URL from the answer's `urls`, only if it is safe to send our token to; else None."""
        url = (prediction.get("urls") or {}).get(name)
        if not isinstance(url, str) or not url:
            return None
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) == self.origin:
            return url
        host = parts.hostname or ""
        if stream and self.official and parts.scheme == "https" and host.endswith(REPLICATE_STREAM_SUFFIXES):
            return url
        log.warning("replicate: ignoring urls.%s on another host (%s) than api_base", name, host)
        return None


def _normalize(base):
    """An api_base without trailing `/` or `/v1` (LiteLLM documents https://api.replicate.com/v1)."""
    if not base:
        return None
    base = base.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


def sse_events(resp):
    """The events (name and data) of a Replicate stream, up to and including `done`."""
    decoder = SSEDecoder()
    for raw in read_raw(resp):
        for event in decoder.feed(raw):
            yield event
            if event.event == "done":
                return
    yield from decoder.close()


def output_text(output):
    """A prediction's output as text: language models give a list of tokens (or one string)."""
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(item if isinstance(item, str) else orjson.dumps(item).decode() for item in output)
    return orjson.dumps(output).decode()


def prediction_usage(prediction):
    """OpenAI usage from `metrics.input_token_count` / `output_token_count` (0 when absent)."""
    metrics = prediction.get("metrics") or {}
    return shapes.usage(metrics.get("input_token_count"), metrics.get("output_token_count"))


def _image(messages):
    """The one image of a conversation, as the URL or data URL Replicate's `image` input takes."""
    images = [part for m in messages if isinstance(m.get("content"), list) for part in m["content"]
              if isinstance(part, dict) and part.get("type") == "image_url"]
    if not images:
        return None
    if len(images) > 1:
        raise errors.BadRequestError("Replicate models take one image (the `image` input); this request has "
                                     f"{len(images)}.", param="messages")
    kind, mime, data = shapes.image_source(images[0])
    # Replicate fetches URLs itself; the gateway only forwards the string.
    return data if kind == "url" else f"data:{mime};base64,{data}"


def _event_message(raw):
    """The message of an SSE `error` event (JSON `{"detail": ...}` or plain text)."""
    text = raw.decode("utf-8", "replace")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return text
    if isinstance(data, dict):
        return str(data.get("detail") or data.get("error") or data.get("message") or text)
    return text


def _done_reason(raw):
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return None
    return data.get("reason") if isinstance(data, dict) else None


def _text_chunk(state, text, finish=None):
    """A text_completion stream chunk."""
    return {"id": state["id"], "object": "text_completion", "created": state["created"], "model": state["model"],
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


PROVIDERS = (ReplicateProvider,)
