"""Teams: /team/new, info, update, delete, list, member_add, member_delete, member_update, block,
unblock (LiteLLM's shapes)."""

from flask import Blueprint
from flask import request

from gateway.api.hierarchy_views import body
from gateway.api.hierarchy_views import hierarchy
from gateway.api.pipeline import json_response
from gateway.access.levels import id_list

bp = Blueprint("teams", __name__)


@bp.post("/team/new")
def new():
    """A team, in an organization when one is named, with its first members."""
    return json_response(hierarchy().new_team(body()))


@bp.get("/team/info")
def info():
    """A team, its keys and memberships."""
    return json_response(hierarchy().team_info(request.args.get("team_id")))


@bp.post("/team/update")
def update():
    """Change a team's fields."""
    return json_response(hierarchy().update_team(body()))


@bp.post("/team/delete")
def delete():
    """Delete teams ({"team_ids": [...]}), their keys with them."""
    return json_response(hierarchy().delete_teams(id_list(body(), "team_ids")))


@bp.get("/team/list")
def list_teams():
    """Every team (of one organization with `organization_id`)."""
    return json_response(hierarchy().list_teams(request.args.get("organization_id")))


@bp.post("/team/member_add")
def member_add():
    """Users join the team ({"team_id", "member": {...} or [...]})."""
    return json_response(hierarchy().member_add(body()))


@bp.post("/team/member_delete")
def member_delete():
    """A user leaves the team ({"team_id", "user_id" or "user_email"})."""
    return json_response(hierarchy().member_delete(body()))


@bp.post("/team/member_update")
def member_update():
    """A member's role in the team ({"team_id", "user_id", "role"})."""
    return json_response(hierarchy().member_update(body()))


@bp.post("/team/block")
def block():
    """Refuse every key of the team until it is unblocked."""
    return json_response(hierarchy().set_team_blocked(body(), True))


@bp.post("/team/unblock")
def unblock():
    """Accept the team's keys again."""
    return json_response(hierarchy().set_team_blocked(body(), False))
