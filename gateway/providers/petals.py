"""Petals: the chat.petals.dev HTTP API (`POST /api/v1/generate`), one form-encoded request per answer.

Model strings (LiteLLM's): `petals/<repo id>`, e.g. `petals/petals-team/StableBeluga2`. `api_base` is
the generate URL, as LiteLLM takes it (`https://chat.petals.dev/api/v1/generate`), or a server root
(`http://petals-host:5000`, the path is added); without it, env `PETALS_API_BASE`, else the public
`https://chat.petals.dev/api/v1/generate` (which its authors advise against for production).

The HTTP API reads form fields (`inputs`, `model`, `max_new_tokens`, `do_sample`, `temperature`,
`top_p`, ...) and answers `{"ok": true, "outputs": "..."}`, or `{"ok": false, "traceback": "..."}` with
HTTP 200; only the traceback's last line reaches the client. Chat is a prompt built by
`prompts.prompt_builder`. There is no streaming here: token streaming exists only on the WebSocket
API (`/api/v2/generate`), which this gateway does not speak. `max_new_tokens` is required by the
API; LiteLLM's default of 256 applies when the request sets no `max_tokens`.
"""

import re
from urllib.parse import urlencode
from urllib.parse import urlsplit


from gateway import errors
from gateway.providers import shapes
from gateway.providers.base import Provider
from gateway.providers.base import UpstreamRequest
from gateway.providers.base import env_first
from gateway.providers.prompts import prompt_builder

DEFAULT_URL = "https://chat.petals.dev/api/v1/generate"
GENERATE_PATH = "/api/v1/generate"
DEFAULT_MAX_NEW_TOKENS = 256
# transformers' generate() keeps the end-of-sequence token and the API decodes it with the text.
EOS_MARKERS = ("</s>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>", "<|end|>")
PASSTHROUGH = ("top_k", "repetition_penalty", "max_length")
CONTEXT_ERROR = re.compile(r"maximum length exceeded|exceeds pre-allocated maximum|`max_length` is set to"
                           r"|input length of input_ids", re.I)



def generate_url(base):
    """The generate URL for an `api_base` given as the full URL or as the server's root."""
    base = base.rstrip("/")
    return base if urlsplit(base).path.endswith(GENERATE_PATH) else base + GENERATE_PATH


class PetalsProvider(Provider):
    """`petals/<repo id>` through a Petals chat backend's HTTP API."""

    name = "petals"
    title = "Petals (HTTP API)"
    prefixes = ("petals",)
    native_completions = True
    streaming = False
    supported_params = frozenset({"temperature", "top_p", "max_tokens", "max_completion_tokens", "user"})
    key_env = None

    def __init__(self, config, upstream_model):
        params = config.params
        key = params.get("api_key")  # the public API takes none; a self-hosted one may sit behind auth
        super().__init__(config, upstream_model, secrets=(key,))
        base = params.get("api_base") or params.get("base_url") or env_first("PETALS_API_BASE") or DEFAULT_URL
        self.url = generate_url(base)
        self.api_base = self.url
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(params.get("headers") or {})
        headers.update(params.get("extra_headers") or {})
        self.headers = headers
        self.prompt = prompt_builder(params, upstream_model)

    def build_request(self, endpoint, body, stream):
        """The form-encoded generate request."""
        if endpoint == "chat":
            if _has_images(body.get("messages")):
                raise errors.BadRequestError("Petals models here take text only: remove the image_url parts.",
                                             param="messages", code="unsupported_content")
            inputs = self.prompt(body.get("messages") or [])
        else:
            inputs = _prompt_text(body)
        fields = {"model": self.model, "inputs": inputs,
                  "max_new_tokens": body.get("max_completion_tokens") or body.get("max_tokens")
                  or body.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS}
        temperature = body.get("temperature")
        # The API runs greedy search unless do_sample=1; temperature 0 means greedy.
        sample = (temperature is not None and temperature > 0) or body.get("top_p") is not None
        fields["do_sample"] = 1 if sample else 0
        if sample:
            if temperature is not None and temperature > 0:
                fields["temperature"] = temperature
            if body.get("top_p") is not None:
                fields["top_p"] = body["top_p"]
        for key in PASSTHROUGH:
            if body.get(key) is not None:
                fields[key] = body[key]
        return UpstreamRequest("POST", self.url, self.headers, urlencode(fields).encode())

    def parse_response(self, endpoint, data, body):
        """`{"ok": true, "outputs"}` -> an OpenAI answer; `ok: false` -> the mapped error."""
        if not isinstance(data, dict) or not data.get("ok"):
            raise self._failure(200, data if isinstance(data, dict) else {}, None)  # ok: false comes with HTTP 200
        text = data.get("outputs") or ""
        finish = "length"
        stripped = text.rstrip()
        for marker in EOS_MARKERS:
            if stripped.endswith(marker):  # generation ended by itself, not by max_new_tokens
                text, finish = stripped[:-len(marker)], "stop"
                break
        prompt_chars = (sum(len(shapes.text_of(m.get("content"))) for m in body.get("messages") or [])
                        if endpoint == "chat" else len(_prompt_text(body)))
        usage = shapes.usage(shapes.estimate_tokens(prompt_chars), shapes.estimate_tokens(len(text)))
        if endpoint == "chat":
            # The API continues the prompt's text: the reply usually starts with the space after "ASSISTANT:".
            return shapes.chat_completion(self.model, [(shapes.message(text.lstrip()), finish)], usage)
        state = shapes.stream_state(self.model, "cmpl")
        return {"id": state["id"], "object": "text_completion", "created": state["created"], "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}], "usage": usage}

    def map_error(self, status, raw, headers):
        """A non-2xx answer: the API's `{"ok": false, "traceback"}`, or a proxy's page."""
        data = shapes.error_json(raw)
        if not isinstance(data, dict):
            text = raw.decode("utf-8", "replace").strip() if raw else ""
            data = {"traceback": _strip_html(text)[:300] or f"upstream answered HTTP {status}"}
        return self._failure(status, data, headers)

    def _failure(self, status, data, headers):
        """Short, scrubbed message from a traceback; the status from what it says went wrong."""
        trace = data.get("traceback") or data.get("error") or ""
        lines = [line.strip() for line in str(trace).strip().splitlines() if line.strip()]
        message = lines[-1][:300] if lines else "Petals answered ok: false without a traceback"
        code = None
        if CONTEXT_ERROR.search(message):
            status, code = 400, "context_length_exceeded"
        elif message.startswith("KeyError:") and status < 300:
            status, code = 404, "model_not_found"  # the backend looks the model up in its config by name
        elif "Too many" in message and status < 300:
            status = 503
        elif status < 300:
            status = 502
        extra = None
        if status == 429 and headers and headers.get("retry-after"):
            extra = {"Retry-After": headers["retry-after"]}
        return errors.from_upstream_status(
            status, self.scrub(f"Upstream error from petals: {message}"), code=code, headers=extra,
            request_id=headers.get("x-request-id") if headers else None, deployment=self.label)


def _prompt_text(body):
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise errors.BadRequestError("Petals takes one prompt string per request.", param="prompt")
    return prompt


def _has_images(messages):
    return any(isinstance(m, dict) and isinstance(m.get("content"), list)
               and any(isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
               for m in messages or [])


def _strip_html(text):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).strip()


PROVIDERS = (PetalsProvider,)
