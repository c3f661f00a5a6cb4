"""The Keys page: list with filters, create (the new key shown once), edit, block and unblock,
regenerate (shown once), delete. Each action is the matching /key/... route, called as the
signed-in caller (web.api): a team admin manages its team's keys, a viewer changes nothing."""

import json

from flask import redirect
from flask import request
from flask import url_for

from gateway.ui.web import api
from gateway.ui.web import bp
from gateway.ui.web import changed
from gateway.ui.web import page

TEXT_FIELDS = ("key_alias", "user_id", "team_id", "budget_duration")
NUMBER_FIELDS = {"max_budget": float, "tpm_limit": int, "rpm_limit": int, "max_parallel_requests": int}
JSON_FIELDS = {"metadata": '{"project": "search"}', "aliases": '{"gpt-4": "gpt-4o"}',
               "config": '{"num_retries": 2}'}
FILTERS = ("q", "team_id", "user_id", "state")
ACTIONS = {"block": "/key/block", "unblock": "/key/unblock"}


def key_body(form, creating):
    """A /key/generate or /key/update body from the form, or (None, message naming the field)."""
    body = {}
    for name in TEXT_FIELDS:
        value = (form.get(name) or "").strip()
        if value:
            body[name] = value
        elif not creating and name in form:
            body[name] = None
    for name, kind in NUMBER_FIELDS.items():
        value = (form.get(name) or "").strip()
        if not value:
            if not creating and name in form:
                body[name] = None
            continue
        try:
            body[name] = kind(value)
        except ValueError:
            return None, f"{name} must be a {'whole ' if kind is int else ''}number."
    models = [m.strip() for m in (form.get("models") or "").split(",") if m.strip()]
    if models or (not creating and "models" in form):
        body["models"] = models
    duration = (form.get("duration") or "").strip()
    if creating and duration:
        body["duration"] = None if duration == "never" else duration
    for name in JSON_FIELDS:
        text = (form.get(name) or "").strip()
        if text:
            try:
                body[name] = json.loads(text)
            except ValueError:
                return None, f"{name} must be a JSON object, like {JSON_FIELDS[name]}."
        elif not creating and name in form:
            body[name] = {}
    return body, None


def form_of(info):
    """A key's facts as the edit form shows them (metadata, aliases, config as JSON text, escaped by
    the template)."""
    return {**info, **{name: json.dumps(info[name]) if info.get(name) else "" for name in JSON_FIELDS}}


def _matches(info, filters):
    q = filters.get("q", "").lower()
    if q and not any(q in str(info.get(name) or "").lower() for name in ("key_alias", "key_name", "token")):
        return False
    for name in ("team_id", "user_id"):
        if filters.get(name) and info.get(name) != filters[name]:
            return False
    state = filters.get("state")
    return not state or (state == "blocked") == bool(info.get("blocked"))


def _list_page(status=200, message=None, created=None, form=None):
    answer = api("GET", "/key/list")
    filters = {name: (request.args.get(name) or "").strip()[:255] for name in FILTERS}
    keys = [info for info in answer.body["keys"] if _matches(info, filters)] if answer.ok else []
    return page("keys.html", status=status, keys=keys, filters=filters, message=message or answer.error,
                created=created, form=form or {})


@bp.get("/keys")
def keys():
    return _list_page()


@bp.post("/keys")
def create_key():
    body, message = key_body(request.form, creating=True)
    if message is not None:
        return _list_page(400, message, form=request.form)
    answer = api("POST", "/key/generate", body=body)
    if not answer.ok:
        return _list_page(answer.status, answer.error, form=request.form)
    # Shown once, on this answer (no-store): the list holds only the key's hint from now on.
    return _list_page(created={"key": answer.body["key"], "alias": answer.body.get("key_alias"),
                               "what": "created"})


@bp.get("/keys/<token>")
def key_page(token):
    answer = api("GET", "/key/info", query={"key": token})
    if not answer.ok:
        return page("error.html", status=answer.status, message=answer.error)
    return page("key.html", info=answer.body["info"], form=form_of(answer.body["info"]))


@bp.post("/keys/<token>")
def update_key(token):
    """/key/update with the fields the form changed (it shows them all: an owner who may not raise a
    limit can still rename its key)."""
    info = api("GET", "/key/info", query={"key": token})
    if not info.ok:
        return page("error.html", status=info.status, message=info.error)
    current = info.body["info"]
    body, message = key_body(request.form, creating=False)
    answer = None
    if message is None:
        answer = api("POST", "/key/update", body={**changed(body, current), "key": token})
        if answer.ok:
            return redirect(url_for("ui.key_page", token=token))
    return page("key.html", status=answer.status if answer is not None else 400, info=current,
                form=request.form, message=message or answer.error)


@bp.post("/keys/<token>/<action>")
def key_action(token, action):
    """block, unblock, regenerate (the new key shown once) or delete."""
    if action in ACTIONS:
        answer = api("POST", ACTIONS[action], body={"key": token})
    elif action == "delete":
        answer = api("POST", "/key/delete", body={"keys": [token]})
    elif action == "regenerate":
        answer = api("POST", "/key/regenerate", body={"key": token})
        if answer.ok:
            return _list_page(created={"key": answer.body["key"], "alias": answer.body.get("key_alias"),
                                       "what": "regenerated"})
    else:
        return page("error.html", status=404, message="No such action.")
    if not answer.ok:
        return _list_page(answer.status, answer.error)
    return redirect(url_for("ui.keys", **{k: v for k, v in request.args.items() if k in FILTERS}))
