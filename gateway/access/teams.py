"""Organizations and teams: /organization/* and /team/* (members with roles, block, unblock), in
LiteLLM's request and answer shapes. A change here reaches every worker's cached key rules at once."""

import uuid

from marshmallow import fields
from marshmallow import validate

from gateway import errors
from gateway.access import levels
from gateway.access.levels import LevelSchema
from gateway.access.levels import identifier
from gateway.access.levels import level_info


class OrganizationSchema(LevelSchema):
    """/organization/new and /organization/update."""

    organization_id = identifier(allow_none=True)
    organization_alias = fields.String(allow_none=True, validate=[validate.Length(max=levels.ID_MAX),
                                                                 levels.no_nul])


class TeamSchema(LevelSchema):
    """/team/new and /team/update."""

    team_id = identifier(allow_none=True)
    team_alias = fields.String(allow_none=True, validate=[validate.Length(max=levels.ID_MAX), levels.no_nul])
    organization_id = identifier(allow_none=True)
    members_with_roles = fields.List(fields.Dict(), allow_none=True, validate=validate.Length(max=1000))


_ORG = OrganizationSchema()
_TEAM = TeamSchema()
_MEMBER = levels.MemberSchema()
_ORG_MEMBER = levels.OrgMemberSchema()


def _models():
    from gateway.storage import models
    return models


def _members(data, schema):
    """`member` of a member_add body: one member or a list of them, each checked."""
    given = data.get("member") if isinstance(data, dict) else None
    given = given if isinstance(given, list) else [given] if given is not None else []
    if not given or len(given) > 1000:
        raise errors.BadRequestError("`member` must be a member or a non-empty list of members.", param="member")
    members = []
    for item in given:
        member = levels.loaded(schema, item) if isinstance(item, dict) else None
        if member is None or not (member.get("user_id") or member.get("user_email")):
            raise errors.BadRequestError("Each member needs a `user_id` or a `user_email`.", param="member")
        members.append(member)
    return members


