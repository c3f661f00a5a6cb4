"""Internal users (/user/*: a role, an email, teams, keys) and end users (/customer/* and /end_user/*:
the `user` field of a call), in LiteLLM's request and answer shapes."""

import uuid

from marshmallow import fields
from marshmallow import validate

from gateway import errors
from gateway.access import levels
from gateway.access.levels import LevelSchema
from gateway.access.levels import identifier
from gateway.access.levels import level_info
from gateway.access.levels import not_found
from gateway.access.teams import _assign
from gateway.access.teams import _email_taken

PAGE_SIZE_MAX = 100


class UserSchema(LevelSchema):
    """/user/new and /user/update (the key fields of /user/new go to its key)."""

    user_id = identifier(allow_none=True)
    user_email = identifier(allow_none=True)
    user_alias = fields.String(allow_none=True, validate=[validate.Length(max=levels.ID_MAX), levels.no_nul])
    user_role = fields.String(allow_none=True, validate=validate.OneOf(levels.ROLES))
    teams = fields.List(identifier(), allow_none=True, validate=validate.Length(max=1000))
    auto_create_key = fields.Boolean(allow_none=True, truthy={True}, falsy={False})
    key_alias = fields.String(allow_none=True, validate=[validate.Length(max=levels.ID_MAX), levels.no_nul])
    duration = fields.String(allow_none=True, validate=[validate.Length(max=32), levels.no_nul])


class CustomerSchema(LevelSchema):
    """/customer/new and /customer/update."""

    user_id = identifier(allow_none=True)
    alias = fields.String(allow_none=True, validate=[validate.Length(max=levels.ID_MAX), levels.no_nul])


_USER = UserSchema()
_CUSTOMER = CustomerSchema()


def _models():
    from gateway.storage import models
    return models


def _user_exists(user_id):
    return errors.BadRequestError(f"User with id {str(user_id)[:200]} already exists", param="user_id",
                                  status=409, code="user_exists")


def _customer_exists(user_id):
    return errors.BadRequestError(f"Customer already exists, passed user_id={str(user_id)[:200]}. Please pass a "
                                  "new user_id.", param="user_id", code="customer_exists")


