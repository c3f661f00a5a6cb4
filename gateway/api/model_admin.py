"""Model management stored in the database: /model/new, /model/update, PATCH /model/{id}/update,
/model/delete (proxy admin only; general_settings.store_model_in_db)."""

from flask import Blueprint
from flask import current_app
from flask import g

from gateway import errors
from gateway.api.body import parse_body
from gateway.api.pipeline import json_response
from gateway.api.pipeline import read_body
from gateway.routing.dbmodels import ADMIN_NAME
from gateway.routing.dbmodels import answer_row

bp = Blueprint("model_admin", __name__)

_OFF = ("Model management is off: set `general_settings.store_model_in_db: true` (or STORE_MODEL_IN_DB=true) "
        "with a master key and a database (general_settings.database_url or DATABASE_URL), then restart.")


def _sync():
    """The worker's ModelSync, or a 400 saying how to turn model management on."""
    sync = current_app.extensions["gateway"].models
    if sync is None:
        raise errors.BadRequestError(_OFF, code="store_model_in_db_off")
    return sync


def _body():
    body = parse_body(read_body(current_app.extensions["gateway"].settings.max_body_bytes))
    if not isinstance(body, dict):
        raise errors.BadRequestError("The body must be a JSON object.", code="invalid_body")
    return body


def _by():
    """Who made a change: the key's user, else LiteLLM's name for the proxy admin."""
    rules = g.caller.rules if g.get("caller") is not None else None
    return getattr(rules, "user_id", None) or ADMIN_NAME


def _config_ids(sync):
    """The ids of the config file's deployments (served now)."""
    return {d.id for d in sync.router.deployments() if not (d.provider.config.model_info or {}).get("db_model")}


def _model_id(value, param):
    if not isinstance(value, str) or not value:
        raise errors.BadRequestError(f"`{param}` is required: the model's model_info.id.", param=param,
                                     code="invalid_model")
    return value


def _refuse_config_model(sync, model_id):
    """Config file models are changed in the file (as in LiteLLM, where the YAML owns them)."""
    if model_id in _config_ids(sync):
        raise errors.BadRequestError(
            f"Model `{model_id[:255]}` is a config model (from the config file): change it there and "
            "restart; only models added through /model/new can be updated or deleted here.",
            param="id", code="config_model")


@bp.post("/model/new")
def new():
    """Add a model ({model_name, litellm_params, model_info}); served by every worker and instance
    within seconds. The answer is the stored row without any secret value."""
    sync = _sync()
    row = sync.store.add(_body(), _by(), taken=_config_ids(sync))
    sync.announce()
    return json_response(answer_row(row))


def _update(model_id, body):
    sync = _sync()
    _refuse_config_model(sync, model_id)
    for name in ("litellm_params", "model_info"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise errors.BadRequestError(f"{name}: must be a mapping.", param=name, code="invalid_model")
    row = sync.store.update(model_id, body, _by())
    sync.announce()
    return json_response(answer_row(row))


@bp.post("/model/update")
def update():
    """Change a stored model in part ({model_info: {id}, model_name?, litellm_params?}): parameters
    given replace the stored ones, a null removes one, the rest (provider keys too) are kept."""
    body = _body()
    info = body.get("model_info")
    return _update(_model_id(info.get("id") if isinstance(info, dict) else None, "model_info.id"), body)


@bp.patch("/model/<path:model_id>/update")
def patch(model_id):
    """LiteLLM's PATCH form of /model/update, the id in the path."""
    return _update(_model_id(model_id, "model_id"), _body())


@bp.post("/model/delete")
def delete():
    """Remove a stored model ({id}); its calls are a 404 from then on."""
    sync = _sync()
    model_id = _model_id(_body().get("id"), "id")
    _refuse_config_model(sync, model_id)
    sync.store.delete(model_id)
    sync.announce()
    return json_response({"message": f"Model: {model_id} deleted successfully"})
