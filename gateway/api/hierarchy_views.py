"""What the views of keys, users, teams, organizations and customers share: the service, the body, and
the caller's scope on the route (gateway/access/policy.py)."""

from flask import current_app
from flask import g
from flask import request

from gateway.api.body import parse_body
from gateway.api.pipeline import read_body


def hierarchy():
    """The worker's gateway.access.hierarchy.Hierarchy (over the key store; 503 while it is down)."""
    return current_app.extensions["gateway"].auth.keys.hierarchy()


def body():
    """The request's JSON body (size-capped, parsed as every body is)."""
    return parse_body(read_body(current_app.extensions["gateway"].settings.max_body_bytes))


def scope():
    """What the caller may touch on this route: everything for a proxy admin (no query), else its
    scope from gateway.access.policy (its memberships read once per request, on management routes)."""
    if "scope" not in g:
        from gateway.access import policy
        caller = g.caller
        g.scope = policy.ALL if caller.role == "proxy_admin" else \
            policy.scope(request.endpoint, caller, current_app.extensions["gateway"].auth.keys.get().db)
    return g.scope
