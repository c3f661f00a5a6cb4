"""A virtual key's per-call rules, applied by the call pipeline before any upstream work: aliases,
the models it may use (fallbacks included), and the rpm / tpm / parallel-request limits of the key
and of every level above it (user, team, organization).

Whether a key may be used at all (blocked, expired, budget spent) is authentication's question
(gateway/access/auth.py); its budget hold is the spend meter's (gateway/spend/meter.py)."""

from gateway import errors
from gateway.data import estimate_tokens


def apply_key_rules(rules, body, meter, router, hold_seconds, keys=None):
    """Apply the key's aliases, allowed models and limits to one call's body, with the limits of the
    levels above it and of the call's end user (`meter.end_user`, looked up through `keys`, the
    key service: a blocked end user is refused, one with limits or a budget joins `meter.levels`).
    `rules` is None for the master key.

    Returns (release, allowed): what gives the call's parallel slots back (or None), and the groups
    the call may reach (None: every group), which the router holds its fallbacks to. A parallel
    slot expires after `hold_seconds`, the call's longest life."""
    if meter.end_user is not None and keys is not None:
        blocked, level = keys.end_user(meter.end_user)
        if blocked:
            raise errors.PermissionDeniedError(f"The end user `{meter.end_user[:100]}` is blocked.",
                                               param="user", code="end_user_blocked")
        if level is not None:
            meter.levels = meter.levels + (level,)
    allowed = model_access(rules, body, router)
    if rules is not None:
        meter.requested = body.get("model")  # after the key's alias
    if not meter.levels and (rules is None or (rules.rpm_limit is None and rules.tpm_limit is None
                                               and rules.max_parallel_requests is None)):
        return None, allowed  # nothing limits the call
    limits = Limits(router.state, meter.request_id, hold_seconds)
    try:
        for holder in _holders(rules, meter.levels):
            limits.apply(holder, body, meter)
    except BaseException:
        limits.undo()
        meter.tpm_reserved, meter.tpm_windows = 0, ()  # given back: nothing for the meter to settle
        raise
    return limits.release if limits.slots else None, allowed


def model_access(rules, body, router):
    """The key's alias applied to the body's model, and the groups the key may reach (None: every
    group); a model (or a fallback the body names) outside them is a 403 before any upstream work."""
    if rules is None:
        return None
    requested = body.get("model")
    if isinstance(requested, str) and requested in rules.aliases:
        body["model"] = requested = rules.aliases[requested]
    allowed = router.allowed_groups(rules.models)
    if allowed is not None:
        _check_models(rules, body, requested, allowed, router)
    return allowed


def _holders(rules, levels):
    """Who a call's limits are counted under: the key (by its identity, kept across regenerate),
    then each level above it, then the end user."""
    if rules is not None:
        yield ("key", rules.identity, rules.rpm_limit, rules.tpm_limit, rules.max_parallel_requests)
    for level in levels:
        yield (level.kind, level.id, level.rpm_limit, level.tpm_limit, level.max_parallel_requests)


class Limits:
    """One call's admission against the rpm / tpm / parallel limits of its key and the levels above
    it, exact across workers and instances (the router's shared state). A call refused at one level
    takes back what the levels before it counted, so a refused call never uses up another's room."""

    def __init__(self, state, member, hold_seconds):
        self.state = state
        self.member = member  # the call's request id: its parallel slots are named by it
        self.hold_seconds = hold_seconds  # a slot expires with the call's longest life
        self.counted = []  # (window, amount) added so far
        self.slots = []  # parallel slots taken
        self._released = False

    def apply(self, holder, body, meter):
        kind, name, rpm, tpm, parallel = holder
        who = "This key's" if kind == "key" else f"The {kind.replace('_', ' ')} `{str(name)[:100]}`'s"
        if rpm is not None:
            self._admit(f"{kind}-rpm:{name}", rpm, 1, f"{who} limit of {rpm} requests per minute is reached.")
        if tpm is not None:
            # Hold the prompt estimate plus max_tokens in the token window; settled to the real
            # usage when the call ends (SpendTracker.finish).
            asked = body.get("max_completion_tokens") or body.get("max_tokens")
            amount = max(1, estimate_tokens(body) + (asked if isinstance(asked, int) and asked > 0 else 0))
            window = f"{kind}-tpm:{name}"
            self._admit(window, tpm, amount, f"{who} limit of {tpm} tokens per minute is reached "
                                             f"(this call needs about {amount}).")
            meter.tpm_reserved = amount
            meter.tpm_windows += (window,)
        if parallel is not None:
            gauge = f"{kind}-parallel:{name}"
            if parallel <= 0 or not self.state.acquire(gauge, parallel, self.member, self.hold_seconds):
                raise errors.RateLimitError(f"{who} limit of {parallel} parallel requests is reached.",
                                            headers={"Retry-After": "1"})
            self.slots.append(gauge)

    def _admit(self, window, limit, amount, message):
        allowed_now, wait = (False, 60.0) if limit <= 0 else self.state.admit(window, limit, amount)
        if not allowed_now:
            raise errors.RateLimitError(message, headers={"Retry-After": str(max(1, round(wait)))})
        self.counted.append((window, amount))

    def undo(self):
        """The call was refused: take back what was counted and give back the slots taken."""
        for window, amount in self.counted:
            try:
                self.state.record(window, -amount)
            except Exception:  # noqa: BLE001  (a window is state, never worth a second error)
                pass
        self.release()

    def release(self):
        """Give the call's parallel slots back (once: a stream closes through two paths)."""
        if not self._released:
            self._released = True
            for gauge in self.slots:
                self.state.release(gauge, self.member)


def _check_models(rules, body, requested, allowed, router):
    """Refuse a model (or a named fallback) outside the key's `models`."""
    try:
        group = router.resolve(requested)
    except errors.NotFoundError:
        if requested not in allowed:
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
