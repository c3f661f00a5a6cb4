"""Who may do what on the management routes besides a proxy admin (who may do everything): one
table, ACCESS, for the routes whose ROUTE_POLICY (gateway/access/auth.py) is "scoped" or "self",
and the field-level rules every write of a caller that is not a proxy admin passes.

A scope names what a caller may touch on a route, by what it is:
  all   everything (a proxy admin viewer's reads)
  own   what belongs to the caller's user: its keys (user_id = itself), its user, its spend
  team  what belongs to a team in which the caller has that column's team role: the team's keys
        (team_id = the team), its members, the team itself; for a plain member ("user" role), its
        own keys in the team and reading the team
  None  nothing
Viewer roles (proxy_admin_viewer, internal_user_viewer) never write, whatever their team role.
A key without a user has no role: it reads only itself (/key/info), as ROUTE_POLICY "self" says.

Memberships are read here, on management routes only: never on the call path."""

from collections import namedtuple
from dataclasses import dataclass

from gateway import errors
from gateway.routing.patterns import ALL_MODELS
from gateway.routing.patterns import ALL_TEAM_MODELS
from gateway.routing.patterns import admits

Grant = namedtuple("Grant", "write viewer user team_admin team_member")

# endpoint:                  write  proxy_admin_viewer  internal_user(_viewer)  team admin  team member
ACCESS = {
    "keys.generate": Grant(True, None, "own", "team", "team"),
    "keys.update": Grant(True, None, "own", "team", None),
    "keys.delete": Grant(True, None, "own", "team", None),
    "keys.regenerate": Grant(True, None, "own", "team", None),
    "keys.block": Grant(True, None, "own", "team", None),
    "keys.unblock": Grant(True, None, "own", "team", None),
    "keys.info": Grant(False, "all", "own", "team", None),
    "keys.list_keys": Grant(False, "all", "own", "team", None),
    "spend.logs": Grant(False, "all", "own", None, None),
    "users.info": Grant(False, "all", "own", None, None),
    "users.list_users": Grant(False, "all", "own", "team", None),
    "teams.info": Grant(False, "all", None, "team", "team"),
    "teams.list_teams": Grant(False, "all", None, "team", "team"),
    "teams.update": Grant(True, None, None, "team", None),
    "teams.member_add": Grant(True, None, None, "team", None),
    "teams.member_delete": Grant(True, None, None, "team", None),
    "teams.member_update": Grant(True, None, None, "team", None),
}

VIEWER_ROLES = frozenset({"proxy_admin_viewer", "internal_user_viewer"})
USER_ROLES = frozenset({"internal_user", "internal_user_viewer"})
LIMITS = ("max_budget", "tpm_limit", "rpm_limit", "max_parallel_requests")
GRANTING_FIELDS = ("user_role", "allowed_routes")
# What a team admin may change of its team with /team/update: nothing that bounds it.
TEAM_ADMIN_FIELDS = frozenset({"team_id", "team_alias", "metadata"})


def may_enter(endpoint, role):
    """Whether a caller of `role` may reach a "scoped" route at all (the view then narrows it to its
    scope): a proxy admin always; a viewer where its column allows; an internal user (who may hold a
    team role) where any column might; a key without a user never."""
    if role == "proxy_admin":
        return True
    grant = ACCESS.get(endpoint)
    if grant is None or role is None:
        return False
    if role == "proxy_admin_viewer":
        return grant.viewer is not None
    if role in VIEWER_ROLES and grant.write:
        return False
    return role in USER_ROLES and any((grant.user, grant.team_admin, grant.team_member))


@dataclass(frozen=True)
class Scope:
    """What one caller may touch on one route."""

    all: bool = False
    own: str | None = None  # the caller's user id, when its own things are in scope
    admin_teams: frozenset = frozenset()  # teams whose keys, members and fields it manages
    member_teams: frozenset = frozenset()  # teams it reads, and makes its own keys in

    def owns(self, user_id):
        return self.own is not None and user_id == self.own

    def manages_team(self, team_id):
        return self.all or (isinstance(team_id, str) and team_id in self.admin_teams)

    def sees_team(self, team_id):
        return self.manages_team(team_id) or (isinstance(team_id, str) and team_id in self.member_teams)

    def sees_key(self, info):
        """A key's facts (`info`: /key/info's shape): its owner, and an admin of its team."""
        return self.all or self.owns(info.get("user_id")) or self.manages_team(info.get("team_id"))


