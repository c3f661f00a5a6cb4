"""Teams: /team/new, info, update, delete, list, member_add, member_delete, member_update, block,
unblock (LiteLLM's shapes)."""

from flask import Blueprint
from flask import g
from flask import request

from gateway.api.hierarchy_views import body
from gateway.api.hierarchy_views import hierarchy
from gateway.api.hierarchy_views import scope
from gateway import errors
from gateway.access import levels
from gateway.access import policy
from gateway.api.pipeline import json_response
from gateway.access.levels import id_list

bp = Blueprint("teams", __name__)


def hierarchy_validated(data):
    """A /team/update body checked as the service checks it (400 naming the field before any 403)."""
    from gateway.access.teams import TeamSchema
    return levels.validated(TeamSchema(), data)


@bp.post("/team/new")
def new():
    """A team, in an organization when one is named, with its first members."""
    return json_response(hierarchy().new_team(body()))


@bp.get("/team/info")
def info():
    """A team, its keys and memberships: for its members (a plain member sees its own keys only)."""
    team_id = levels.required_id({"team_id": request.args.get("team_id")}, "team_id")
    seen = scope()
    if not seen.sees_team(team_id):
        raise errors.PermissionDeniedError("You can only read the teams you are a member of.", param="team_id",
                                           code="not_team_member")
    answer = hierarchy().team_info(team_id)
    if not seen.manages_team(team_id):
        own = g.caller.rules.user_id
        answer["keys"] = [key for key in answer["keys"] if key["user_id"] == own]
    return json_response(answer)


@bp.post("/team/update")
def update():
    """Change a team's fields (a team admin: its alias and metadata only)."""
    data = body()
    if not scope().all:
        policy.check_team_update(scope(), hierarchy_validated(data))
    return json_response(hierarchy().update_team(data))


@bp.post("/team/delete")
def delete():
    """Delete teams ({"team_ids": [...]}), their keys with them."""
    return json_response(hierarchy().delete_teams(id_list(body(), "team_ids")))


@bp.get("/team/list")
def list_teams():
    """Every team (of one organization with `organization_id`); for a caller that does not see
    everything, the teams it is a member of."""
    seen = scope()
    teams = None if seen.all else seen.admin_teams | seen.member_teams
    return json_response(hierarchy().list_teams(request.args.get("organization_id"), team_ids=teams))


@bp.post("/team/member_add")
def member_add():
    """Users join the team ({"team_id", "member": {...} or [...]})."""
    data = body()
    policy.check_team_admin(scope(), data)
    return json_response(hierarchy().member_add(data))


@bp.post("/team/member_delete")
def member_delete():
    """A user leaves the team ({"team_id", "user_id" or "user_email"})."""
    data = body()
    policy.check_team_admin(scope(), data)
    return json_response(hierarchy().member_delete(data))


@bp.post("/team/member_update")
def member_update():
    """A member's role in the team ({"team_id", "user_id", "role"})."""
    data = body()
    policy.check_team_admin(scope(), data)
    return json_response(hierarchy().member_update(data))


@bp.post("/team/block")
def block():
    """Refuse every key of the team until it is unblocked."""
    return json_response(hierarchy().set_team_blocked(body(), True))


@bp.post("/team/unblock")
def unblock():
    """Accept the team's keys again."""
    return json_response(hierarchy().set_team_blocked(body(), False))
