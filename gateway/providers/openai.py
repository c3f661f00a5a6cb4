"""OpenAI and every OpenAI-compatible server: the wire format is ours, so translation is thin."""

import re

import orjson

from gateway import errors
from gateway.providers import audio
from gateway.providers import rerank
from gateway.providers.base import AUDIO_UPLOADS
from gateway.providers.base import PreparedBody
from gateway.providers.base import Provider
from gateway.providers.base import UpstreamRequest
from gateway.providers.base import dumps
from gateway.providers.base import env_first

OPENAI_API_BASE = "https://api.openai.com/v1"
PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings",
         "responses": "/responses", "images": "/images/generations", "moderations": "/moderations",
         "rerank": "/rerank", "transcriptions": "/audio/transcriptions", "translations": "/audio/translations",
         "speech": "/audio/speech"}
# What OpenAI's /responses takes: anything else (a deployment's chat defaults such as max_tokens) stays out.
RESPONSES_FIELDS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "temperature", "top_p", "max_output_tokens", "text",
    "reasoning", "metadata", "parallel_tool_calls", "user", "truncation", "include", "stream", "service_tier",
    "prompt", "background", "safety_identifier", "prompt_cache_key", "max_tool_calls", "top_logprobs",
    "stream_options"})
# Response stream events after which the response is over.
RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete"})
DONE = b"[DONE]"


class OpenAIProvider(Provider):
    """`openai/<model>`, bare OpenAI names, and OpenAI-compatible servers via `api_base`."""

    name = "openai"
    title = "OpenAI"
    prefixes = ("openai", "custom_openai", "text-completion-openai")
    bare_models = re.compile(
        r"^(gpt-|chatgpt-|o[1-9](-|$)|text-embedding-|text-davinci-|davinci-|babbage-|ft:gpt-|"
        r"text-moderation-|omni-moderation-)")
    embeddings = True
    tools = True
    vision = True
    native_usage_chunk = True
    native_encoding = True
    key_env = "OPENAI_API_KEY"
    base_env = "OPENAI_API_BASE"
    default_base = OPENAI_API_BASE
    native_responses = True  # /v1/responses passes through (a server without it: through chat, router.py)
    # OpenAI's images and moderations; /rerank for the OpenAI-compatible servers that have it (vLLM, ...)
    surfaces = frozenset({"images", "moderations", "rerank", "transcriptions", "translations", "speech"})

    def __init__(self, config, upstream_model):
        api_base, auth, secrets = self.connection(config)
        super().__init__(config, upstream_model, secrets=secrets)
        self.api_base = api_base.rstrip("/")
        params = config.params
        headers = {"Content-Type": "application/json", "Accept": "application/json", **auth}
        if params.get("organization"):
            headers["OpenAI-Organization"] = params["organization"]
        headers.update(params.get("headers") or {})
        headers.update(params.get("extra_headers") or {})
        self.headers = headers
        self.urls = self.endpoint_urls()

    def connection(self, config):
        """Resolve (api_base, auth headers, secrets) once, at start-up."""
        params = config.params
        key = params.get("api_key")
        custom_base = params.get("api_base") or params.get("base_url")
        # The provider's key env var goes only to the endpoint the operator set beside it (its base
        # env var) or to the provider's default: an OpenAI key must not leak to an arbitrary
        # OpenAI-compatible server named in one deployment.
        key = self.env_key(key, own_upstream=not custom_base or custom_base == self.default_base)
        api_base = custom_base or env_first(self.base_env) or self.default_base
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return api_base, auth, (key,)

    def endpoint_urls(self):
        """The full URL of each endpoint, built once."""
        return {endpoint: self.upstream_base + path for endpoint, path in PATHS.items()}

    def build_request(self, endpoint, body, stream):
        """The prepared body as it is (our model name and defaults); the URL is fixed at start-up. A
        body that was not prepared (a direct caller's) is prepared here first."""
        if type(body) is not PreparedBody:
            body = self.prepare_body(endpoint, body)
        if endpoint in AUDIO_UPLOADS:
            content_type, payload = audio.upload_request(body)
            return UpstreamRequest("POST", self.urls[endpoint], {**self.headers, "Content-Type": content_type,
                                                                 "Accept": "application/json"}, payload)
        if endpoint == "speech":
            return UpstreamRequest("POST", self.urls[endpoint], {**self.headers, "Accept": "*/*"}, dumps(body))
        return UpstreamRequest("POST", self.urls[endpoint], self.headers, dumps(body))

    def prepare_body(self, endpoint, body):
        """The base's; a Responses body keeps only what /responses takes, without the conversation
        state the gateway keeps itself (no previous_response_id, store false, its own item ids and
        earlier reasoning items left out: the whole conversation is in `input`)."""
        out = super().prepare_body(endpoint, body)
        if endpoint != "responses":
            return out
        prepared = PreparedBody((k, v) for k, v in out.items() if k in RESPONSES_FIELDS)
        prepared["store"] = False
        prepared.pop("stream_options", None)
        items = out.get("input")
        if isinstance(items, list):
            prepared["input"] = [{k: v for k, v in item.items() if k != "id"} for item in items
                                 if isinstance(item, dict) and item.get("type") != "reasoning"]
        return prepared

    def parse_response(self, endpoint, data, body):
        """OpenAI answers are already in shape (a rerank server's in Cohere's: providers/rerank.py)."""
        if endpoint == "responses" and (not isinstance(data, dict) or data.get("object") != "response"):
            raise ValueError("not a response")
        if endpoint == "rerank":
            return rerank.from_compatible(data, body)
        if endpoint in AUDIO_UPLOADS:
            return audio.from_upstream(data, body)
        if endpoint == "images" and not isinstance(data.get("data"), list):
            raise ValueError("no images")
        return data

    def parse_stream_event(self, endpoint, data, state):
        """Each `data:` line is one chunk; `[DONE]` ends the stream (a finish_reason is enough for
        servers that never send `[DONE]`). A Responses stream's events pass as they are."""
        if endpoint == "responses":
            return self.response_event(orjson.loads(data), state)
        if data == DONE:
            return None
        chunk = orjson.loads(data)
        if not state.get("ended") and isinstance(chunk, dict):
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    state["ended"] = True
        if isinstance(chunk, dict) and chunk.get("error") and not chunk.get("choices"):
            # An in-band error ends the stream as a failure (never a chunk that looks like an
            # answer: it would be billed as a success and could be cached).
            detail = chunk["error"]
            message = detail.get("message") if isinstance(detail, dict) else detail
            raise errors.UpstreamError(f"{str(message)[:500]} (deployment: {self.label})",
                                       code=detail.get("code") if isinstance(detail, dict) else None)
        return [chunk]

    def response_event(self, event, state):
        """One Responses stream event: passed on; `error` and `response.failed` end the stream as
        the upstream's failure, response.completed / .incomplete as its end."""
        kind = event.get("type")
        if kind == "error" or kind == "response.failed":
            detail = event if kind == "error" else ((event.get("response") or {}).get("error") or {})
            if isinstance(detail.get("error"), dict):  # the API nests the fields under `error`
                detail = detail["error"]
            raise errors.UpstreamError(self.scrub(f"Upstream error from {self.name}: {detail.get('message')}")
                                       + f" (deployment: {self.label})", code=detail.get("code"))
        if kind in RESPONSE_ENDS:
            state["ended"] = True
        return [event]


PROVIDERS = (OpenAIProvider,)