ALL = Scope(all=True)
NOTHING = Scope()


def memberships(db, user_id):
    """{team_id: role} of a user (one query on gateway_team_members)."""
    from gateway.storage.models import TeamMember
    with db.session() as session:
        rows = session.query(TeamMember.team_id, TeamMember.role).filter(TeamMember.user_id == user_id).all()
    return {team_id: role for team_id, role in rows}


def scope(endpoint, caller, db):
    """The Scope of `caller` (gateway.access.auth.Caller) on `endpoint`."""
    role = caller.role
    if role == "proxy_admin":
        return ALL
    grant = ACCESS.get(endpoint)
    if grant is None or not may_enter(endpoint, role):
        return NOTHING
    if role == "proxy_admin_viewer":
        return ALL if grant.viewer == "all" else NOTHING
    user_id = getattr(caller.rules, "user_id", None)
    if user_id is None:
        return NOTHING
    roles = memberships(db, user_id) if (grant.team_admin or grant.team_member) else {}
    admin = frozenset(t for t, r in roles.items() if r == "admin") if grant.team_admin == "team" else frozenset()
    member = frozenset(roles) - admin if grant.team_member == "team" else frozenset()
    return Scope(own=user_id if grant.user == "own" else None, admin_teams=admin, member_teams=member)


def denied(message, param, code):
    return errors.PermissionDeniedError(message, param=param, code=code)


# ---- field-level rules of key writes -------------------------------------------------------------

def _levels(session, team_id, user_id):
    """(team, organization, user) rows a key with these owners counts against (None where absent)."""
    from gateway.storage.models import Organization
    from gateway.storage.models import Team
    from gateway.storage.models import User
    team = session.get(Team, team_id) if team_id is not None else None
    organization = session.get(Organization, team.organization_id) if team is not None and \
        team.organization_id is not None else None
    user = session.get(User, user_id) if user_id is not None else None
    return team, organization, user


def _is_member(session, team_id, user_id):
    from gateway.storage.models import TeamMember
    return session.query(TeamMember.id).filter(TeamMember.team_id == team_id,
                                               TeamMember.user_id == user_id).first() is not None


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_no_grants(scope, body):
    """Fields that grant access (LiteLLM CVE-2026-47101/47102: callers wrote their own role and allowed
    routes): a 403 naming the field for anyone but a proxy admin, never silently dropped."""
    if scope.all or not isinstance(body, dict):
        return
    entries = [body] + [m for m in (body.get("member") if isinstance(body.get("member"), list)
                                    else [body.get("member")]) if isinstance(m, dict)]
    for entry in entries:
        for name in GRANTING_FIELDS:
            if name in entry:
                raise denied(f"Only a proxy admin can set `{name}`.", name, "field_not_allowed")


def within(name, allowed, access_groups=None):
    """Whether granting `name` (a model, wildcard, access group or special name) gives nothing beyond
    the models list `allowed`: `all-team-models` is the levels' own; `*` / `all-proxy-models` is
    everything; an access group is within when each of its models is."""
    from gateway.access.levels import narrowed
    if name == ALL_TEAM_MODELS or name in allowed:
        return True
    if name in ALL_MODELS:
        return False
    members = access_groups(name) if access_groups is not None else None
    expanded = narrowed(allowed, allowed, access_groups)
    return all(admits(expanded, m) for m in (sorted(members) if members is not None else (name,)))


