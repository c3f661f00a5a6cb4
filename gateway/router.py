"""Model groups and deployments: name resolution, deployment choice, and the call itself."""

import logging
import random

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers.shapes import encode_embedding
from gateway.upstream import CallContext

log = logging.getLogger("gateway.router")


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
        return provider, self.run(provider, name, endpoint, body, stream)

    def run(self, provider, name, endpoint, body, stream):
        """Capability checks and shared adaptation around the provider's own execute()."""
        settings = self.settings
        if not provider.supports(endpoint, stream):
            what = "streaming" if stream and provider.supports(endpoint, False) else endpoint
            raise errors.BadRequestError(f"Model `{name}` ({provider.name}) does not support {what}.",
                                         param="stream" if what == "streaming" else "model",
                                         code="unsupported_endpoint")
        if endpoint == "completions" and not provider.native_completions:
            answer = self.run(provider, name, "chat", adapt.completion_to_chat(body), stream)
            return answer.map(adapt.chat_chunk_to_completion) if stream else adapt.chat_to_completion(answer)
        legacy_functions = False
        if endpoint == "chat":
            legacy_functions = bool(body.get("functions")) and provider.supported_params is not None
            body = adapt.prepare_tools(provider, body, settings)
        body = adapt.check_params(provider, endpoint, body, settings.drop_params)
        ctx = CallContext(self.transport, provider.timeout or settings.request_timeout, settings.drop_params)
        answer = provider.execute(ctx, endpoint, body, stream)
        if stream:
            return answer.map(adapt.tool_chunk_to_function_call) if legacy_functions else answer
        if endpoint == "embeddings" and not provider.native_encoding and body.get("encoding_format"):
            for item in answer.get("data") or []:
                item["embedding"] = encode_embedding(item["embedding"], body["encoding_format"])
        if legacy_functions:
            answer = adapt.tools_to_function_call(answer)
        return answer
