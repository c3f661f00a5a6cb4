"""Virtual key management: /key/generate, info, update, delete, list, regenerate, block, unblock."""

from flask import Blueprint
from flask import current_app
from flask import g
from flask import request

from gateway import errors
from gateway.api.pipeline import json_response
from gateway.api.pipeline import read_body
from gateway.api.body import parse_body
from gateway.access import policy
from gateway.access.keys import hash_key
from gateway.api.hierarchy_views import scope as _scope

bp = Blueprint("keys", __name__)


def _service():
    return current_app.extensions["gateway"].auth.keys.get()


def _body():
    return parse_body(read_body(current_app.extensions["gateway"].settings.max_body_bytes))


def _checked(body, current=None):
    """The body of a key write, refused field by field unless the caller may make it."""
    scope = _scope()
    if scope.all:
        return body
    service = _service()
    return policy.check_key_write(scope, service.db, service.validate(body), current, service.access_groups)


def _mine(key):
    """The facts of an existing key the caller may write (404 for none, 403 for another's)."""
    scope = _scope()
    if scope.all:
        return
    policy.check_key_write(scope, _service().db, {}, _service().info(key))


@bp.post("/key/generate")
def generate():
    """A new key (shown once), with models, duration, aliases, limits and metadata."""
    return json_response(_service().generate(_checked(_body())))


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
            if caller.role is None or not _scope().sees_key(other):
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
    body = _body()
    if _scope().all:
        return json_response(_service().update(body))
    body = _service().validate(body)
    current = _service().info(body.get("key"))
    return json_response(_service().update(_checked(body, current)))


@bp.post("/key/delete")
def delete():
    """Delete keys: {"keys": [...]}."""
    keys = _body().get("keys")
    if isinstance(keys, list):
        for key in keys:
            _mine(key)
    return json_response({"deleted_keys": _service().delete(keys)})


@bp.get("/key/list")
def list_keys():
    """Every key's facts (never a key itself): for a caller that does not see everything, its own
    keys and those of the teams it administers."""
    scope = _scope()
    if scope.all:
        return json_response({"keys": _service().list()})
    return json_response({"keys": _service().list(owner=scope.own, team_ids=scope.admin_teams)})


@bp.post("/key/regenerate")
def regenerate():
    """A new key for the same rules; the old key stops working."""
    key = _body().get("key")
    _mine(key)
    return json_response(_service().regenerate(key))


@bp.post("/key/block")
def block():
    """Refuse every call with the key until unblocked."""
    key = _body().get("key")
    _mine(key)
    return json_response(_service().set_blocked(key, True))


@bp.post("/key/unblock")
def unblock():
    """Accept the key again."""
    key = _body().get("key")
    _mine(key)
    return json_response(_service().set_blocked(key, False))
