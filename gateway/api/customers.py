"""End users (customers: the `user` field of a call): /customer/* and LiteLLM's /end_user/* aliases."""

from flask import Blueprint
from flask import request

from gateway.api.hierarchy_views import body
from gateway.api.hierarchy_views import hierarchy
from gateway.api.pipeline import json_response
from gateway.access.levels import id_list

bp = Blueprint("customers", __name__)


def _route(name, method):
    """Register a view under /customer/<name> and /end_user/<name> (one endpoint, one policy)."""
    def register(view):
        for prefix in ("/customer/", "/end_user/"):
            bp.add_url_rule(prefix + name, view.__name__, view, methods=[method])
        return view
    return register


@_route("new", "POST")
def new():
    """An end user with its budget, limits and block."""
    return json_response(hierarchy().new_customer(body()))


@_route("info", "GET")
def info():
    """One end user (?end_user_id=)."""
    return json_response(hierarchy().customer_info(request.args.get("end_user_id")))


@_route("update", "POST")
def update():
    """Change an end user's fields."""
    return json_response(hierarchy().update_customer(body()))


@_route("delete", "POST")
def delete():
    """Delete end users ({"user_ids": [...]})."""
    return json_response(hierarchy().delete_customers(id_list(body(), "user_ids")))


@_route("list", "GET")
def list_customers():
    """Every end user."""
    return json_response(hierarchy().list_customers())


@_route("block", "POST")
def block():
    """Refuse calls whose `user` is one of these ({"user_ids": [...]})."""
    return json_response(hierarchy().set_customers_blocked(id_list(body(), "user_ids"), True))


@_route("unblock", "POST")
def unblock():
    """Accept these end users' calls again."""
    return json_response(hierarchy().set_customers_blocked(id_list(body(), "user_ids"), False))
