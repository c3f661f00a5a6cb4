"""LiteLLM's model info routes (/model/info, /model_group/info) and /routes: what each deployment
and group is, with no secret in it, for the groups the caller may use; every route the app serves."""

from flask import Blueprint
from flask import current_app
from flask import g
from flask import request

from gateway import errors
from gateway.api.models import visible_groups
from gateway.api.pipeline import json_response
from gateway.routing import modelinfo

bp = Blueprint("model_info", __name__)
HIDDEN_METHODS = frozenset({"HEAD", "OPTIONS"})


def _visible(router):
    """The caller's groups in config order, as (name, Group or None, wildcard configs)."""
    patterns = {pattern.name: configs for pattern, configs in router.patterns}
    return [(name, router.groups.get(name), patterns.get(name, ()))
            for name in visible_groups(router, g.get("caller"))]


def _not_found(what, value, param):
    """The 404 for an unknown id or group: the same for one the caller may not see (no probing)."""
    return errors.NotFoundError(f"No {what} `{value[:200]}` on this gateway.", param=param,
                                code="model_not_found")


@bp.get("/model/info")
@bp.get("/v1/model/info")
@bp.get("/v2/model/info")
def model_info():
    """Every deployment the caller may use (or the one `litellm_model_id` names), LiteLLM's shape."""
    router = current_app.extensions["gateway"].router
    wanted = request.args.get("litellm_model_id")
    data = []
    for _name, group, configs in _visible(router):
        found = ([modelinfo.deployment_info(d) for d in group.deployments] if group is not None
                 else [modelinfo.pattern_info(c) for c in configs])
        data.extend(e for e in found if wanted is None or e["model_info"]["id"] == wanted)
    if wanted is not None and not data:
        raise _not_found("model with id", wanted, "litellm_model_id")
    return json_response({"data": data})


@bp.get("/model_group/info")
@bp.get("/v1/model_group/info")
def model_group_info():
    """Every group the caller may use (or the one `model_group` names): providers, limits, prices."""
    router = current_app.extensions["gateway"].router
    wanted = request.args.get("model_group")
    data = [modelinfo.group_info(group) if group is not None else modelinfo.pattern_group_info(name, configs)
            for name, group, configs in _visible(router) if wanted is None or name == wanted]
    if wanted is not None and not data:
        raise _not_found("model group", wanted, "model_group")
    return json_response({"data": data})


@bp.get("/routes")
def routes():
    """Every route the app serves, with its methods and endpoint (proxy admins only)."""
    found = [{"path": rule.rule, "methods": sorted(rule.methods - HIDDEN_METHODS), "name": rule.endpoint}
             for rule in current_app.url_map.iter_rules() if rule.endpoint != "static"]
    return json_response({"routes": sorted(found, key=lambda r: (r["path"], r["name"]))})
