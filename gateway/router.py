"""Model groups and deployments: name resolution, deployment choice, and the call itself."""

import logging
import random

import orjson
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from gateway import errors
from gateway import providers
from gateway.sse import SSEDecoder

log = logging.getLogger("gateway.router")

READ_SIZE = 65536


class ChunkStream:
    """OpenAI chunks from one stream; `close()` drops the upstream connection unless it finished."""

    def __init__(self, provider, endpoint, chunks, resp=None):
        self.provider = provider
        self.endpoint = endpoint
        self.finished = False
        self._chunks = chunks
        self._resp = resp

    def __iter__(self):
        yield from self._chunks
        self.finished = True

    def close(self):
        """Release the upstream connection: back to the pool if the stream ended, else cut it."""
        resp, self._resp = self._resp, None
        if resp is None:
            return
        if self.finished:
            try:
                resp.drain_conn()  # the rest is the chunked terminator; keeps TLS connections warm
                resp.release_conn()
                return
            except (Urllib3Error, OSError):
                pass
        resp.close()


def _read_raw(resp):
    """Yield bytes as they arrive, without waiting to fill a buffer."""
    while True:
        data = resp.read1(READ_SIZE)
        if not data:
            return
        yield data


def _upstream_chunks(provider, endpoint, resp, timeout):
    """Decode the upstream's SSE body and translate each event into OpenAI chunks."""
    decoder = SSEDecoder()
    state = {}
    try:
        for raw in _read_raw(resp):
            for event in decoder.feed(raw):
                chunks = provider.parse_stream_event(endpoint, event.data, state)
                if chunks is None:
                    return
                yield from chunks
        for event in decoder.close():
            chunks = provider.parse_stream_event(endpoint, event.data, state)
            if chunks is None:
                return
            yield from chunks
    except Urllib3Timeout as exc:
        raise errors.UpstreamTimeoutError(
            f"Upstream stream stalled for {timeout:g}s (deployment: {provider.label})") from exc
    except (Urllib3Error, OSError) as exc:
        raise errors.UpstreamConnectionError(
            f"Upstream stream broke (deployment: {provider.label}): {type(exc).__name__}") from exc
    except orjson.JSONDecodeError as exc:
        raise errors.UpstreamError(
            f"Upstream sent a malformed stream event (deployment: {provider.label})") from exc


class Router:
    """Maps requested model names to deployment groups and runs calls against them."""

    def __init__(self, settings, transport):
        self.settings = settings
        self.transport = transport
        self.groups = {}
        for config in settings.deployments:
            try:
                provider = providers.build(config)
            except providers.UnsupportedProviderError as exc:
                log.warning("%s; this deployment is not served", exc)
                continue
            self.groups.setdefault(config.model_name, []).append(provider)
        self.names = list(self.groups)
        self.aliases = {a: g for a, g in settings.group_aliases.items() if g in self.groups}
        self._weights = {name: self._weights_of(group) for name, group in self.groups.items()}

    @staticmethod
    def _weights_of(group):
        """simple-shuffle weights: `weight`, else `rpm`, else `tpm`, else equal."""
        for key in ("weight", "rpm", "tpm"):
            values = [p.config.params.get(key) for p in group]
            if all(isinstance(v, (int, float)) for v in values) and sum(values) > 0:
                return values
        return None

    def resolve(self, requested):
        """The group name a request's `model` means (first model when absent)."""
        if not self.names:
            raise errors.ServiceUnavailableError("No models are configured on this gateway.",
                                                 code="no_models")
        if self.settings.catch_all or not requested:
            return self.names[0]
        if not isinstance(requested, str):
            raise errors.BadRequestError("`model` must be a string.", param="model")
        if requested in self.groups:
            return requested
        if requested in self.aliases:
            return self.aliases[requested]
        available = ", ".join(self.names + sorted(self.aliases))
        raise errors.NotFoundError(
            f"The model `{requested[:200]}` does not exist on this gateway. Available models: {available}",
            param="model", code="model_not_found")

    def pick(self, name):
        """Choose one deployment of the group (weighted random, as LiteLLM's simple-shuffle)."""
        group = self.groups[name]
        if len(group) == 1:
            return group[0]
        weights = self._weights[name]
        return random.choices(group, weights=weights)[0] if weights else random.choice(group)

    def call(self, endpoint, body, stream):
        """Run one call: (provider, answer dict), or (provider, ChunkStream) for streams."""
        name = self.resolve(body.get("model"))
        provider = self.pick(name)
        if not provider.supports(endpoint, stream):
            what = f"streaming {endpoint}" if stream and endpoint in provider.endpoints else endpoint
            raise errors.BadRequestError(f"Model `{name}` ({provider.name}) does not support {what}.",
                                         param="stream" if stream else "model", code="unsupported_endpoint")
        if provider.local:
            if stream:
                return provider, ChunkStream(provider, endpoint, provider.stream(endpoint, body))
            return provider, provider.answer(endpoint, body)
        timeout = provider.timeout or self.settings.request_timeout
        req = provider.build_request(endpoint, body, stream)
        resp = self.transport.send(provider, req, timeout=timeout, stream=stream)
        if stream:
            chunks = _upstream_chunks(provider, endpoint, resp, timeout)
            return provider, ChunkStream(provider, endpoint, chunks, resp)
        try:
            data = orjson.loads(resp.data)
        except orjson.JSONDecodeError as exc:
            raise errors.UpstreamError(
                f"Upstream answered with a body that is not JSON (deployment: {provider.label})") from exc
        if not isinstance(data, dict):
            raise errors.UpstreamError(f"Upstream answered with an unexpected body (deployment: {provider.label})")
        return provider, provider.parse_response(endpoint, data)
