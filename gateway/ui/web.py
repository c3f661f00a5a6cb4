"""The admin UI's blueprint: sign-in and sign-out, the session check before every page, CSRF and
origin checks on every form, the security headers, and the helpers the pages (keys.py, usage.py)
share. Pages get their data from the management routes through client.call, as the signed-in
caller, so each role sees and does only what the route policy allows."""

import logging
from datetime import timezone
from urllib.parse import urlsplit

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import g
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for

from gateway import errors
from gateway.access.auth import MASTER
from gateway.access.auth import Caller
from gateway.access.auth import check_rules
from gateway.ui import client
from gateway.ui import sessions

log = logging.getLogger("gateway.ui")

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")

# Scripts and styles from /ui/static only: no inline script, no inline style, no other origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
OPEN = frozenset({"ui.login", "ui.static"})  # the pages reached without a session
SIGN_IN_FAILURES = 10  # failed sign-ins per client address per minute, then 429 until the minute passes
ROLE_NAMES = {"proxy_admin": "Admin", "proxy_admin_viewer": "Admin viewer", "internal_user": "User",
              "internal_user_viewer": "User viewer"}


def _gateway():
    return current_app.extensions["gateway"]


def _sessions():
    """The worker's Sessions (gateway_ui_sessions), made on first use."""
    gateway = _gateway()
    found = getattr(gateway, "ui_sessions", None)
    if found is None:
        found = gateway.ui_sessions = sessions.Sessions(gateway.store, gateway.settings.general.ui_session_seconds)
    return found


def api(method, path, query=None, body=None):
    """A management route's Answer, called as the signed-in caller."""
    return client.call(g.ui_caller, method, path, query=query, body=body)


def page(template, status=200, **values):
    """A page of the UI, with the nav, the caller and the CSRF token every form needs."""
    return render_template(template, caller_name=g.get("ui_name"), csrf=g.get("ui_csrf"), **values), status


def changed(body, current):
    """The fields of an update `body` that differ from the `current` facts the form showed (none,
    "", an empty list and an empty mapping are the same): an edit sends only what the user changed."""
    def same(new, old):
        return new == old or (new in (None, "", [], {}) and old in (None, "", [], {}))
    return {name: value for name, value in body.items() if not same(value, current.get(name))}


def csrf_field_ok():
    """Whether a POST carries the session's (or the sign-in form's) CSRF token."""
    token = request.cookies.get(sessions.COOKIE if request.endpoint not in OPEN else sessions.LOGIN_COOKIE)
    return sessions.csrf_ok(token, request.form.get("csrf"))


def same_origin():
    """A form must come from a page of this gateway: its Origin (browsers send it on every POST), or
    else Sec-Fetch-Site, says so; a request with neither (curl) is judged by its CSRF token alone."""
    origin = request.headers.get("Origin")
    if origin is not None:
        mine = urlsplit(request.host_url)
        theirs = urlsplit(origin)
        return (theirs.scheme, theirs.netloc) == (mine.scheme, mine.netloc)
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


@bp.before_request
def _signed_in():
    """Refuse a form from elsewhere; send a caller without a live session to the sign-in page."""
    if request.method == "POST" and not (same_origin() and csrf_field_ok()):
        log.warning("ui: refused a form without a valid CSRF token or from another origin (%s)", request.path[:200])
        abort(403)
    if request.endpoint in OPEN:
        return None
    if not _gateway().auth.enabled:
        return page("nomaster.html", status=503)
    token = request.cookies.get(sessions.COOKIE)
    found = _sessions().find(token) if token else None
    caller = _caller(*found) if found is not None else None
    if caller is None:
        return redirect(url_for("ui.login"))
    g.ui_caller, g.ui_csrf = caller, sessions.csrf_for(token)
    g.ui_name = _name(caller)
    return None


def _caller(kind, key_hash):
    """The Caller of a session: the admin, or the key's current rules (None when the key is gone,
    blocked, expired or out of budget: its sessions end with it)."""
    if kind == "admin":
        return MASTER
    rules = _gateway().auth.keys.lookup_digest(key_hash) if key_hash else None
    if rules is None:
        return None
    try:
        check_rules(rules)
    except errors.GatewayError:
        return None
    return Caller("key", rules)


