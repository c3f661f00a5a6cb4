"""Organizations: /organization/new, info, update, delete, list, member_add (LiteLLM's shapes and
methods: update is PATCH, delete is DELETE; POST is accepted for both)."""

from flask import Blueprint
from flask import request

from gateway.api.hierarchy_views import body
from gateway.api.hierarchy_views import hierarchy
from gateway.api.pipeline import json_response
from gateway.access.levels import id_list

bp = Blueprint("organizations", __name__)


@bp.post("/organization/new")
def new():
    """An organization, to own teams."""
    return json_response(hierarchy().new_organization(body()))


@bp.get("/organization/info")
def info():
    """An organization, its teams and members."""
    return json_response(hierarchy().organization_info(request.args.get("organization_id")))


@bp.route("/organization/update", methods=["PATCH", "POST"])
def update():
    """Change an organization's fields."""
    return json_response(hierarchy().update_organization(body()))


@bp.route("/organization/delete", methods=["DELETE", "POST"])
def delete():
    """Delete organizations that own no team ({"organization_ids": [...]})."""
    return json_response(hierarchy().delete_organizations(id_list(body(), "organization_ids")))


@bp.get("/organization/list")
def list_organizations():
    """Every organization."""
    return json_response(hierarchy().list_organizations())


@bp.post("/organization/member_add")
def member_add():
    """Users join the organization ({"organization_id", "member": {...} or [...]})."""
    return json_response(hierarchy().organization_member_add(body()))