class TeamsMixin:
    """Organizations, teams and their members (mixed into gateway.access.hierarchy.Hierarchy)."""

    # -- organizations --------------------------------------------------------------------------

    def _organization(self, session, organization_id, param="organization_id"):
        return levels.row_or_404(session, _models().Organization, organization_id, "Organization", param)

    def _organization_info(self, session, row):
        m = _models()
        teams = session.query(m.Team).filter(m.Team.organization_id == row.organization_id).order_by(m.Team.team_id)
        members = (session.query(m.OrganizationMember)
                   .filter(m.OrganizationMember.organization_id == row.organization_id)
                   .order_by(m.OrganizationMember.user_id))
        return {"organization_id": row.organization_id, "organization_alias": row.organization_alias,
                **level_info(row),
                "teams": [{"team_id": t.team_id, "team_alias": t.team_alias} for t in teams],
                "members": [{"user_id": x.user_id, "user_role": x.user_role, "organization_id": x.organization_id,
                             "created_at": levels.iso(x.created_at)} for x in members]}

    def new_organization(self, data):
        """/organization/new: an organization (its id given or a new uuid4)."""
        data = levels.validated(_ORG, data)
        organization_id = data.get("organization_id") or str(uuid.uuid4())
        row = _models().Organization(organization_id=organization_id,
                                     organization_alias=data.get("organization_alias"),
                                     **levels.level_values(data, creating=True))
        with self._writing(_exists("Organization", "organization_id", organization_id, 409)):
            with self.db.session() as session:
                if session.get(_models().Organization, organization_id) is not None:
                    raise _exists("Organization", "organization_id", organization_id, 409)
                session.add(row)
                session.flush()
                return self._organization_info(session, row)

    def organization_info(self, organization_id):
        """/organization/info: one organization, its teams and members."""
        organization_id = levels.required_id({"organization_id": organization_id}, "organization_id")
        with self.db.session() as session:
            return self._organization_info(session, self._organization(session, organization_id))

    def update_organization(self, data):
        """/organization/update: change the given fields."""
        data = levels.validated(_ORG, data)
        organization_id = levels.required_id(data, "organization_id")
        with self.db.session() as session:
            row = self._organization(session, organization_id)
            _assign(row, levels.level_values(data, creating=False))
            if "organization_alias" in data:
                row.organization_alias = data["organization_alias"]
            session.flush()
            answer = self._organization_info(session, row)
        self.keys.changed_all()
        return answer

    def delete_organizations(self, ids):
        """/organization/delete: remove organizations (all or none) that own no team any more."""
        m = _models()
        with self.db.session() as session:
            answer = []
            for organization_id in ids:
                row = self._organization(session, organization_id, "organization_ids")
                if session.query(m.Team.team_id).filter(m.Team.organization_id == organization_id).first():
                    raise errors.BadRequestError(
                        f"Organization {organization_id[:200]!r} still has teams: delete them or move them to "
                        "another organization first.", param="organization_ids", code="organization_has_teams")
                answer.append(self._organization_info(session, row))
                session.query(m.OrganizationMember).filter(
                    m.OrganizationMember.organization_id == organization_id).delete(synchronize_session=False)
                session.delete(row)
        self.keys.changed_all()
        return answer

    def list_organizations(self):
        """/organization/list: every organization."""
        m = _models()
        with self.db.session() as session:
            rows = session.query(m.Organization).order_by(m.Organization.created_at, m.Organization.organization_id)
            return [self._organization_info(session, row) for row in rows]

    def organization_member_add(self, data):
        """/organization/member_add: users (made when new, as LiteLLM does) join an organization."""
        organization_id = levels.required_id(data, "organization_id")
        members = _members(data, _ORG_MEMBER)
        m = _models()
        with self._writing(_email_taken(None)):
            with self.db.session() as session:
                self._organization(session, organization_id)
                users, memberships = [], []
                for member in members:
                    user = self._member_user(session, member)
                    if not levels.insert_if_absent(session, m.OrganizationMember, {
                            "organization_id": organization_id, "user_id": user.user_id,
                            "user_role": member["role"], "created_at": levels.new_level()["created_at"]}):
                        raise _already_member(user.user_id, "organization")
                    users.append(self._user_info(session, user))
                    memberships.append({"organization_id": organization_id, "user_id": user.user_id,
                                        "user_role": member["role"]})
        return {"organization_id": organization_id, "updated_users": users,
                "updated_organization_memberships": memberships}

    # -- teams ----------------------------------------------------------------------------------

    def _team(self, session, team_id, param="team_id"):
        return levels.row_or_404(session, _models().Team, team_id, "Team", param)

    def _team_info(self, session, row):
        m = _models()
        members = (session.query(m.TeamMember, m.User.user_email)
                   .outerjoin(m.User, m.User.user_id == m.TeamMember.user_id)
                   .filter(m.TeamMember.team_id == row.team_id).order_by(m.TeamMember.id).all())
        with_roles = [{"role": x.role, "user_id": x.user_id, "user_email": email} for x, email in members]
        return {"team_id": row.team_id, "team_alias": row.team_alias, "organization_id": row.organization_id,
                **level_info(row), "members_with_roles": with_roles,
                "admins": [x["user_id"] for x in with_roles if x["role"] == "admin"],
                "members": [x["user_id"] for x in with_roles]}

    def new_team(self, data):
        """/team/new: a team (its id given or a new uuid4), in an organization if one is named, with
        `members_with_roles` added as members."""
        data = levels.validated(_TEAM, data)
        members = _members({"member": data["members_with_roles"]}, _MEMBER) if data.get("members_with_roles") \
            else []
        team_id = data.get("team_id") or str(uuid.uuid4())
        m = _models()
        row = m.Team(team_id=team_id, team_alias=data.get("team_alias"), organization_id=data.get("organization_id"),
                     **levels.level_values(data, creating=True))
        with self._writing(_exists("Team", "team_id", team_id, 400)):
            with self.db.session() as session:
                if session.get(m.Team, team_id) is not None:
                    raise _exists("Team", "team_id", team_id, 400)
                if row.organization_id is not None:
                    self._organization(session, row.organization_id)
                session.add(row)
                session.flush()
                for member in members:
                    self._add_member(session, team_id, member)
                answer = self._team_info(session, row)
        self.keys.changed_all()  # a key may have named this team id before it existed
        return answer

    def team_info(self, team_id):
        """/team/info: the team, its keys and its memberships."""
        team_id = levels.required_id({"team_id": team_id}, "team_id")
        m = _models()
        with self.db.session() as session:
            info = self._team_info(session, self._team(session, team_id))
            keys = session.query(m.VirtualKey).filter(m.VirtualKey.team_id == team_id).order_by(m.VirtualKey.id)
            return {"team_id": team_id, "team_info": info, "keys": [self.keys.describe(k) for k in keys],
                    "team_memberships": [{"team_id": team_id, "user_id": x["user_id"], "role": x["role"]}
                                         for x in info["members_with_roles"]]}

    def update_team(self, data):
        """/team/update: change the given fields (moving it to another organization included)."""
        data = levels.validated(_TEAM, data)
        team_id = levels.required_id(data, "team_id")
        with self.db.session() as session:
            row = self._team(session, team_id)
            if "organization_id" in data:
                if data["organization_id"] is not None:
                    self._organization(session, data["organization_id"])
                row.organization_id = data["organization_id"]
            if "team_alias" in data:
                row.team_alias = data["team_alias"]
            _assign(row, levels.level_values(data, creating=False))
            session.flush()
            answer = self._team_info(session, row)
        self.keys.changed_all()
        return {"team_id": team_id, "data": answer}

    def delete_teams(self, ids):
        """/team/delete: remove teams (all or none) with their memberships and keys (which stop working
        at once on every worker); their spend rows stay."""
        m = _models()
        with self.db.session() as session:
            for team_id in ids:
                self._team(session, team_id, "team_ids")
            session.query(m.VirtualKey).filter(m.VirtualKey.team_id.in_(ids)).delete(synchronize_session=False)
            session.query(m.TeamMember).filter(m.TeamMember.team_id.in_(ids)).delete(synchronize_session=False)
            session.query(m.Team).filter(m.Team.team_id.in_(ids)).delete(synchronize_session=False)
        self.keys.changed_all()
        return {"deleted_teams": ids}

    def list_teams(self, organization_id=None, team_ids=None):
        """/team/list: every team (of one organization when it is named; among `team_ids` when given)."""
        m = _models()
        with self.db.session() as session:
            query = session.query(m.Team)
            if team_ids is not None:
                query = query.filter(m.Team.team_id.in_(sorted(team_ids)))
            if organization_id:
                query = query.filter(m.Team.organization_id == organization_id)
            return [self._team_info(session, row) for row in query.order_by(m.Team.created_at, m.Team.team_id)]

    def set_team_blocked(self, data, blocked):
        """/team/block and /team/unblock: every key of the team is refused (403) while it is blocked."""
        team_id = levels.required_id(data, "team_id")
        with self.db.session() as session:
            row = self._team(session, team_id)
            row.blocked = blocked
            session.flush()
            answer = self._team_info(session, row)
        self.keys.changed_all()
        return answer

    # -- members --------------------------------------------------------------------------------

    def _member_user(self, session, member):
        """The user a member entry names (by id, else by email, case-insensitively), made when new."""
        m = _models()
        from sqlalchemy import func
        if member.get("user_id"):
            levels.ensure_user(session, member["user_id"], member.get("user_email"))
            user = session.get(m.User, member["user_id"])
            if user is None:  # not made: its email belongs to another user
                raise _email_taken(member.get("user_email"))
            return user
        email = member["user_email"]
        user = session.query(m.User).filter(func.lower(m.User.user_email) == email.lower()).first()
        if user is None:
            user_id = str(uuid.uuid4())
            levels.ensure_user(session, user_id, email)
            user = session.get(m.User, user_id)
        return user

    def _add_member(self, session, team_id, member):
        user = self._member_user(session, member)
        if not levels.insert_if_absent(session, _models().TeamMember, {
                "team_id": team_id, "user_id": user.user_id, "role": member["role"],
                "created_at": levels.new_level()["created_at"]}):
            raise _already_member(user.user_id, "team")
        return user

    def _membership(self, session, data):
        """(team row, membership row) a member_delete / member_update body names; 404 when not a member."""
        m = _models()
        from sqlalchemy import func
        team_id = levels.required_id(data, "team_id")
        team = self._team(session, team_id)
        user_id = data.get("user_id")
        if not user_id and isinstance(data.get("user_email"), str) and data["user_email"]:
            user = session.query(m.User).filter(func.lower(m.User.user_email) == data["user_email"].lower()).first()
            user_id = user.user_id if user is not None else None
            param = "user_email"
        else:
            user_id = levels.required_id(data, "user_id")
            param = "user_id"
        membership = (session.query(m.TeamMember).filter(m.TeamMember.team_id == team_id,
                                                         m.TeamMember.user_id == user_id).one_or_none()
                      if user_id else None)
        if membership is None:
            raise errors.NotFoundError(f"The user is not a member of team {team_id[:200]!r}.", param=param,
                                       code="member_not_found")
        return team, membership

    def member_add(self, data):
        """/team/member_add: users (made when new, as LiteLLM does) join a team with a role."""
        team_id = levels.required_id(data, "team_id")
        members = _members(data, _MEMBER)
        with self._writing(_email_taken(None)):
            with self.db.session() as session:
                team = self._team(session, team_id)
                users = [self._add_member(session, team_id, member) for member in members]
                answer = self._team_info(session, team)
                answer["updated_users"] = [self._user_info(session, user) for user in users]
                answer["updated_team_memberships"] = [
                    {"team_id": team_id, "user_id": user.user_id, "role": member["role"]}
                    for user, member in zip(users, members)]
        return answer

    def member_delete(self, data):
        """/team/member_delete: a user leaves a team; its keys in the team are deleted with it."""
        m = _models()
        with self.db.session() as session:
            team, membership = self._membership(session, data)
            session.query(m.VirtualKey).filter(m.VirtualKey.team_id == team.team_id,
                                               m.VirtualKey.user_id == membership.user_id).delete(
                synchronize_session=False)
            session.delete(membership)
            session.flush()
            answer = self._team_info(session, team)
        self.keys.changed_all()
        return answer

    def member_update(self, data):
        """/team/member_update: a member's role in the team."""
        role = data.get("role") if isinstance(data, dict) else None
        if role not in levels.TEAM_ROLES:
            raise errors.BadRequestError("`role` must be one of: admin, user.", param="role")
        with self.db.session() as session:
            team, membership = self._membership(session, data)
            membership.role = role
            user = session.get(_models().User, membership.user_id)
            return {"team_id": team.team_id, "user_id": membership.user_id,
                    "user_email": user.user_email if user is not None else None, "role": role}


def _assign(row, values):
    for name, value in values.items():
        setattr(row, name, value)


def _exists(what, param, value, status):
    """A duplicate id: LiteLLM's status for it (400 for a team, 409 for the others)."""
    return errors.BadRequestError(f"{what} id = {str(value)[:200]} already exists. Please use a different "
                                  f"{what.lower()} id.", param=param, status=status,
                                  code=f"{what.lower()}_exists")


def _email_taken(email):
    """LiteLLM's 409 for a user_email another user has (compared case-insensitively)."""
    shown = f" {str(email)[:200]}" if email else ""
    return errors.BadRequestError(f"User with email{shown} already exists", param="user_email", status=409,
                                  code="user_exists")


def _already_member(user_id, where):
    return errors.BadRequestError(f"User {str(user_id)[:200]!r} is already a member of this {where}.",
                                  param="member", code="already_member")
