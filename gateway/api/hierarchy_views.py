"""What the views of users, teams, organizations and customers share: the service and the body."""

from flask import current_app

from gateway.api.body import parse_body
from gateway.api.pipeline import read_body


def hierarchy():
    """The worker's gateway.access.hierarchy.Hierarchy (over the key store; 503 while it is down)."""
    return current_app.extensions["gateway"].auth.keys.hierarchy()


def body():
    """The request's JSON body (size-capped, parsed as every body is)."""
    return parse_body(read_body(current_app.extensions["gateway"].settings.max_body_bytes))
