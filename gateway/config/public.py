"""The public view of a deployment's configuration: its litellm_params and model_info with every
secret left out, for the model info routes and for deployment ids (a key is never hashed into an id
anyone can read).

Left out: keys LiteLLM names as credentials, any key whose name holds key/secret/token/password/
credential/auth (token counts and per-token prices excepted), header values, every value that came
from an `os.environ/` reference (recorded at load: gateway/config/parse.py env_references), and any
other text that contains one of those secret values. An api_base is shown as display_url shows it.
"""

import re

from gateway.infra.redact import display_url

# LiteLLM's credential params, named so the list reads as a checklist; the name rule below covers them.
SECRET_PARAMS = frozenset({
    "api_key", "aws_secret_access_key", "aws_access_key_id", "aws_session_token", "aws_web_identity_token",
    "azure_ad_token", "vertex_credentials", "client_secret", "azure_password",
})
_SECRET_WORD = re.compile(r"key|secret|token|passw|credential|auth|cookie", re.I)
# Names with "token" in them that are counts or prices of tokens, not tokens: max_tokens,
# max_input_tokens, input_cost_per_token, output_cost_per_token_above_128k_tokens, ...
_TOKEN_COUNT = re.compile(r"(^|_)tokens$|_per_token(_|$)", re.I)
_WORDS_BUT_TOKEN = re.compile(r"key|secret|passw|credential|auth|cookie", re.I)
HEADER_PARAMS = frozenset({"headers", "extra_headers"})
URL_PARAMS = frozenset({"api_base", "base_url"})
_MIN_SECRET = 6  # shorter values would match ordinary text (the safety net below)
_DROP = object()


def is_secret_name(name):
    """Whether a param named `name` holds a credential (fail closed: an unknown *_token is one)."""
    name = str(name)
    if name.lower() in SECRET_PARAMS or _WORDS_BUT_TOKEN.search(name):
        return True
    return _SECRET_WORD.search(name) is not None and _TOKEN_COUNT.search(name) is None


def _collect(value, found):
    """Every text inside a left-out value, for the safety net."""
    if isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, found)
    elif value is not None and not isinstance(value, bool):
        text = str(value)
        if len(text) >= _MIN_SECRET:
            found.add(text)


def _strip(value, path, env_refs, found):
    """`value` without its secrets (_DROP when all of it is one); left-out texts go to `found`."""
    if path in env_refs:
        _collect(value, found)
        return _DROP
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if is_secret_name(key) or key in HEADER_PARAMS:
                _collect(item, found)
                continue
            kept = _strip(item, path + (key,), env_refs, found)
            if kept is not _DROP:
                out[str(key)] = display_url(kept) if key in URL_PARAMS and isinstance(kept, str) else kept
        return out
    if isinstance(value, list):
        kept = (_strip(item, path + (i,), env_refs, found) for i, item in enumerate(value))
        return [item for item in kept if item is not _DROP]
    return value


def _without(value, secrets):
    """The safety net: any text still holding a left-out secret goes too."""
    if isinstance(value, dict):
        kept = {k: _without(v, secrets) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not _DROP}
    if isinstance(value, list):
        return [v for v in (_without(item, secrets) for item in value) if v is not _DROP]
    if isinstance(value, str) and any(secret in value for secret in secrets):
        return _DROP
    return value


def public_config(params, model_info=None, env_refs=frozenset()):
    """(litellm_params, model_info) as anyone may see them. `env_refs`: the paths, from the deployment
    entry (`("litellm_params", "api_key")`), of values that came from `os.environ/` references."""
    found = set()
    tree = _strip({"litellm_params": params or {}, "model_info": model_info or {}}, (), env_refs, found)
    tree = _without(tree, found)
    return tree.get("litellm_params", {}), tree.get("model_info", {})