def _name(caller):
    if caller.kind == "master":
        return "Admin"
    rules = caller.rules
    who = getattr(rules, "user_id", None) or getattr(rules, "key_alias", None) or "key"
    return f"{who} ({ROLE_NAMES.get(caller.role, 'no role')})"


@bp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"  # pages hold spend, and once a new key
    return response


def _cookie(response, name, value, max_age):
    response.set_cookie(name, value, max_age=max_age, path="/ui", httponly=True, samesite="Strict",
                        secure=request.is_secure)


@bp.errorhandler(errors.GatewayError)
def _gateway_error(exc):
    """A page that could not be made (the database is down, ...): said on a page, never a traceback."""
    return page("error.html", status=exc.status, message=exc.message)


@bp.errorhandler(403)
def _forbidden(_exc):
    return page("error.html", status=403, message="This form did not come from this gateway's pages, or its "
                "session has changed. Reload the page and try again.")


# ---- sign-in, sign-out -------------------------------------------------------------------------------

@bp.get("/")
def home():
    return redirect(url_for("ui.keys"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with the master key, UI_USERNAME / UI_PASSWORD, or a user's virtual key."""
    if not _gateway().auth.enabled:
        return page("nomaster.html", status=503)
    message, status = None, 200
    state, failures = _gateway().router.state, f"ui-sign-in-failed:{request.remote_addr}"
    if request.method == "POST" and state.window(failures) >= SIGN_IN_FAILURES:
        message, status = "Too many failed sign-ins from this address; try again in a minute.", 429
    elif request.method == "POST":
        kind, key_hash, message = _identify(request.form)
        if message is not None:
            state.record(failures, 1)  # shared by the instance's workers (and instances, with Redis)
        else:
            response = redirect(url_for("ui.keys"))
            _cookie(response, sessions.COOKIE, _sessions().start(kind, key_hash),
                    _gateway().settings.general.ui_session_seconds)
            response.delete_cookie(sessions.LOGIN_COOKIE, path="/ui")
            return response
        status = 401
    form_token = sessions.new_token()
    text, code = render_template("login.html", message=message, csrf=sessions.csrf_for(form_token),
                                 password_sign_in=sessions.password_sign_in_set()), status
    response = current_app.make_response((text, code))
    _cookie(response, sessions.LOGIN_COOKIE, form_token, 3600)
    return response


def _identify(form):
    """(kind, key hash, None) of a good sign-in, or (None, None, the message saying why not)."""
    auth = _gateway().auth
    key = (form.get("key") or "").strip()
    if key:
        try:
            caller = auth.authorize("keys.info", {"Authorization": f"Bearer {key}"})
        except errors.GatewayError as exc:
            return None, None, exc.message
        if caller.kind == "master":
            return "admin", None, None
        if caller.role is None:
            return None, None, ("This key belongs to no user, so it has no role in the admin UI; sign in with "
                                "the master key or a user's key.")
        return "key", caller.rules.hash, None
    if sessions.password_sign_in(form.get("username"), form.get("password")):
        return "admin", None, None
    return None, None, "Wrong username or password."


@bp.post("/logout")
def logout():
    """Sign out: the session ends on the server, so its cookie is refused from now on."""
    _sessions().end(request.cookies.get(sessions.COOKIE))
    response = redirect(url_for("ui.login"))
    response.delete_cookie(sessions.COOKIE, path="/ui")
    return response


# ---- helpers for the pages ----------------------------------------------------------------------------

def when(value):
    """An ISO time from the API as 'YYYY-MM-DD HH:MM:SS' UTC (text unchanged if it is not one)."""
    from datetime import datetime
    if not isinstance(value, str):
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def money(value):
    """USD with enough digits for a call's cost."""
    if not isinstance(value, (int, float)):
        return ""
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.6f}".rstrip("0").rstrip(".") if value else "$0"


def epoch(value):
    """Epoch seconds as 'YYYY-MM-DD HH:MM:SS' UTC."""
    from datetime import datetime
    if not isinstance(value, (int, float)):
        return ""
    return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


bp.add_app_template_filter(when, "when")
bp.add_app_template_filter(epoch, "epoch")
bp.add_app_template_filter(money, "money")
