"""Liveliness and readiness probes: answered without calling any upstream; /health (every
deployment called), /health/deployments (what the router knows of each: cooldowns) and
/config/view (the running configuration, secrets masked) for admins."""

from flask import Blueprint
from flask import current_app

from gateway import __version__
from gateway.routing import health as healthcheck
from gateway.api.pipeline import json_response

bp = Blueprint("health", __name__)


@bp.get("/health/liveliness")
@bp.get("/health/liveness")
def liveliness():
    """The process is up."""
    return json_response("I'm alive!")


@bp.get("/health/readiness")
def readiness():
    """The app is configured and can take calls. `router_state` says whether the router's Redis
    answers (and, when not, what rate limits do meanwhile); `redis_outage_limits` is the mode in force
    (None without Redis)."""
    gateway = current_app.extensions["gateway"]
    names = gateway.router.names
    keys = gateway.auth.keys
    state = gateway.router.state
    return json_response({"status": "healthy" if names else "no models configured",
                          "models": len(names), "db": keys.describe() if keys is not None else "not configured",
                          "cache": gateway.cache.backend.name if gateway.cache is not None else None,
                          "router_state": state.status(),
                          "redis_outage_limits": getattr(state, "outage_limits", None),
                          # This worker's view of the cluster-wide jobs' lease (no database call).
                          "background_jobs": gateway.jobs.describe() if gateway.jobs is not None else None,
                          "version": __version__,
                          # LiteLLM's name for it: health checks written for LiteLLM read this one.
                          "litellm_version": __version__}, status=200 if names else 503)


@bp.get("/health")
def health():
    """Call every deployment with a minimal request (LiteLLM's /health); needs the master key."""
    router = current_app.extensions["gateway"].router
    return json_response(healthcheck.check_all(router))


@bp.get("/health/deployments")
def deployments():
    """Each deployment as the router sees it now, without calling it: its group, model, address
    (never a key), whether it comes from the database, until when it cools down (epoch seconds), and
    its last health check (/health, the admin UI's, or the background checks)."""
    router = current_app.extensions["gateway"].router
    cooling = {}
    for group in router.groups.values():
        cooling.update(group.cooling())
    deployments = router.deployments()
    checked = healthcheck.last_checks(router, deployments)
    return json_response({"deployments": [
        {"model_name": d.provider.config.model_name, "model": d.provider.config.model, "model_id": d.id,
         "api_base": d.provider.api_base, "db_model": bool((d.provider.config.model_info or {}).get("db_model")),
         "cooldown_until": cooling.get(d.id), "last_check": checked.get(d.id)} for d in deployments]})


@bp.get("/config/view")
def config_view():
    """The running configuration's settings sections, every secret masked (a field named like a
    credential, anything shaped like a key, and the gateway's own secrets wherever they appear)."""
    from gateway.infra.redact import masked
    from gateway.infra.redact import sensitive_name
    settings = current_app.extensions["gateway"].settings
    secrets = [settings.master_key] + [v for d in settings.deployments for k, v in d.params.items()
                                       if isinstance(v, str) and sensitive_name(k)]
    return json_response({"source": masked(settings.source, secrets),
                          "general_settings": masked(settings.general_settings, secrets),
                          "router_settings": masked(settings.router_settings, secrets),
                          "litellm_settings": masked(settings.litellm_settings, secrets),
                          "models": len(settings.deployments)})
