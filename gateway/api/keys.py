"""Virtual key management: /key/generate, info, update, delete, list, regenerate, block, unblock."""

from flask import Blueprint
from flask import current_app
from flask import g
from flask import request

from gateway import errors
from gateway.api.pipeline import json_response
from gateway.api.pipeline import read_body
from gateway.api.body import parse_body
from gateway.access.keys import hash_key

bp = Blueprint("keys", __name__)


def _service():
    return current_app.extensions["gateway"].auth.keys.get()


def _body():
    return parse_body(read_body(current_app.extensions["gateway"].settings.max_body_bytes))


@bp.post("/key/generate")
def generate():
    """A new key (shown once), with models, duration, aliases, limits and metadata."""
    return json_response(_service().generate(_body()))


@bp.get("/key/info")
def info():
    """A key's facts and spend: a proxy admin (or viewer) sees any key, a user the keys it owns, a
    key without a user only itself."""
    key = request.args.get("key")
    caller = g.caller
    if caller.kind == "key" and not caller.sees_all:
        if key and key != caller.rules.hash and hash_key(key) != caller.rules.hash:
            # As LiteLLM: a key that does not exist is a 404 (nothing a caller could not learn by
            # calling with it), another existing key a 403, unless it belongs to the caller's user.
            other = _service().info(key)
            owner = caller.rules.user_id if caller.role is not None else None
            if owner is None or other["user_id"] != owner:
                raise errors.PermissionDeniedError("A virtual key can only read its own info.",
                                                   code="not_your_key")
            return json_response({"key": other["token"], "info": other})
        key = caller.rules.hash
    if not key:
        if caller.kind != "key":
            raise errors.BadRequestError("`key` is required.", param="key")
        key = caller.rules.hash
    info = _service().info(key)
    # The key is named by its hash: an answer never carries a key (it is shown once, by generate).
    return json_response({"key": info["token"], "info": info})


@bp.post("/key/update")
def update():
    """Change a key's models, aliases, limits, duration, metadata..."""
    return json_response(_service().update(_body()))


@bp.post("/key/delete")
def delete():
    """Delete keys: {"keys": [...]}."""
    return json_response({"deleted_keys": _service().delete(_body().get("keys"))})


@bp.get("/key/list")
def list_keys():
    """Every key's facts (never a key itself)."""
    return json_response({"keys": _service().list()})


@bp.post("/key/regenerate")
def regenerate():
    """A new key for the same rules; the old key stops working."""
    return json_response(_service().regenerate(_body().get("key")))


@bp.post("/key/block")
def block():
    """Refuse every call with the key until unblocked."""
    return json_response(_service().set_blocked(_body().get("key"), True))


@bp.post("/key/unblock")
def unblock():
    """Accept the key again."""
    return json_response(_service().set_blocked(_body().get("key"), False))