class UsersMixin:
    """Users and end users (mixed into gateway.access.hierarchy.Hierarchy)."""

    # -- users ----------------------------------------------------------------------------------

    def _user(self, session, user_id, param="user_id"):
        return levels.row_or_404(session, _models().User, user_id, "User", param)

    def _user_by_email(self, session, email):
        from sqlalchemy import func
        m = _models()
        return session.query(m.User).filter(func.lower(m.User.user_email) == email.lower()).first()

    def _user_info(self, session, row):
        m = _models()
        teams = [team_id for (team_id,) in session.query(m.TeamMember.team_id)
                 .filter(m.TeamMember.user_id == row.user_id).order_by(m.TeamMember.team_id)]
        orgs = (session.query(m.OrganizationMember).filter(m.OrganizationMember.user_id == row.user_id)
                .order_by(m.OrganizationMember.organization_id).all())
        return {"user_id": row.user_id, "user_email": row.user_email, "user_alias": row.user_alias,
                "user_role": row.user_role, "teams": list(teams), **level_info(row),
                "organization_memberships": [{"organization_id": x.organization_id, "user_role": x.user_role}
                                             for x in orgs]}

    def _check_role(self, data, by_admin):
        """Nobody but a proxy admin sets a role (LiteLLM's CVE: users wrote their own role)."""
        if data.get("user_role") is not None and not by_admin:
            raise errors.PermissionDeniedError("Only a proxy admin can set `user_role`.", param="user_role",
                                               code="role_not_allowed")

    def new_user(self, data, by_admin=True):
        """/user/new: a user (id given or a new uuid4; role internal_user unless set), a member of
        `teams`, and, unless `auto_create_key` is false, a new key it owns (shown once)."""
        data = levels.validated(_USER, data)
        self._check_role(data, by_admin)
        m = _models()
        user_id = data.get("user_id") or str(uuid.uuid4())
        email = data.get("user_email")
        row = m.User(user_id=user_id, user_email=email, user_alias=data.get("user_alias"),
                     user_role=data.get("user_role") or "internal_user", **levels.level_values(data, creating=True))
        with self._writing(_email_taken(email) if email else _user_exists(user_id)):
            with self.db.session() as session:
                if session.get(m.User, user_id) is not None:
                    raise _user_exists(user_id)
                if email and self._user_by_email(session, email) is not None:
                    raise _email_taken(email)
                for team_id in data.get("teams") or ():
                    self._team(session, team_id, "teams")
                session.add(row)
                session.flush()
                for team_id in sorted(set(data.get("teams") or ())):
                    session.add(m.TeamMember(team_id=team_id, user_id=user_id, role="user"))
                session.flush()
                answer = self._user_info(session, row)
        self.keys.changed_all()  # a key may have named this user id before it existed
        if data.get("auto_create_key") is False:
            return answer
        request = {"user_id": user_id}
        for name in ("key_alias", "duration"):
            if name in data:
                request[name] = data[name]
        key = self.keys.generate(request)
        return {**answer, "key": key["key"], "token": key["token"], "token_id": key["token_id"],
                "key_name": key["key_name"], "key_alias": key["key_alias"], "expires": key["expires"]}

    def user_info(self, user_id):
        """/user/info: the user, its keys and its teams."""
        user_id = levels.required_id({"user_id": user_id}, "user_id")
        m = _models()
        with self.db.session() as session:
            info = self._user_info(session, self._user(session, user_id))
            keys = session.query(m.VirtualKey).filter(m.VirtualKey.user_id == user_id).order_by(m.VirtualKey.id)
            teams = session.query(m.Team).filter(m.Team.team_id.in_(info["teams"])).order_by(m.Team.team_id)
            return {"user_id": user_id, "user_info": info, "keys": [self.keys.describe(k) for k in keys],
                    "teams": [self._team_info(session, team) for team in teams]}

    def update_user(self, data, by_admin=True):
        """/user/update: change the given fields of the user named by `user_id` (or `user_email`)."""
        data = levels.validated(_USER, data)
        self._check_role(data, by_admin)
        with self._writing(_email_taken(data.get("user_email"))):
            with self.db.session() as session:
                if data.get("user_id"):
                    row = self._user(session, data["user_id"])
                elif data.get("user_email"):
                    row = self._user_by_email(session, data["user_email"])
                    if row is None:
                        raise not_found("User", "user_email", data["user_email"])
                else:
                    raise errors.BadRequestError("`user_id` or `user_email` is required.", param="user_id")
                if data.get("user_id") and "user_email" in data and data["user_email"] is not None:
                    other = self._user_by_email(session, data["user_email"])
                    if other is not None and other.user_id != row.user_id:
                        raise _email_taken(data["user_email"])
                    row.user_email = data["user_email"]
                for name in ("user_alias", "user_role"):
                    if data.get(name) is not None or (name == "user_alias" and name in data):
                        setattr(row, name, data[name])
                _assign(row, levels.level_values(data, creating=False))
                session.flush()
                answer = self._user_info(session, row)
        self.keys.changed_all()
        return {"user_id": answer["user_id"], "data": answer}

    def delete_users(self, ids):
        """/user/delete: remove users (all or none), their memberships and keys (which stop working at
        once on every worker); their spend rows stay."""
        m = _models()
        with self.db.session() as session:
            for user_id in ids:
                self._user(session, user_id, "user_ids")
            session.query(m.VirtualKey).filter(m.VirtualKey.user_id.in_(ids)).delete(synchronize_session=False)
            session.query(m.TeamMember).filter(m.TeamMember.user_id.in_(ids)).delete(synchronize_session=False)
            session.query(m.OrganizationMember).filter(m.OrganizationMember.user_id.in_(ids)).delete(
                synchronize_session=False)
            session.query(m.User).filter(m.User.user_id.in_(ids)).delete(synchronize_session=False)
        self.keys.changed_all()
        return {"deleted_users": ids}

    def list_users(self, page=1, page_size=25, role=None, user_ids=None):
        """/user/list: a page of users (LiteLLM's `page`, `page_size`, `role` filter; among `user_ids`
        when given)."""
        page = _positive(page, "page", 1, 10**9)
        page_size = _positive(page_size, "page_size", 1, PAGE_SIZE_MAX)
        if role is not None and role not in levels.ROLES:
            raise errors.BadRequestError(f"`role` must be one of: {', '.join(levels.ROLES)}.", param="role")
        m = _models()
        with self.db.session() as session:
            query = session.query(m.User)
            if user_ids is not None:
                query = query.filter(m.User.user_id.in_(sorted(user_ids)))
            if role is not None:
                query = query.filter(m.User.user_role == role)
            total = query.count()
            rows = query.order_by(m.User.created_at, m.User.user_id).offset((page - 1) * page_size).limit(page_size)
            users = [self._user_info(session, row) for row in rows]
        return {"users": users, "total": total, "page": page, "page_size": page_size,
                "total_pages": (total + page_size - 1) // page_size}

    # -- end users ------------------------------------------------------------------------------

    def _customer(self, session, user_id, param="user_id"):
        return levels.row_or_404(session, _models().EndUser, user_id, "End user", param)

    @staticmethod
    def _customer_info(row):
        info = level_info(row)
        budget = {name: info[name] for name in ("max_budget", "budget_duration", "budget_reset_at", "tpm_limit",
                                                "rpm_limit", "max_parallel_requests")}
        return {"user_id": row.user_id, "alias": row.alias, **info, "litellm_budget_table": budget}

    def new_customer(self, data):
        """/customer/new: an end user (`user_id` required: the `user` its calls send)."""
        data = levels.validated(_CUSTOMER, data)
        user_id = levels.required_id(data, "user_id")
        row = _models().EndUser(user_id=user_id, alias=data.get("alias"), **levels.level_values(data, creating=True))
        with self._writing(_customer_exists(user_id)):
            with self.db.session() as session:
                if session.get(_models().EndUser, user_id) is not None:
                    raise _customer_exists(user_id)
                session.add(row)
                session.flush()
                info = self._customer_info(row)
        self.keys.changed_all()  # calls naming this end user look it up again
        return info

    def customer_info(self, user_id):
        """/customer/info?end_user_id=: one end user."""
        user_id = levels.required_id({"end_user_id": user_id}, "end_user_id")
        with self.db.session() as session:
            return self._customer_info(self._customer(session, user_id, "end_user_id"))

    def update_customer(self, data):
        """/customer/update: change the given fields."""
        data = levels.validated(_CUSTOMER, data)
        user_id = levels.required_id(data, "user_id")
        with self.db.session() as session:
            row = self._customer(session, user_id)
            if "alias" in data:
                row.alias = data["alias"]
            _assign(row, levels.level_values(data, creating=False))
            session.flush()
            info = self._customer_info(row)
        self.keys.changed_all()
        return info

    def delete_customers(self, ids):
        """/customer/delete: remove end users (all or none); their spend rows stay."""
        m = _models()
        with self.db.session() as session:
            for user_id in ids:
                self._customer(session, user_id, "user_ids")
            count = session.query(m.EndUser).filter(m.EndUser.user_id.in_(ids)).delete(synchronize_session=False)
        self.keys.changed_all()
        return {"deleted_customers": count, "message": f"Successfully deleted customers with ids: {ids}"}

    def list_customers(self):
        """/customer/list: every end user."""
        m = _models()
        with self.db.session() as session:
            return [self._customer_info(row) for row in
                    session.query(m.EndUser).order_by(m.EndUser.created_at, m.EndUser.user_id)]

    def set_customers_blocked(self, ids, blocked):
        """/customer/block (an unknown end user is made, blocked, as LiteLLM does) and /customer/unblock."""
        m = _models()
        with self.db.session() as session:
            for user_id in ids:
                if blocked:
                    levels.insert_if_absent(session, m.EndUser, levels.new_level(user_id=user_id, alias=None))
                self._customer(session, user_id, "user_ids").blocked = blocked
            session.flush()
            rows = [self._customer_info(session.get(m.EndUser, user_id)) for user_id in ids]
        self.keys.changed_all()
        return {"blocked_users" if blocked else "unblocked_users": rows}


def _positive(value, name, low, high):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise errors.BadRequestError(f"`{name}` must be a whole number from {low} to {high}.", param=name)
    return number
