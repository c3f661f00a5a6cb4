"""Provider registry: turns a `litellm_params.model` string into a configured provider object."""

import re

from gateway.providers.azure import AzureProvider
from gateway.providers.demo import DemoProvider
from gateway.providers.openai import OpenAIProvider
from gateway.settings import ConfigError


class UnsupportedProviderError(ConfigError):
    """The model string names a provider this version cannot call."""

PROVIDERS = {cls.name: cls for cls in (OpenAIProvider, AzureProvider, DemoProvider)}

# Bare model names that mean OpenAI, as LiteLLM users write them.
_OPENAI_BARE = re.compile(
    r"^(gpt-|chatgpt-|o[1-9](-|$)|text-embedding-|text-davinci-|davinci-|babbage-|ft:gpt-|"
    r"text-moderation-|omni-moderation-)")


def split_model(model):
    """Split `provider/model` into (provider name, upstream model); bare OpenAI names included."""
    if "/" in model:
        prefix, rest = model.split("/", 1)
        return prefix, rest
    if _OPENAI_BARE.match(model):
        return "openai", model
    if model == "demo":
        return "demo", "demo"
    return None, model


def build(config):
    """Create the provider object for one deployment; ConfigError names the entry at fault."""
    provider, upstream = split_model(config.model)
    cls = PROVIDERS.get(provider)
    if cls is None:
        where = f"model_list[{config.index}].litellm_params.model"
        known = ", ".join(sorted(PROVIDERS))
        if provider is None:
            raise UnsupportedProviderError(f"{where}: cannot tell the provider of {config.model!r}; "
                              f"write it as <provider>/<model> (providers: {known})")
        raise UnsupportedProviderError(f"{where}: provider {provider!r} is not supported by this version "
                          f"(supported: {known})")
    if not upstream:
        raise ConfigError(f"model_list[{config.index}].litellm_params.model: {config.model!r} names no model")
    return cls(config, upstream)
