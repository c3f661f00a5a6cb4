"""GET /models: the model names this gateway serves (groups and aliases) that the caller may use;
which names and groups a caller may see (also for gateway/api/model_info.py)."""

import time

from flask import Blueprint
from flask import current_app
from flask import g

from gateway import errors
from gateway.api.pipeline import json_response

bp = Blueprint("models", __name__)
_STARTED = int(time.time())


def _entry(name):
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": "gateway"}


def visible_models(router, caller):
    """The names the caller may call: every group, router alias and wildcard model_name (`*`,
    `anthropic/*`: listed as LiteLLM lists them, never sent upstream as such), or for a virtual key
    with a `models` list the ones it allows (an alias whose group it allows included). A key's own
    `aliases` are not listed, as in LiteLLM: they are names for these models, not models."""
    names = router.names + sorted(router.aliases) + [pattern.name for pattern, _ in router.patterns]
    allowed = _allowed(router, caller)
    if allowed is None:
        return names
    return [n for n in names if n in allowed or router.aliases.get(n) in allowed]


def _allowed(router, caller):
    rules = caller.rules if caller is not None else None
    return router.allowed_groups(rules.models) if rules is not None else None


def _visible(router, caller, model):
    """Whether one name is the caller's to see: listed, or a name a wildcard serves that it may use."""
    if model in visible_models(router, caller):
        return True
    if router.pattern_of(model) is None:
        return False
    allowed = _allowed(router, caller)
    return allowed is None or model in allowed


def visible_groups(router, caller):
    """The groups (and wildcard model_names) the caller may see facts of (model info): every one for the master key, proxy
    admins (and their viewers) and open gateways; for any other key the groups its `models` let it
    call, exactly as the router decides that (Router.allowed_groups), in config order."""
    rules = caller.rules if caller is not None and not caller.sees_all else None
    allowed = router.allowed_groups(rules.models) if rules is not None else None
    names = list(router.groups) + [pattern.name for pattern, _ in router.patterns]
    return [name for name in names if allowed is None or name in allowed]


@bp.get("/models")
@bp.get("/v1/models")
def list_models():
    """OpenAI's model list."""
    names = visible_models(current_app.extensions["gateway"].router, g.get("caller"))
    return json_response({"object": "list", "data": [_entry(n) for n in names]})


@bp.get("/models/<path:model>")
@bp.get("/v1/models/<path:model>")
def get_model(model):
    """One model, or 404 as OpenAI answers (also for a model the caller's key may not use)."""
    if not _visible(current_app.extensions["gateway"].router, g.get("caller"), model):
        raise errors.NotFoundError(f"The model `{model[:200]}` does not exist on this gateway.",
                                   param="model", code="model_not_found")
    return json_response(_entry(model))
