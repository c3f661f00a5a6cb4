"""Who is calling and whether they may: the master key, virtual keys (blocked, expired, budget
spent), and one policy per route. A key's per-call rules are gateway/access/rules.py's."""

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from datetime import timezone

from gateway import errors
from gateway.access.policy import may_enter
from gateway.errors import AuthenticationError
from gateway.errors import PermissionDeniedError

log = logging.getLogger("gateway.access.auth")

# Every route has exactly one policy; a route missing here is refused (and a test fails).
#   public: no key; ui: an admin UI page, which checks its session cookie itself (gateway/ui) and
#   reaches data only through the routes below, as the signed-in caller; api: master or virtual key; admin: a proxy admin (open when no master key is set);
#   keys: a proxy admin, and a master key must be set (management writes); read: a proxy admin or a
#   proxy admin viewer (info and list routes); self: any key, the view answering only about the
#   caller itself (its key, its user) unless the caller's role sees everything (ADMIN_ROLES);
#   scoped: a proxy admin, and the other roles as gateway/access/policy.py's ACCESS table says
#   (internal users their own keys and spend, team admins their team's members and keys, team
#   members their own keys in the team, viewers read), the view narrowing the answer to the
#   caller's scope and refusing writes outside it field by field (policy.check_key_write).
# Who is a proxy admin: the master key, and a virtual key whose user has the role proxy_admin. A
# virtual key acts with its user's role (POLICY_ROLES); a key without a user has none.
ROUTE_POLICY = {
    "health.liveliness": "public",
    "health.readiness": "public",
    "health.health": "admin",
    "health.deployments": "admin",
    "health.config_view": "read",
    "chat.chat_completions": "api",
    "chat.chat_completions_for": "api",
    "completions.completions": "api",
    "completions.completions_for": "api",
    "embeddings.embeddings": "api",
    "embeddings.embeddings_for": "api",
    "messages.create_message": "api",
    "messages.count_message_tokens": "api",
    "responses.create_response": "api",
    "responses.get_response": "api",  # the caller's own stored responses only (api/responses.py)
    "responses.delete_response": "api",
    "responses.list_input_items": "api",
    "surfaces.images": "api",
    "surfaces.images_for": "api",
    "surfaces.moderations": "api",
    "surfaces.rerank": "api",
    "audio.transcriptions": "api",
    "audio.translations": "api",
    "audio.speech": "api",
    "audio.transcriptions_for": "api",
    "audio.translations_for": "api",
    "audio.speech_for": "api",
    "models.list_models": "api",
    "models.get_model": "api",
    "model_info.model_info": "api",  # answered for the groups the caller may use
    "model_info.model_group_info": "api",
    "model_info.routes": "admin",
    "keys.generate": "scoped",
    "keys.info": "self",
    "keys.update": "scoped",
    "keys.delete": "scoped",
    "keys.list_keys": "scoped",
    "keys.regenerate": "scoped",
    "keys.block": "scoped",
    "keys.unblock": "scoped",
    "spend.logs": "scoped",
    "reports.spend_report": "read",
    "reports.spend_keys": "read",
    "reports.spend_models": "read",
    "reports.spend_teams": "read",
    "reports.spend_end_users": "read",
    "reports.spend_daily": "read",
    "metrics.metrics": "admin",  # public with general_settings.metrics_public: true
    "users.new": "keys",
    "users.info": "self",
    "users.update": "keys",
    "users.delete": "keys",
    "users.list_users": "scoped",
    "teams.new": "keys",
    "teams.info": "scoped",
    "teams.update": "scoped",
    "teams.delete": "keys",
    "teams.list_teams": "scoped",
    "teams.member_add": "scoped",
    "teams.member_delete": "scoped",
    "teams.member_update": "scoped",
    "teams.block": "keys",
    "teams.unblock": "keys",
    "organizations.new": "keys",
    "organizations.info": "read",
    "organizations.update": "keys",
    "organizations.delete": "keys",
    "organizations.list_organizations": "read",
    "organizations.member_add": "keys",
    "customers.new": "keys",
    "customers.info": "read",
    "customers.update": "keys",
    "customers.delete": "keys",
    "customers.list_customers": "read",
    "customers.block": "keys",
    "customers.unblock": "keys",
    "model_admin.new": "keys",
    "model_admin.update": "keys",
    "model_admin.patch": "keys",
    "model_admin.delete": "keys",
    # The admin UI (gateway/ui): each page signs its caller in by session and reaches data only
    # through the routes above, as that caller (gateway/ui/client.py).
    "ui.static": "ui",
    "ui.home": "ui",
    "ui.login": "ui",
    "ui.logout": "ui",
    "ui.keys": "ui",
    "ui.create_key": "ui",
    "ui.key_page": "ui",
    "ui.update_key": "ui",
    "ui.key_action": "ui",
    "ui.logs": "ui",
    "ui.log_row": "ui",
    "ui.usage": "ui",
    "ui.usage_csv": "ui",
    "ui.teams": "ui",
    "ui.create_team": "ui",
    "ui.team_page": "ui",
    "ui.team_member": "ui",
    "ui.edit_team": "ui",
    "ui.team_action": "ui",
    "ui.users": "ui",
    "ui.create_user": "ui",
    "ui.organizations": "ui",
    "ui.create_organization": "ui",
    "ui.models": "ui",
    "ui.add_model": "ui",
    "ui.delete_model": "ui",
    "ui.edit_model": "ui",
    "ui.health": "ui",
    "ui.check_health": "ui",
    "ui.settings": "ui",
}

