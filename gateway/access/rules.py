"""A virtual key's per-call rules, applied by the call pipeline before any upstream work: aliases,
the models it may use (fallbacks included), and its rpm / tpm / parallel-request limits.

Whether a key may be used at all (blocked, expired, budget spent) is authentication's question
(gateway/access/auth.py); its budget hold is the spend meter's (gateway/spend/meter.py)."""

from gateway import errors
from gateway.data import estimate_tokens


def apply_key_rules(rules, body, meter, router, hold_seconds):
    """Apply the key's aliases, allowed models and limits to one call's body.

    Returns (release, allowed): what gives the call's parallel slot back (or None), and the groups
    the call may reach (None: every group), which the router holds its fallbacks to. A parallel
    slot expires after `hold_seconds`, the call's longest life."""
    requested = body.get("model")
    if isinstance(requested, str) and requested in rules.aliases:
        body["model"] = requested = rules.aliases[requested]
        meter.requested = requested
    allowed = router.allowed_groups(rules.models)
    if allowed is not None:
        _check_models(rules, body, requested, allowed, router)
    state = router.state
    if rules.rpm_limit is not None:
        allowed_now, wait = (False, 60.0) if rules.rpm_limit <= 0 else state.admit(
            f"key-rpm:{rules.identity}", rules.rpm_limit)
        if not allowed_now:
            raise errors.RateLimitError(f"This key's limit of {rules.rpm_limit} requests per minute is reached.",
                                        headers={"Retry-After": str(max(1, round(wait)))})
    if rules.tpm_limit is not None:
        # Hold the prompt estimate plus max_tokens in the key's token window; settled to the
        # real usage when the call ends.
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        amount = max(1, estimate_tokens(body) + (asked if isinstance(asked, int) and asked > 0 else 0))
        allowed_now, wait = (False, 60.0) if rules.tpm_limit <= 0 else state.admit(
            f"key-tpm:{rules.identity}", rules.tpm_limit, amount)
        if not allowed_now:
            raise errors.RateLimitError(
                f"This key's limit of {rules.tpm_limit} tokens per minute is reached "
                f"(this call needs about {amount}).", headers={"Retry-After": str(max(1, round(wait)))})
        meter.tpm_reserved = amount
    if rules.max_parallel_requests is not None:
        return _parallel_slot(rules, state, meter.request_id, hold_seconds), allowed
    return None, allowed


def _check_models(rules, body, requested, allowed, router):
    """Refuse a model (or a named fallback) outside the key's `models`."""
    try:
        group = router.resolve(requested)
    except errors.NotFoundError:
        if requested not in rules.models:
            raise _not_allowed(requested, rules, "model") from None
        # Name only what the key may see, never the gateway's other models.
        raise errors.NotFoundError(f"The model `{str(requested)[:200]}` does not exist on this gateway.",
                                   param="model", code="model_not_found") from None
    # Under --model every name is served by the one deployment: the name asked for counts too.
    if group not in allowed and not (router.settings.catch_all and requested in rules.models):
        raise _not_allowed(requested if isinstance(requested, str) and requested else group, rules, "model")
    for param in ("fallbacks", "context_window_fallbacks"):
        for name in _named_fallbacks(body.get(param)):
            if router.aliases.get(name, name) not in allowed:
                raise _not_allowed(name, rules, param)


def _parallel_slot(rules, state, member, hold_seconds):
    """Take one of the key's parallel slots for the call; the function that gives it back (once).

    A slot expires with the call's longest life: a worker that dies mid-call cannot hold one for good."""
    key = f"key-parallel:{rules.identity}"
    if rules.max_parallel_requests <= 0 or not state.acquire(key, rules.max_parallel_requests, member,
                                                             hold_seconds):
        raise errors.RateLimitError(
            f"This key's limit of {rules.max_parallel_requests} parallel requests is reached.",
            headers={"Retry-After": "1"})
    released = []

    def release():
        if not released:  # a stream closes through two paths; count it once
            released.append(True)
            state.release(key, member)
    return release


def _named_fallbacks(value):
    """Every model name a request's fallbacks field names (LiteLLM's map form or a plain list)."""
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                for targets in item.values():
                    for name in [targets] if isinstance(targets, str) else targets if isinstance(targets, list) else ():
                        if isinstance(name, str):
                            yield name


def _not_allowed(name, rules, param):
    return errors.PermissionDeniedError(
        f"This key may not use the model `{str(name)[:200]}`. Allowed: {', '.join(rules.models) or 'none'}",
        param=param, code="model_not_allowed")
