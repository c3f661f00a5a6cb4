"""LiteLLM's `success_callback` / `failure_callback` / `callbacks`, from a fixed list of sinks.

Names come from a fixed list only, never an import path: gateway/config/callbacks.py checks them and
each sink's settings at load (a bad entry stops the gateway with exit 2) into `settings.litellm.callbacks`.
Each call's record is turned into bytes by the observer (in the request, after its response) and put
on the bounded queue of each sink it goes to (gateway/sinks.py: one sender per sink and worker,
batches, retries, flush at exit), so a slow, hanging or failing sink costs a request nothing.
Payloads carry the key's alias, never a key or its hash; known secrets are scrubbed besides.
"""

import logging
import os
import time

from gateway.infra.redact import scrubber
from gateway.telemetry.events import iso
from gateway.telemetry.sinks import EXIT_FLUSH_SECONDS
from gateway.telemetry.sinks import SINKS
from gateway.telemetry.sinks import Delivery
from gateway.telemetry.sinks import dumps

log = logging.getLogger("gateway.telemetry.callbacks")

FAILED = frozenset({"error", "client_disconnected"})
# Body keys that name an upstream or carry credentials: never part of a payload.
_SECRET_BODY_KEYS = frozenset({"api_key", "api_base", "base_url", "api_version", "azure_ad_token",
                               "organization", "headers", "extra_headers", "vertex_credentials",
                               "litellm_logging_obj", "proxy_server_request", "user_api_key"})
_TEXT_BODY_KEYS = ("messages", "prompt", "input", "suffix")


# -- what a sink receives ----------------------------------------------------------------------------

def _clean_body(body, text):
    """The client's body without anything naming an upstream or a credential (and without the
    message text unless it is logged)."""
    from gateway.providers.base import AddedUsageOption
    out = {}
    for key, value in (body or {}).items():
        if key in _SECRET_BODY_KEYS or key.startswith("aws_") or (not text and key in _TEXT_BODY_KEYS):
            continue
        if isinstance(value, AddedUsageOption):  # the gateway's own addition, not the client's
            continue
        out[key] = value
    return out


def call_event(record, text):
    """The call as the webhook and jsonl sinks send it: the CallRecord's facts, the key's alias
    (never the key or its hash), the request and, when `text`, the answer's text."""
    request = _clean_body(record.request, text)
    metadata = request.get("metadata")
    return {
        "request_id": record.request_id, "call_type": record.endpoint, "status": record.status,
        "stream": record.stream, "start_time": iso(record.started), "end_time": iso(record.ended),
        "latency_seconds": round(record.latency, 6), "first_token_seconds": record.first_token_seconds,
        "completion_start_time": (iso(record.started + record.first_token_seconds)
                                  if record.first_token_seconds is not None else None),
        "model_group": record.model_group, "deployment_id": record.deployment_id, "provider": record.provider,
        "model": record.model, "api_base": record.api_base, "key_alias": record.key_alias,
        "user_id": record.user_id, "team_id": record.team_id, "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "total_tokens": record.prompt_tokens + record.completion_tokens, "cost": record.cost,
        "estimated": record.estimated, "cache_hit": record.cache_hit, "retries": record.retries,
        "fallbacks": record.fallbacks, "http_status": record.http_status, "error_type": record.error_type,
        "error_message": record.error_message,
        "attempts": [{"deployment_id": a.get("deployment_id"), "provider": a.get("provider"),
                      "model": a.get("model"), "api_base": a.get("api_base"),
                      "start_time": iso(a.get("started")), "end_time": iso(a.get("ended")),
                      "error": a.get("error")} for a in record.attempts],
        "metadata": metadata if isinstance(metadata, dict) else None,
        "request": request,
        "response_text": record.response_text if text else None,
    }


# -- wiring ------------------------------------------------------------------------------------------

class Callbacks:
    """The configured sinks of one worker and the observer that feeds them."""

    def __init__(self, config, secrets=()):
        self.config = config
        scrub = scrubber(secrets)
        self.deliveries = [Delivery(SINKS[spec.name](spec), spec, scrub)
                           for spec in config.sinks if spec.name in SINKS]

    @property
    def wants_text(self):
        """Whether a sink logs message text (the answer's text must then be kept)."""
        return any(d.spec.message_logging for d in self.deliveries)

    def observe(self, record):
        """The call observer: serialize the call once (per text variant) and queue the bytes for every
        sink it goes to; each sink builds its own payload in its sender."""
        failed = record.status in FAILED
        encoded = {}
        for delivery in self.deliveries:
            spec = delivery.spec
            if not (spec.on_failure if failed else spec.on_success):
                continue
            text = spec.message_logging
            if text not in encoded:
                encoded[text] = dumps(call_event(record, text))
            delivery.put(encoded[text])

    def wait_idle(self, timeout=10.0):
        """Wait until every sink has sent what it has (tests)."""
        deadline = time.monotonic() + timeout
        return all(d.wait_idle(max(0.0, deadline - time.monotonic())) for d in self.deliveries)

    def close(self, seconds=EXIT_FLUSH_SECONDS):
        """Stop every sender after delivering what is left (tests; workers use flush_all at exit)."""
        deadline = time.monotonic() + seconds
        for delivery in self.deliveries:
            if delivery._pid == os.getpid():
                delivery.flush(deadline)


def install(app, gateway):
    """Wire the configured callbacks into one worker's app; returns the Callbacks (None without any)."""
    config = gateway.settings.litellm.callbacks  # checked at load
    if not config.sinks:
        return None
    secrets = [gateway.settings.master_key]
    secrets.extend(gateway.router.secrets())
    callbacks = Callbacks(config, secrets)
    if callbacks.deliveries:
        gateway.observers.add(callbacks.observe, wants_text=callbacks.wants_text)
    app.extensions["gateway_callbacks"] = callbacks
    if config.named("otel"):
        try:
            from gateway.telemetry import otel
        except ImportError as exc:
            if exc.name != "gateway.telemetry.otel":
                raise
            log.warning("the otel callback needs gateway/telemetry/otel.py, which this build does not have; ignored")
        else:
            otel.install(app, gateway)
    return callbacks
