"""What /model/info and /model_group/info say about deployments and groups, in LiteLLM's shapes:
facts from the configuration (secrets left out: gateway/config/public.py), the model table
(gateway/data) and the provider's capabilities. No I/O, no Flask."""

from gateway.config.public import public_config

# The capability flags LiteLLM's model info carries. A deployment's model_info may state any of them
# (true/false) for its model; otherwise function calling, tool choice and vision say what the gateway
# accepts for the deployment's provider (false for embedding models), and the rest are null.
SUPPORTS = ("supports_function_calling", "supports_parallel_function_calling", "supports_tool_choice",
            "supports_vision", "supports_system_messages", "supports_response_schema")


# Facts a deployment's configuration may set (model_info, or litellm_params for the prices).
_FROM_CONFIG = ("mode", "max_tokens", "max_input_tokens", "max_output_tokens", "input_cost_per_token",
                "output_cost_per_token", *SUPPORTS)


def mode(deployment):
    """chat, embedding, or the deployment's configured `model_info.mode`."""
    provider = deployment.provider
    configured = (provider.config.model_info or {}).get("mode")
    if isinstance(configured, str) and configured:
        return configured
    if provider.supports("embeddings", False) and not provider.supports("chat", False):
        return "embedding"
    return "embedding" if "embed" in str(provider.model).lower() else "chat"


def _provider_flags(provider, chat):
    """The supports_* flags the provider's capabilities decide (all false for an embedding model)."""
    params = provider.supported_params
    tools = chat and bool(provider.tools) and (params is None or "tools" in params)
    return {"supports_function_calling": tools,
            "supports_tool_choice": tools and (params is None or "tool_choice" in params),
            "supports_vision": chat and bool(provider.vision)}


def supports(deployment):
    """{supports_*: true, false or None} for one deployment."""
    info = deployment.provider.config.model_info or {}
    derived = _provider_flags(deployment.provider, mode(deployment) != "embedding")
    out = {}
    for name in SUPPORTS:
        stated = info.get(name)
        out[name] = stated if isinstance(stated, bool) else derived.get(name)
    return out


def deployment_info(deployment):
    """One /model/info entry: {model_name, litellm_params, model_info} with no secret in it."""
    config = deployment.provider.config
    params, configured = public_config(config.params, config.model_info, config.env_refs)
    facts = deployment.facts
    groups = configured.get("access_groups")
    info = {
        "id": deployment.id,
        "db_model": (config.model_info or {}).get("db_model") is True,
        "mode": mode(deployment),
        "max_tokens": facts.get("max_tokens") or deployment.max_output_tokens,
        "max_input_tokens": deployment.max_input_tokens,
        "max_output_tokens": deployment.max_output_tokens,
        "input_cost_per_token": deployment.input_price,
        "output_cost_per_token": deployment.output_price,
        "litellm_provider": deployment.provider.name,
        **supports(deployment),
        "access_groups": list(groups) if isinstance(groups, list) else [],
    }
    for key in _FROM_CONFIG:  # a fact whose configured value came from the environment is not shown
        if ("model_info", key) in config.env_refs or ("litellm_params", key) in config.env_refs:
            info[key] = None
    for key, value in configured.items():  # the rest of the configured model_info, as given
        info.setdefault(key, value)
    return {"model_name": config.model_name, "litellm_params": params, "model_info": info}


def _largest(values):
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _limit(deployments, name):
    known = [getattr(d, name) for d in deployments if getattr(d, name) is not None]
    return sum(known) if known else None


def _group_params(deployments):
    """The OpenAI params every deployment of the group maps (None: some pass every param through)."""
    sets = [d.provider.supported_params for d in deployments]
    if not sets or any(s is None for s in sets):
        return None
    return sorted(set.intersection(*(set(s) for s in sets)))


def group_info(group):
    """One /model_group/info entry. Limits and prices are the largest of the group's deployments (as
    LiteLLM reports them), rpm/tpm the sums of the configured limits, a supports_* flag true only
    when every deployment has it (null when none is known)."""
    deployments = group.deployments
    flags = [supports(d) for d in deployments]
    entry = {
        "model_group": group.name,
        "providers": sorted({d.provider.name for d in deployments}),
        "max_input_tokens": _largest(d.max_input_tokens for d in deployments),
        "max_output_tokens": _largest(d.max_output_tokens for d in deployments),
        "input_cost_per_token": _largest(d.input_price for d in deployments),
        "output_cost_per_token": _largest(d.output_price for d in deployments),
        "mode": mode(deployments[0]) if deployments else None,
        "tpm": _limit(deployments, "tpm"),
        "rpm": _limit(deployments, "rpm"),
    }
    for name in SUPPORTS:
        values = [f[name] for f in flags]
        entry[name] = None if all(v is None for v in values) else all(v is True for v in values)
    entry["supported_openai_params"] = _group_params(deployments)
    return entry


def pattern_info(config):
    """One /model/info entry for a wildcard deployment (`*`, `anthropic/*`): what its configuration
    says (no secret), its provider when its model fixes one; the model facts belong to each name it
    serves, so they are null unless the entry's model_info states them."""
    params, configured = public_config(config.params, config.model_info, config.env_refs)
    prefix = config.model.split("/", 1)[0] if "/" in config.model else None
    groups = configured.get("access_groups")
    info = {"id": config.id, "db_model": (config.model_info or {}).get("db_model") is True,
            "litellm_provider": prefix if prefix not in (None, "*") else None}
    for key in _FROM_CONFIG:  # stated facts only, and none that came from the environment
        hidden = ("model_info", key) in config.env_refs or ("litellm_params", key) in config.env_refs
        info[key] = None if hidden else configured.get(key, params.get(key))
    info["mode"] = info["mode"] if isinstance(info["mode"], str) else "chat"
    info["access_groups"] = list(groups) if isinstance(groups, list) else []
    for key, value in configured.items():
        info.setdefault(key, value)
    return {"model_name": config.model_name, "litellm_params": params, "model_info": info}


def pattern_group_info(name, configs):
    """One /model_group/info entry for a wildcard model_name: its providers and configured limits."""
    entries = [pattern_info(c) for c in configs]
    limits = {key: [c.params.get(key) for c in configs if isinstance(c.params.get(key), int)]
              for key in ("tpm", "rpm")}
    entry = {"model_group": name,
             "providers": sorted({e["model_info"]["litellm_provider"] or "*" for e in entries}),
             "max_input_tokens": None, "max_output_tokens": None, "input_cost_per_token": None,
             "output_cost_per_token": None, "mode": entries[0]["model_info"]["mode"] if entries else None,
             "tpm": sum(limits["tpm"]) if limits["tpm"] else None,
             "rpm": sum(limits["rpm"]) if limits["rpm"] else None}
    entry.update({flag: None for flag in SUPPORTS})
    entry["supported_openai_params"] = None
    return entry