# The roles each policy admits beyond "api" and "self" (which admit every key).
POLICY_ROLES = {
    "admin": frozenset({"proxy_admin"}),
    "keys": frozenset({"proxy_admin"}),
    "read": frozenset({"proxy_admin", "proxy_admin_viewer"}),
}
ADMIN_ROLES = frozenset({"proxy_admin", "proxy_admin_viewer"})  # may read about anyone on "self" routes


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: "master", "key" (with its rules) or "anonymous"."""

    kind: str
    rules: object = None

    @property
    def role(self):
        """The caller's role: the master key is a proxy admin; a virtual key has its user's role."""
        if self.kind == "master":
            return "proxy_admin"
        return getattr(self.rules, "user_role", None) if self.kind == "key" else None

    @property
    def sees_all(self):
        """Whether "self" routes answer this caller about anyone (proxy admins and their viewers)."""
        return self.role in ADMIN_ROLES


ANONYMOUS = Caller("anonymous")
MASTER = Caller("master")


def bearer_token(headers):
    """The API key a request carries, or None."""
    value = headers.get("Authorization")
    if value:
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    for name in ("api-key", "x-api-key"):  # Azure's clients; Anthropic's
        value = headers.get(name)
        if value and value.strip():
            return value.strip()
    return None


class Authenticator:
    """Checks the master key in constant time, and virtual keys through the key service."""

    def __init__(self, master_key, keys=None, public=()):
        self._master = master_key.encode("utf-8") if master_key else None
        self.keys = keys
        self.opened = frozenset(public)  # endpoints the configuration makes public (metrics_public)

    @property
    def enabled(self):
        """Whether calls need a key at all."""
        return self._master is not None

    def authorize(self, endpoint, headers):
        """The Caller for a request to `endpoint`, or the error that refuses it."""
        policy = "public" if endpoint in self.opened else ROUTE_POLICY.get(endpoint, "keys")
        if policy in ("public", "ui"):  # ui: the admin UI's pages check their own session (gateway/ui)
            return ANONYMOUS
        if self._master is None:
            if policy in ("keys", "self", "read", "scoped"):
                raise PermissionDeniedError("Virtual keys need general_settings.master_key to be set.",
                                            code="no_master_key")
            return ANONYMOUS
        token = bearer_token(headers)
        if token is None:
            raise AuthenticationError("No API key provided. Send `Authorization: Bearer <key>`.",
                                      code="missing_api_key")
        if hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._master):
            return MASTER
        rules = self.keys.lookup(token) if self.keys is not None else None
        if rules is None:
            raise AuthenticationError("Invalid API key. Check the key you are sending to the gateway.")
        return self.admit(endpoint, Caller("key", rules), policy)

    def admit(self, endpoint, caller, policy=None):
        """`caller` (already identified: by a key above, or by an admin UI session) if the route's
        policy admits it, else the error that refuses it."""
        if policy is None:
            policy = "public" if endpoint in self.opened else ROUTE_POLICY.get(endpoint, "keys")
        if policy in ("public", "ui") or caller.kind == "master":
            return caller
        if caller.kind != "key":
            raise AuthenticationError("No API key provided. Send `Authorization: Bearer <key>`.",
                                      code="missing_api_key")
        check_rules(caller.rules)
        if policy in ("api", "self") or caller.role in POLICY_ROLES.get(policy, ()):
            return caller
        if policy == "scoped" and may_enter(endpoint, caller.role):
            return caller
        if caller.role is None:
            raise PermissionDeniedError("A virtual key cannot call this route; it needs the master key.",
                                        code="master_key_required")
        raise PermissionDeniedError(f"The role {caller.role} may not call this route.", code="role_not_allowed")


_BLOCKED = {
    "key": "This key is blocked.",
    "team": "This key's team is blocked.",
    "organization": "This key's organization is blocked.",
    "user": "This key's user is blocked.",
    "team_deleted": "This key's team was deleted.",
    "organization_deleted": "This key's organization was deleted.",
    "user_deleted": "This key's user was deleted.",
}


def check_rules(rules, now=None):
    """Refuse an expired, blocked or over-budget key before any upstream work."""
    now = now or datetime.now(timezone.utc)
    if rules.blocked:
        level = getattr(rules, "blocked_by", None) or "key"
        code = level if level.endswith("_deleted") else f"{level}_blocked"  # key_blocked, team_blocked, ...
        raise errors.PermissionDeniedError(_BLOCKED.get(level, "This key is blocked."), code=code)
    if rules.expires is not None and rules.expires <= now:
        raise errors.AuthenticationError(f"This key expired at {rules.expires.isoformat()}.", code="key_expired")
    period_over = rules.budget_reset_at is not None and rules.budget_reset_at <= now
    if rules.max_budget is not None and rules.spend >= rules.max_budget and not period_over:
        raise errors.BudgetExceededError(
            f"Budget has been exceeded! Key budget: ${rules.max_budget:.6g}, spent: ${rules.spend:.6g}.")


class LazyKeys:
    """The key service, built on first use over the worker's database (gateway.storage.Store, which
    answers a 503 while the database cannot be opened)."""

    def __init__(self, factory, store=None):
        self._factory = factory  # -> KeyService
        self._store = store  # the Store the service is built on (readiness reports its state)
        self._service = None

    def get(self):
        """The KeyService, or a 503 while the database cannot be reached."""
        if self._service is None:
            self._service = self._factory()
        return self._service

    def describe(self):
        """For readiness (a public route): the store's kind and state, never its address."""
        if self._store is not None:
            return self._store.describe()
        return "not opened yet" if self._service is None else f"{self._service.db.engine.dialect.name} connected"

    def hierarchy(self):
        """The organizations / teams / users / end users service, over the same database."""
        service = self.get()
        found = getattr(self, "_hierarchy", None)
        if found is None or found.keys is not service:
            from gateway.access.hierarchy import Hierarchy
            found = self._hierarchy = Hierarchy(service)
        return found

    def end_user(self, user_id):
        """KeyService.end_user through the lazily opened service."""
        return self.get().end_user(user_id)

    def lookup(self, token):
        """KeyService.lookup through the lazily opened service (malformed keys never reach it)."""
        from gateway.access.keys import looks_like_key
        if not looks_like_key(token):
            return None
        return self.get().lookup(token)

    def lookup_digest(self, digest):
        """KeyService.lookup_digest through the lazily opened service."""
        return self.get().lookup_digest(digest)
