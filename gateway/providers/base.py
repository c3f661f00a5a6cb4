"""The provider shape: pure request building and answer parsing around one deployment.

The contract: the shared flow (`Provider.execute`, then wire.upstream.http_call) prepares the body
once (`prepare_body`), hands that prepared body to `build_request`, sends the request, and reads
the answer with `parse_response` / `parse_stream_event`, or an error answer with `map_error`. A
provider whose call is more than one request-answer exchange implements a named I/O hook instead
of its own `execute`: `poll` (a job API: create, then poll or stream; Replicate) or `invoke` (an
SDK does the I/O: boto3 for Bedrock and SageMaker). Hooks reach the network only through the wire
handle they are given, so every socket/HTTP error is mapped in wire/. Keys from env vars: `env_key`.
"""

import os
from dataclasses import dataclass

import orjson

from gateway import errors
from gateway.config.params import forwarded
from gateway.infra.redact import redact
from gateway.providers import shapes
from gateway.wire.sdk import SdkIO
from gateway.wire.transport import display_url
from gateway.wire.transport import split_credentials
from gateway.wire.upstream import HttpIO
from gateway.wire.upstream import http_call

ENDPOINTS = ("chat", "completions", "embeddings")
# Endpoints answered by one JSON exchange with the provider's own API of the same name, never streamed
# or translated: a provider lists those it serves in `surfaces`.
JSON_ENDPOINTS = ("images", "moderations", "rerank", "transcriptions", "translations")
# Audio uploads (multipart/form-data in, JSON or text out) and speech (JSON in, audio bytes streamed out).
AUDIO_UPLOADS = ("transcriptions", "translations")

# Body keys that steer the gateway itself (LiteLLM's per-request controls) or must never come from a
# client (where to send the call, with which key); stripped before translation.
CONTROL_KEYS = frozenset({
    "caching", "cache", "fallbacks", "context_window_fallbacks", "num_retries", "request_timeout", "timeout",
    "api_key", "api_base", "base_url", "api_version", "mock_response", "metadata",
    "litellm_logging_obj", "proxy_server_request", "extra_headers", "anthropic_headers",
})

# Default params that make sense for embeddings; the rest (temperature, max_tokens...) do not.
EMBEDDING_PARAMS = frozenset({"dimensions", "encoding_format", "user", "input_type"})


class AddedUsageOption(dict):
    """`stream_options` the gateway set itself to bill a stream (the client did not ask for usage):
    a provider whose upstream may refuse the option can drop it again."""


@dataclass(slots=True)
class UpstreamRequest:
    """One HTTP request to an upstream, fully built."""

    method: str
    url: str
    headers: dict
    body: bytes | None = None


class PreparedBody(dict):
    """A body after `prepare_body` (deployment defaults in, gateway controls out, the upstream model
    name set): `build_request` takes it as it is, instead of preparing a second copy."""

    __slots__ = ()


def env_value(name):
    """One environment variable as it is set: '' when set empty, None when unset (the AWS chain and
    Azure's token tell the two apart)."""
    return os.environ.get(name)


def env_first(names):
    """The value of the first of these environment variables (a name or a sequence) that is set and
    not empty, or None."""
    for name in (names,) if isinstance(names, str) else (names or ()):
        value = os.environ.get(name)
        if value:
            return value
    return None


