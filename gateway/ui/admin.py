"""The Teams, Users, Organizations, Models, Health and Settings pages: each a view of the matching
management routes (/team/..., /user/..., /organization/..., /model/..., /health..., /config/view),
called as the signed-in caller, so a team admin manages its own team's members, a viewer reads,
and what a role may not do is said on the page."""

from flask import redirect
from flask import request
from flask import url_for

from gateway.ui.web import api
from gateway.ui.web import bp
from gateway.ui.web import changed
from gateway.ui.web import page

USERS_PAGE = 50
ROLES = ("internal_user", "internal_user_viewer", "proxy_admin", "proxy_admin_viewer")


def _text(name, limit=255):
    return (request.form.get(name) or "").strip()[:limit]


def _optional(body, name, kind=str):
    """Copy a form field into `body` when given: (ok, message naming it)."""
    value = _text(name, 4096)
    if not value:
        return None
    try:
        body[name] = kind(value)
    except ValueError:
        return f"{name} must be a number."
    return None


def _list(value):
    return [part.strip() for part in value.split(",") if part.strip()]


def _listing(template, path, name, status=200, message=None, query=None, pick=None, **values):
    """A page listing what GET `path` answers (`pick` takes the list out of the answer) under
    `name`; the route's refusal, or `message`, said on it."""
    answer = api("GET", path, query=query)
    found = (pick(answer.body) if pick is not None else answer.body) if answer.ok else None
    return page(template, status=status if answer.ok else answer.status,
                message=message or answer.error, **{name: found or []}, **values)


def _made(path, body, message, done, again):
    """POST `body` to `path` (unless the form was refused: `message`): redirect to done(answer),
    else again(status, message) shows the page with the reason."""
    if message is not None:
        return again(400, message)
    answer = api("POST", path, body=body)
    return redirect(done(answer.body)) if answer.ok else again(answer.status, answer.error)


# ---- Teams -------------------------------------------------------------------------------------------

def _teams_page(status=200, message=None):
    return _listing("teams.html", "/team/list", "teams", status, message)


@bp.get("/teams")
def teams():
    return _teams_page()


@bp.post("/teams")
def create_team():
    body = {"team_alias": _text("team_alias") or None}
    message = _optional(body, "team_id") or _optional(body, "organization_id") or _optional(body, "max_budget", float)
    if _text("models"):
        body["models"] = _list(_text("models", 4096))
    return _made("/team/new", body, message, lambda made: url_for("ui.team_page", team_id=made["team_id"]),
                 _teams_page)


def _team_view(team_id, status=200, message=None):
    answer = api("GET", "/team/info", query={"team_id": team_id})
    if not answer.ok:
        return page("error.html", status=answer.status, message=answer.error)
    return page("team.html", status=status, team=answer.body["team_info"], keys=answer.body["keys"],
                message=message)


@bp.get("/teams/<team_id>")
def team_page(team_id):
    return _team_view(team_id)


@bp.post("/teams/<team_id>/edit")
def edit_team(team_id):
    """Change a team's alias, budget, period, limits and models (/team/update) with the fields the
    form changed (the form shows them all: a team admin, who may change its alias only, can save
    that alone and is told so for the rest)."""
    current = api("GET", "/team/info", query={"team_id": team_id})
    if not current.ok:
        return page("error.html", status=current.status, message=current.error)
    team = current.body["team_info"]
    wanted = {"team_alias": _text("team_alias") or None, "budget_duration": _text("budget_duration") or None,
              "models": _list(_text("models", 4096))}
    for name, kind in (("max_budget", float), ("rpm_limit", int), ("tpm_limit", int)):
        wanted[name] = None
        message = _optional(wanted, name, kind)
        if message is not None:
            return _team_view(team_id, 400, message)
    body = {"team_id": team_id, **changed(wanted, team)}
    return _made("/team/update", body, None, lambda _made: url_for("ui.team_page", team_id=team_id),
                 lambda status, message: _team_view(team_id, status, message))


@bp.post("/teams/<team_id>/members")
def team_member(team_id):
    """Add a member (user id or email, with a role), change one's role, or remove one."""
    action = request.form.get("action")
    user_id = _text("user_id")
    if action == "remove":
        answer = api("POST", "/team/member_delete", body={"team_id": team_id, "user_id": user_id})
    elif action == "role":
        answer = api("POST", "/team/member_update", body={"team_id": team_id, "user_id": user_id,
                                                            "role": _text("role")})
    else:
        member = {"role": _text("role") or "user"}
        if "@" in user_id:
            member["user_email"] = user_id
        else:
            member["user_id"] = user_id
        answer = api("POST", "/team/member_add", body={"team_id": team_id, "member": member})
    if answer.ok:
        return redirect(url_for("ui.team_page", team_id=team_id))
    return _team_view(team_id, answer.status, answer.error)