def check_key_write(scope, db, body, current=None, access_groups=None):
    """Refuse (403 naming the field) a key write `scope` may not make; answer the body to store.

    `current` is the key's facts for an update (None for /key/generate). A caller that is not a
    proxy admin: writes only keys it owns or whose team it administers; puts a key only in a team
    it administers (or, for its own key, a team it is a member of), never moves a key out of a team
    or into one it does not administer; names as owner only itself (or, as a team admin, a member of
    the team); sets no budget or limit above its user's, team's or organization's; and grants no
    model outside what those levels allow (`access_groups`: name -> its models, or None, so wildcards
    and access groups are understood). A key it makes without a `user_id` is its own."""
    if scope.all:
        return body
    from gateway.access.levels import effective_models
    check_no_grants(scope, body)
    own = scope.own
    if current is not None and not scope.sees_key(current):
        raise denied("You can only change your own keys or your team's keys.", "key", "not_your_key")
    body = dict(body)
    if current is None and "user_id" not in body:
        body["user_id"] = own
    team_id = body["team_id"] if "team_id" in body else (current or {}).get("team_id")
    user_id = body["user_id"] if "user_id" in body else (current or {}).get("user_id")
    moved = current is not None and "team_id" in body and team_id != current.get("team_id")
    if moved and team_id is None:
        raise denied("Only a proxy admin can take a key out of its team.", "team_id", "team_not_allowed")
    if (current is None or moved) and team_id is not None and not (
            scope.manages_team(team_id) or (not moved and team_id in scope.member_teams)):
        raise denied("You can only put keys in a team you administer (or your own keys in your teams).",
                     "team_id", "team_not_allowed")
    new_owner = current is None or ("user_id" in body and user_id != current.get("user_id"))
    with db.session() as session:
        if new_owner and not scope.owns(user_id):
            if not (scope.manages_team(team_id) and (user_id is None or _is_member(session, team_id, user_id))):
                raise denied("A key you make or change can belong only to you (or, as a team admin, to a "
                             "member of the team).", "user_id", "user_not_allowed")
        team, organization, user = _levels(session, team_id, user_id)
        levels = [level for level in (user, team, organization) if level is not None]
        for name in LIMITS:
            value = body.get(name)
            bounds = [getattr(level, name) for level in levels if getattr(level, name) is not None]
            if _number(value) and bounds and value > min(bounds):
                raise denied(f"`{name}` {value} is above {min(bounds)}, what the key's user, team or "
                             "organization allows; only a proxy admin can raise it.", name, "limit_above_bound")
        models = body.get("models")
        if isinstance(models, list) and models:
            allowed = effective_models(None, team, organization, user, access_groups)
            outside = [m for m in models if allowed is not None and not within(m, allowed, access_groups)]
            if outside:
                raise denied(f"`models` names {str(outside[0])[:200]!r}, outside what the key's team, "
                             "organization or user allows; only a proxy admin can grant it.", "models",
                             "models_not_allowed")
    return body


def check_team_update(scope, body):
    """A team admin changes its team's alias and metadata only: never its budget, limits, models,
    block or organization (those bound it)."""
    if scope.all:
        return
    check_no_grants(scope, body)
    if not scope.manages_team(body.get("team_id")):
        raise denied("You can only change a team you administer.", "team_id", "not_team_admin")
    from gateway.access.teams import TeamSchema
    for name in sorted(TeamSchema._declared_fields):
        if name in body and name not in TEAM_ADMIN_FIELDS:
            raise denied(f"Only a proxy admin can change a team's `{name}`.", name, "field_not_allowed")


def check_team_admin(scope, body):
    """Member changes of a team: a proxy admin, or an admin of that team."""
    check_no_grants(scope, body)
    if not scope.manages_team(body.get("team_id") if isinstance(body, dict) else None):
        raise denied("Only a proxy admin or an admin of this team can manage its members.", "team_id",
                     "not_team_admin")


def visible_users(db, scope):
    """The user ids a caller that does not see everything may list: itself and the members of the
    teams it administers."""
    from gateway.storage.models import TeamMember
    users = {scope.own} if scope.own is not None else set()
    if scope.admin_teams:
        with db.session() as session:
            users.update(u for (u,) in session.query(TeamMember.user_id)
                         .filter(TeamMember.team_id.in_(sorted(scope.admin_teams))))
    return users
