"""Liveliness and readiness probes: answered without calling any upstream."""

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
    """The app is configured and can take calls."""
    gateway = current_app.extensions["gateway"]
    names = gateway.router.names
    keys = gateway.auth.keys
    return json_response({"status": "healthy" if names else "no models configured",
                          "models": len(names), "db": keys.describe() if keys is not None else "not configured",
                          "cache": gateway.cache.backend.name if gateway.cache is not None else None,
                          "router_state": gateway.router.state.status(),
                          "version": __version__,
                          # LiteLLM's name for it: health checks written for LiteLLM read this one.
                          "litellm_version": __version__}, status=200 if names else 503)


@bp.get("/health")
def health():
    """Call every deployment with a minimal request (LiteLLM's /health); needs the master key."""
    router = current_app.extensions["gateway"].router
    return json_response(healthcheck.check_all(router))