@bp.post("/teams/<team_id>/<action>")
def team_action(team_id, action):
    """block or unblock (proxy admins)."""
    if action not in ("block", "unblock"):
        return page("error.html", status=404, message="No such action.")
    answer = api("POST", f"/team/{action}", body={"team_id": team_id})
    if answer.ok:
        return redirect(url_for("ui.team_page", team_id=team_id))
    return _team_view(team_id, answer.status, answer.error)


# ---- Users and organizations ---------------------------------------------------------------------------

def _users_page(status=200, message=None):
    try:
        number = max(1, int(request.args.get("page", "1")))
    except ValueError:
        number = 1
    answer = api("GET", "/user/list", query={"page": number, "page_size": USERS_PAGE})
    body = answer.body if answer.ok and isinstance(answer.body, dict) else {}
    return page("users.html", status=status if answer.ok else answer.status, users=body.get("users", []),
                number=number, pages=body.get("total_pages", 1), total=body.get("total", 0), roles=ROLES,
                message=message or answer.error)


@bp.get("/users")
def users():
    return _users_page()


@bp.post("/users")
def create_user():
    body = {"user_role": _text("user_role") or "internal_user", "auto_create_key": False}
    message = (_optional(body, "user_id") or _optional(body, "user_email") or _optional(body, "user_alias")
               or _optional(body, "max_budget", float))
    return _made("/user/new", body, message, lambda _made: url_for("ui.users"), _users_page)


def _organizations_page(status=200, message=None):
    return _listing("organizations.html", "/organization/list", "organizations", status, message)


@bp.get("/organizations")
def organizations():
    return _organizations_page()


@bp.post("/organizations")
def create_organization():
    body = {}
    message = (_optional(body, "organization_id") or _optional(body, "organization_alias")
               or _optional(body, "max_budget", float))
    return _made("/organization/new", body, message, lambda _made: url_for("ui.organizations"),
                 _organizations_page)


# ---- Models, Health, Settings --------------------------------------------------------------------------

def _models_page(status=200, message=None):
    health = api("GET", "/health/deployments")  # a proxy admin's: others see the models without it
    checks = {d["model_id"]: d["last_check"] for d in health.body["deployments"]} if health.ok else None
    return _listing("models.html", "/model/info", "models", status, message, pick=lambda body: body.get("data"),
                    checks=checks)


@bp.get("/models")
def models():
    return _models_page()


@bp.post("/models")
def add_model():
    """A database model (general_settings.store_model_in_db): its key is sent once, stored encrypted,
    and never shown again."""
    params = {"model": _text("model")}
    for name in ("api_base", "api_key", "api_version"):
        if _text(name, 4096):
            params[name] = _text(name, 4096)
    return _made("/model/new", {"model_name": _text("model_name"), "litellm_params": params}, None,
                 lambda _made: url_for("ui.models"), _models_page)


@bp.post("/models/<model_id>/edit")
def edit_model(model_id):
    """Change a database model's address, limits or key (/model/update): a field left empty keeps
    what is stored, so a key is never sent back to the page to be kept."""
    params = {}
    for name in ("api_base", "api_key", "api_version"):
        if _text(name, 4096):
            params[name] = _text(name, 4096)
    message = None
    for name in ("rpm", "tpm"):
        message = message or _optional(params, name, int)
    return _made("/model/update", {"model_info": {"id": model_id}, "litellm_params": params}, message,
                 lambda _made: url_for("ui.models"), _models_page)


@bp.post("/models/<model_id>/delete")
def delete_model(model_id):
    return _made("/model/delete", {"id": model_id}, None, lambda _made: url_for("ui.models"), _models_page)


def _health_page(checked=None, status=200, message=None):
    ready = api("GET", "/health/readiness")
    answer = api("GET", "/health/deployments")
    deployments = answer.body.get("deployments", []) if answer.ok else []
    results = {}
    if checked is not None:
        for entry in checked.get("healthy_endpoints", []):
            results[entry["model_id"]] = ("healthy", f"{entry.get('latency_ms')} ms")
        for entry in checked.get("unhealthy_endpoints", []):
            results[entry["model_id"]] = ("unhealthy", entry.get("error", ""))
    return page("health.html", status=status if answer.ok else answer.status, ready=ready.body or {},
                deployments=deployments, results=results, message=message or answer.error)


@bp.get("/health")
def health():
    return _health_page()


@bp.post("/health")
def check_health():
    """Call every deployment now (the /health route) and show each answer beside it."""
    answer = api("GET", "/health")
    return _health_page(answer.body if answer.ok else None, answer.status, answer.error)


@bp.get("/settings")
def settings():
    answer = api("GET", "/config/view")
    if not answer.ok:
        return page("error.html", status=answer.status, message=answer.error)
    import json
    sections = [(name, json.dumps(answer.body[name], indent=2, sort_keys=True, default=str))
                for name in ("general_settings", "router_settings", "litellm_settings")]
    return page("settings.html", source=answer.body["source"], models=answer.body["models"], sections=sections)