class Provider:
    """One configured deployment of one provider: translation halves plus its capabilities.

    Subclasses set the capability attributes (they feed capability checks, drop_params and the
    README's provider table), the pure halves used by the shared flow (`build_request`,
    `parse_response`, `parse_stream_event`, `map_error`) and, for custom I/O, one named hook
    (`poll` or `invoke`, see the module docstring).
    """

    name = "base"
    title = "base"            # how the README's provider table names it
    prefixes = ()             # model-string prefixes, e.g. ("anthropic",) for `anthropic/claude-3`
    bare_models = None        # compiled regex of bare model names that mean this provider
    native_completions = True  # False: /completions is answered through chat
    native_messages = False    # True: Anthropic's /v1/messages passes through (else translated to chat)
    native_count_tokens = False  # True: /v1/messages/count_tokens asks the upstream (else the gateway estimates)
    native_messages_for = None   # the models of a provider that take Messages natively (README table)
    native_responses = False     # True: OpenAI's /v1/responses passes through (else translated to chat)
    surfaces = frozenset()       # the JSON_ENDPOINTS this provider serves (images, moderations, rerank)
    surfaces_for = {}            # surface -> which of its models serve it, when only some do (README table)
    embeddings = False
    streaming = True
    tools = False
    vision = False
    supported_params = None   # OpenAI params it maps; None = passes every parameter through
    stream_format = "sse"     # "sse" or "ndjson" for the common HTTP flow
    native_usage_chunk = False  # the upstream itself sends OpenAI's include_usage chunk
    native_encoding = False     # the upstream itself honours embeddings' encoding_format
    local = False              # answers in-process (demo)
    key_env = None             # env var(s) holding the provider's key, first set one wins (env_key)
    base_env = None            # env var naming the provider's api_base
    # Named I/O hooks, called by the shared flow (None: the plain request-answer exchange).
    # poll(io, endpoint, body, req, stream): send the create request `req` and follow the job
    #     through `io` (wire.upstream.HttpIO); returns the answer or a ChunkStream.
    # invoke(io, endpoint, body, stream): run the call through an SDK via `io` (wire.sdk.SdkIO); an
    #     SDK's error answer goes to the provider's `map_sdk_error(exc)`.
    poll = None
    invoke = None
    basic_auth = None          # `Basic ...` from a `user:password@` api_base; the transport sends it
    upstream_base = None       # the api_base as configured, without its `user:password@` part
    _shown_base = None

    def __init__(self, config, upstream_model, secrets=()):
        self.config = config
        self.model = upstream_model
        params = config.params
        # Request parameters only: connection keys and LiteLLM's own settings (mock_timeout, tags,
        # ...) never become body fields (gateway/config/params.py says which is which).
        self.defaults = {k: v for k, v in params.items() if forwarded(k) and v is not None}
        self.embedding_defaults = {k: v for k, v in self.defaults.items() if k in EMBEDDING_PARAMS}
        self.timeout = params.get("timeout")
        mock = params.get("mock_response")
        if mock is not None and not isinstance(mock, str):
            raise errors.ConfigError(f"model_list[{config.index}].litellm_params.mock_response: must be text")
        self.mock_response = mock  # this deployment answers with it, never calling its upstream
        self.secrets = tuple(s for s in secrets if s)
        self.api_base = None

    @property
    def api_base(self):
        """The deployment's upstream address as humans may see it (display_url): what headers, errors,
        /health, logs, spend rows, callbacks and spans show. Never its credentials."""
        return self._shown_base

    @api_base.setter
    def api_base(self, url):
        # Credentials in the address (`http://user:pass@proxy/v1`) become the deployment's Basic
        # auth, sent by the transport on every request, and join the secrets scrubbed from upstream
        # text; the address itself is only ever shown without them.
        self.upstream_base, basic_auth, secrets = split_credentials(url)
        if basic_auth is not None:
            self.basic_auth = basic_auth
            self.secrets = tuple(getattr(self, "secrets", ())) + secrets
        self._shown_base = display_url(url)

    @property
    def label(self):
        """How errors and logs name this deployment: group, model and api_base, never a key."""
        where = f" at {self.api_base}" if self.api_base else ""
        return f"{self.config.model_name} -> {self.config.model}{where}"

    def describe(self):
        """Public facts about the deployment (for /models, health, headers): no secrets."""
        return {"model_name": self.config.model_name, "model": self.config.model,
                "provider": self.name, "api_base": self.api_base}

    def supports(self, endpoint, stream):
        """Whether this deployment can serve the endpoint, streaming or not."""
        if endpoint == "embeddings":
            return self.embeddings and not stream
        if endpoint in JSON_ENDPOINTS:
            return endpoint in self.surfaces and not stream
        if endpoint == "speech":  # always streamed: the audio's bytes as they come
            return "speech" in self.surfaces
        return not stream or self.streaming

    def env_key(self, key, own_upstream=True, names=None):
        """The deployment's key: `key` (its litellm_params.api_key) when given, else the first set env
        var of `names` (default: the class's `key_env`) -- only when the call goes to the provider's
        own upstream (`own_upstream`), so an env key never leaks to a server one deployment names."""
        if key is None and own_upstream:
            return env_first(self.key_env if names is None else names)
        return key

    def prepare_body(self, endpoint, body):
        """Apply deployment defaults, drop gateway controls and set the upstream model name (a JSON
        endpoint's body takes no chat defaults)."""
        if endpoint in JSON_ENDPOINTS or endpoint == "speech":
            out = PreparedBody((k, v) for k, v in body.items() if k not in CONTROL_KEYS)
            out["model"] = self.model
            return out
        defaults = self.embedding_defaults if endpoint == "embeddings" else self.defaults
        out = PreparedBody(defaults)
        for key, value in body.items():
            if key not in CONTROL_KEYS:
                out[key] = value
        out["model"] = self.model
        return out

    def serve(self, ctx, endpoint, body, stream):
        """The router's entry: a mock answer (the body's `mock_response`, else the deployment's; see
        providers/mock.py) without any upstream I/O, else `execute`."""
        mock = body.get("mock_response")
        mock = self.mock_response if mock is None else mock
        if mock is not None:
            from gateway.providers import mock as mocks
            return mocks.answer(self, endpoint, body, stream, mock)
        return self.execute(ctx, endpoint, body, stream)

    def execute(self, ctx, endpoint, body, stream):
        """Run the call, the shared flow: the body prepared once and the request built from it here,
        then one exchange in wire/ (wire.upstream.http_call) or this provider's named I/O hook; an
        OpenAI-shaped dict, or a ChunkStream of OpenAI chunks."""
        body = self.prepare_body(endpoint, body)
        if self.invoke is not None:
            return self.invoke(SdkIO(self, ctx), endpoint, body, stream)
        req = self.build_request(endpoint, body, stream)
        if self.poll is not None:
            return self.poll(HttpIO(self, ctx), endpoint, body, req, stream)
        return http_call(self, ctx, endpoint, body, stream, req)

    def new_stream_state(self, endpoint, body):
        """Per-stream translator state."""
        from gateway.providers.shapes import stream_state
        state = stream_state(self.model, "chatcmpl" if endpoint == "chat" else "cmpl")
        state["include_usage"] = bool((body.get("stream_options") or {}).get("include_usage"))
        return state

    def stream_ended(self, state):
        """Whether the stream's terminal event was seen (translators set `state["ended"]` on their
        provider's documented end marker); a body that ends before it is a cut stream, an error."""
        return state.get("ended", False)

    def build_request(self, endpoint, body, stream):
        """Translate the prepared body (prepare_body's) into the upstream request (pure)."""
        raise NotImplementedError

    def parse_response(self, endpoint, data, body):
        """Translate the upstream's JSON answer into the OpenAI shape (pure)."""
        raise NotImplementedError

    def parse_stream_event(self, endpoint, data, state):
        """Translate one upstream stream event into OpenAI chunks; None when the stream is done."""
        raise NotImplementedError

    def map_error(self, status, raw, headers):
        """Turn an upstream error answer into a GatewayError, keeping status and message."""
        return error_from_openai_body(self, status, raw, headers)

    def scrub(self, text):
        """Remove anything key-like, and this deployment's secrets, from upstream text."""
        return redact(text, self.secrets)


def dumps(obj):
    """Serialize a JSON body for the wire."""
    return orjson.dumps(obj)


def error_from_openai_body(provider, status, raw, headers):
    """Map an OpenAI-style `{"error": {...}}` answer (or any text) to the gateway's error tree."""
    message, code, param, type_ = None, None, None, None
    data = shapes.error_json(raw)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        message = err.get("message")
        code = err.get("code")
        param = err.get("param")
        type_ = err.get("type")
    elif isinstance(err, str):
        message = err
    elif isinstance(data, dict) and isinstance(data.get("message"), str):
        message = data["message"]
    if not message:
        text = raw.decode("utf-8", "replace").strip() if raw else ""
        message = text[:500] or f"upstream answered HTTP {status}"
    code = str(code) if code is not None and not isinstance(code, str) else code
    retry_after = headers.get("retry-after") if headers else None
    extra = {"Retry-After": retry_after} if retry_after and status == 429 else None
    return errors.from_upstream_status(
        status, provider.scrub(f"Upstream error from {provider.name}: {message}"),
        code=code, param=param if isinstance(param, str) else None,
        type_=type_ if isinstance(type_, str) else None, headers=extra,
        request_id=headers.get("x-request-id") if headers else None, deployment=provider.label)
