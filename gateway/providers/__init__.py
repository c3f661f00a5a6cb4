"""Provider registry: turns a `litellm_params.model` string into a configured provider object.

Every module in this package that defines `PROVIDERS = (ProviderClass, ...)` is registered; a class
claims its `prefixes` (`anthropic/...`) and the bare model names its `bare_models` regex matches.
"""

import importlib
import logging
import pkgutil

from gateway.errors import ConfigError
from gateway.wire.transport import split_credentials

log = logging.getLogger("gateway.providers")


class UnsupportedProviderError(ConfigError):
    """The model string names a provider this version cannot call."""


def _discover():
    by_prefix, classes = {}, []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for cls in getattr(module, "PROVIDERS", ()):
            classes.append(cls)
            for prefix in cls.prefixes:
                if prefix in by_prefix:
                    raise RuntimeError(f"provider prefix {prefix!r} claimed twice")
                by_prefix[prefix] = cls
    return by_prefix, tuple(classes)


PREFIXES, CLASSES = _discover()


def split_model(model):
    """(provider name or None, upstream model) for a model string; bare names included."""
    if "/" in model:
        prefix, rest = model.split("/", 1)
        if prefix in PREFIXES or not _bare_class(model):
            return prefix, rest
    cls = _bare_class(model)
    if cls is not None:
        return cls.name, model
    if model in PREFIXES:  # `demo`
        return model, model
    return None, model


def _bare_class(model):
    for cls in CLASSES:
        if cls.bare_models is not None and cls.bare_models.match(model):
            return cls
    return None


def build(config):
    """Create the provider object for one deployment; ConfigError names the entry at fault."""
    name, upstream = split_model(config.model)
    cls = PREFIXES.get(name) or _bare_class(config.model)
    where = f"model_list[{config.index}].litellm_params.model"
    if cls is None:
        known = ", ".join(sorted(PREFIXES))
        if name is not None:
            raise UnsupportedProviderError(f"{where}: provider {name!r} is not "
                                           f"supported by this version (supported: {known})")
        raise UnsupportedProviderError(f"{where}: cannot tell the provider of {config.model!r}; "
                                       f"write it as <provider>/<model> (providers: {known})")
    if not upstream:
        raise ConfigError(f"{where}: {config.model!r} names no model")
    if split_credentials(upstream)[1] is not None:  # `huggingface/https://user:pass@host`: shown everywhere
        raise ConfigError(f"{where}: the model string carries user:password credentials; give the server "
                          "in litellm_params.api_base instead (its credentials are sent as Basic auth)")
    provider = cls(config, upstream)
    if provider.basic_auth is not None and any(
            name.lower() == "authorization" for name in getattr(provider, "headers", None) or ()):
        log.warning("deployment %s: api_base carries user:password credentials; they are sent as the "
                    "Authorization (Basic) header in place of the provider's own (its api_key bearer "
                    "token is not sent)", provider.label)
    return provider


def markdown_table():
    """The README's provider table, generated from the provider classes so it cannot drift."""
    def mark(flag):
        return "yes" if flag else "-"

    def envs(cls):
        value = getattr(cls, "key_env", None)
        names = (value,) if isinstance(value, str) else tuple(value or ())
        return ", ".join(f"`{n}`" for n in names) or "-"

    def surface(cls, name):
        return "yes" if name in cls.surfaces else cls.surfaces_for.get(name, "-")

    def audio(cls):
        kinds = [k for k, names in (("transcribe", ("transcriptions", "translations")), ("speech", ("speech",)))
                 if all(n in cls.surfaces for n in names)]
        return ", ".join(kinds) or "-"

    def messages(cls):
        if cls.native_messages:
            return "native"
        if cls.native_messages_for:
            return f"native ({cls.native_messages_for}), else via chat"
        return "via chat"

    rows = ["| provider | model strings | chat | /completions | embeddings | /v1/messages | /v1/responses "
            "| images | moderations | rerank | audio | streaming | tools | vision | key env var |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cls in sorted(CLASSES, key=lambda c: c.title.lower()):
        names = ", ".join(f"`{p}/...`" for p in cls.prefixes)
        if cls.bare_models is not None:
            names += f", bare `{cls.bare_models.pattern}`".replace("|", "\\|")
        rows.append(f"| {cls.title} | {names} | yes | {'native' if cls.native_completions else 'via chat'} "
                    f"| {mark(cls.embeddings)} | {messages(cls)} | {'native' if cls.native_responses else 'via chat'} "
                    f"| {surface(cls, 'images')} | {surface(cls, 'moderations')} "
                    f"| {surface(cls, 'rerank')} | {audio(cls)} "
                    f"| {mark(cls.streaming)} | {mark(cls.tools)} "
                    f"| {mark(cls.vision)} "
                    f"| {envs(cls)} |")
    return "\n".join(rows)
