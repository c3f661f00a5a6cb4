"""GET /models: the model names this gateway serves (groups and aliases)."""

import time

from flask import Blueprint
from flask import current_app
from flask import g

from gateway import errors
from gateway.api.common import json_response

bp = Blueprint("models", __name__)
_STARTED = int(time.time())


def _entry(name):
    return {"id": name, "object": "model", "created": _STARTED, "owned_by": "gateway"}


@bp.get("/models")
@bp.get("/v1/models")
def list_models():
    """OpenAI's model list."""
    router = current_app.extensions["gateway"].router
    names = router.names + sorted(router.aliases)
    caller = g.get("caller")
    if caller is not None and caller.rules is not None:  # a virtual key sees what it may use
        rules = caller.rules
        allowed = [n for n in names if rules.models is None or n in rules.models]
        names = allowed + [a for a in rules.aliases if a not in allowed]
    return json_response({"object": "list", "data": [_entry(n) for n in names]})


@bp.get("/models/<path:model>")
@bp.get("/v1/models/<path:model>")
def get_model(model):
    """One model, or 404 as OpenAI answers."""
    router = current_app.extensions["gateway"].router
    if model not in router.groups and model not in router.aliases:
        raise errors.NotFoundError(f"The model `{model[:200]}` does not exist on this gateway.",
                                   param="model", code="model_not_found")
    return json_response(_entry(model))
