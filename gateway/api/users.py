"""Internal users: /user/new, /user/info, /user/update, /user/delete, /user/list (LiteLLM's shapes)."""

from flask import Blueprint
from flask import g
from flask import request

from gateway import errors
from gateway.api.hierarchy_views import body
from gateway.api.hierarchy_views import hierarchy
from gateway.api.hierarchy_views import scope
from gateway.access import policy
from gateway.api.pipeline import json_response
from gateway.access.levels import id_list

bp = Blueprint("users", __name__)


@bp.post("/user/new")
def new():
    """A user, and (unless auto_create_key is false) a key it owns, shown once."""
    return json_response(hierarchy().new_user(body(), by_admin=g.caller.role == "proxy_admin"))


@bp.get("/user/info")
def info():
    """A user, its keys and teams: proxy admins and viewers see anyone, a user itself only."""
    caller = g.caller
    user_id = request.args.get("user_id")
    if not caller.sees_all:
        own = caller.rules.user_id if caller.rules is not None and caller.role is not None else None
        if own is None:
            raise errors.PermissionDeniedError("This key belongs to no user.", code="not_your_user")
        if user_id and user_id != own:
            raise errors.PermissionDeniedError("A user can only read its own info.", code="not_your_user")
        user_id = own
    return json_response(hierarchy().user_info(user_id))


@bp.post("/user/update")
def update():
    """Change a user's fields (`user_role` only by a proxy admin)."""
    return json_response(hierarchy().update_user(body(), by_admin=g.caller.role == "proxy_admin"))


@bp.post("/user/delete")
def delete():
    """Delete users ({"user_ids": [...]}), their keys with them."""
    return json_response(hierarchy().delete_users(id_list(body(), "user_ids")))


@bp.get("/user/list")
def list_users():
    """A page of users (`page`, `page_size`, `role`): for a caller that does not see everything, itself
    and the members of the teams it administers."""
    args = request.args
    seen = scope()
    users = None if seen.all else policy.visible_users(hierarchy().db, seen)
    return json_response(hierarchy().list_users(args.get("page", 1), args.get("page_size", 25), args.get("role"),
                                                user_ids=users))
