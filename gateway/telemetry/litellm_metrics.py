"""LiteLLM's Prometheus metric names on /metrics, rendered at scrape time from our own series.

On when `litellm_settings` names the `prometheus` callback (success_callback, failure_callback or
callbacks), so Grafana dashboards built on LiteLLM's proxy keep working. Nothing is counted twice:
a call adds to our series only (gateway/telemetry/metrics.py); a scrape regroups them under
LiteLLM's names and label names, and reads the deployments' state (cooldowns, rpm/tpm windows) as
the `gateway_deployments_cooling_down` gauge does.

Label values our series do not carry are empty: keys, their hashes and aliases, teams, users and
end users never label a series here (cardinality, and a key's alias is the caller's text).
`model` / `litellm_model_name` is the deployment's `litellm_params.model`, `requested_model` /
`model_group` the model group, `model_id` the deployment id, `api_base` the address as shown
anywhere else (never its credentials).
"""

import logging

from gateway.telemetry.metrics import COMPLETION_TOKENS
from gateway.telemetry.metrics import FIRST_TOKEN
from gateway.telemetry.metrics import FIRST_TOKEN_BUCKETS
from gateway.telemetry.metrics import LATENCY
from gateway.telemetry.metrics import LATENCY_BUCKETS
from gateway.telemetry.metrics import Metric
from gateway.telemetry.metrics import PROMPT_TOKENS
from gateway.telemetry.metrics import REQUESTS
from gateway.telemetry.metrics import SPEND
from gateway.telemetry.metrics import UPSTREAM_ERRORS

log = logging.getLogger("gateway.telemetry.litellm_metrics")

_WHO = ("end_user", "hashed_api_key", "api_key_alias", "team", "team_alias", "user")
_USAGE = _WHO[:3] + ("requested_model",) + _WHO[3:] + ("model",)
_DEPLOYMENT = ("litellm_model_name", "model_id", "api_base", "api_provider")
_PER_DEPLOYMENT = ("requested_model",) + _DEPLOYMENT + ("hashed_api_key", "api_key_alias", "team", "team_alias")
_LIMITS = ("model_group", "api_provider", "api_base", "litellm_model_name", "hashed_api_key", "api_key_alias")


def _family(name, kind, help_text, labels, buckets=()):
    return Metric(name, kind, help_text, labels, buckets)


REQUESTS_METRIC = _family("litellm_requests_metric", "counter", "Calls answered (gateway_requests_total).",
                          _WHO[:3] + ("model",) + _WHO[3:])
SPEND_METRIC = _family("litellm_spend_metric", "counter", "Spend in USD (gateway_spend_usd_total).",
                       _WHO[:3] + ("model",) + _WHO[3:])
TOKENS = tuple(_family(name, "counter", f"{what} tokens ({ours}).", _USAGE) for name, what, ours in (
    ("litellm_total_tokens", "Input + output", "gateway_prompt_tokens_total + gateway_completion_tokens_total"),
    ("litellm_input_tokens", "Input", "gateway_prompt_tokens_total"),
    ("litellm_output_tokens", "Output", "gateway_completion_tokens_total"),
    ("litellm_total_tokens_metric", "Input + output",
     "gateway_prompt_tokens_total + gateway_completion_tokens_total"),
    ("litellm_input_tokens_metric", "Input", "gateway_prompt_tokens_total"),
    ("litellm_output_tokens_metric", "Output", "gateway_completion_tokens_total"),
))
TOTAL_LATENCY = _family("litellm_request_total_latency_metric", "histogram",
                        "Seconds from the request to the end of its response (gateway_request_duration_seconds).",
                        _USAGE, LATENCY_BUCKETS)
API_LATENCY = _family("litellm_llm_api_latency_metric", "histogram",
                      "The same series as litellm_request_total_latency_metric: the gateway keeps no separate "
                      "upstream-only latency.", ("model", "hashed_api_key", "api_key_alias", "team", "team_alias",
                                                 "requested_model", "end_user", "user"), LATENCY_BUCKETS)
FIRST_TOKEN_METRIC = _family("litellm_llm_api_time_to_first_token_metric", "histogram",
                             "Streams: seconds to the first chunk (gateway_time_to_first_token_seconds).",
                             ("model", "hashed_api_key", "api_key_alias", "team", "team_alias"),
                             FIRST_TOKEN_BUCKETS)
DEPLOYMENT_SUCCESS = _family("litellm_deployment_success_responses", "counter",
                             "Successful calls per deployment.", _PER_DEPLOYMENT)
DEPLOYMENT_FAILURE = _family("litellm_deployment_failure_responses", "counter",
                             "Failed upstream attempts per deployment (gateway_upstream_errors_total).",
                             _PER_DEPLOYMENT + ("exception_status", "exception_class"))
DEPLOYMENT_TOTAL = _family("litellm_deployment_total_requests", "counter",
                           "Successful calls plus failed attempts per deployment.", _PER_DEPLOYMENT)
PROXY_TOTAL = _family("litellm_proxy_total_requests_metric", "counter",
                      "Calls answered by the gateway, by HTTP status code.",
                      _WHO[:3] + ("requested_model",) + _WHO[3:] + ("status_code",))
PROXY_FAILED = _family("litellm_proxy_failed_requests_metric", "counter",
                       "Calls whose client did not get a success (exception_class: the call's status).",
                       _WHO[:3] + ("requested_model",) + _WHO[3:] + ("exception_status", "exception_class"))
DEPLOYMENT_STATE = _family("litellm_deployment_state", "gauge",
                           "0 = healthy, 2 = cooling down (complete outage), at scrape time.", _DEPLOYMENT)
REMAINING_REQUESTS = _family("litellm_remaining_requests_metric", "gauge",
                             "Calls the deployment's rpm limit still takes this minute (deployments with rpm).",
                             _LIMITS)
REMAINING_TOKENS = _family("litellm_remaining_tokens_metric", "gauge",
                           "Tokens the deployment's tpm limit still takes this minute (deployments with tpm).",
                           _LIMITS)
FAMILIES = (REQUESTS_METRIC, SPEND_METRIC) + TOKENS + (
    TOTAL_LATENCY, API_LATENCY, FIRST_TOKEN_METRIC, DEPLOYMENT_SUCCESS, DEPLOYMENT_FAILURE, DEPLOYMENT_TOTAL,
    PROXY_TOTAL, PROXY_FAILED, DEPLOYMENT_STATE, REMAINING_REQUESTS, REMAINING_TOKENS)


def _labels(metric, values):
    """A label tuple in the family's order: the given values, every other label empty."""
    return tuple(values.get(name, "") for name in metric.labels)


class _Sums:
    """{family name: {label tuple: values}} added up element by element."""

    def __init__(self):
        self.out = {}

    def add(self, metric, values, numbers):
        rows = self.out.setdefault(metric.name, {})
        key = _labels(metric, values)
        found = rows.get(key)
        rows[key] = list(numbers) if found is None else [a + b for a, b in zip(found, numbers)]

    def series(self):
        return {name: list(rows.items()) for name, rows in self.out.items()}


class LiteLLMNames:
    """Renders LiteLLM's families from a scrape's series (Metrics.extra)."""

    metrics = FAMILIES

    def __init__(self, router):
        self.router = router

    def _deployments(self):
        """{deployment id: (litellm_model_name, api_base, api_provider)} of the configured deployments."""
        return {d.id: (d.provider.config.model, d.provider.api_base or "", d.provider.name)
                for d in self.router.deployments()}

    def __call__(self, series):
        """{family name: [(label values, values)]} of LiteLLM's families."""
        known = self._deployments()
        sums = _Sums()

        def where(labels):
            group, deployment, provider = labels[:3]
            model, base, provider_name = known.get(deployment, ("", "", provider))
            return {"requested_model": group, "model_group": group, "model": model, "litellm_model_name": model,
                    "model_id": deployment, "api_base": base, "api_provider": provider_name or provider}

        for labels, values in series.get(REQUESTS.name, ()):
            at = where(labels)
            status, code = labels[4], labels[5]
            sums.add(REQUESTS_METRIC, at, values)
            sums.add(PROXY_TOTAL, {**at, "status_code": code}, values)
            if status != "success":
                sums.add(PROXY_FAILED, {**at, "exception_status": code, "exception_class": status}, values)
            elif labels[1]:
                sums.add(DEPLOYMENT_SUCCESS, at, values)
                sums.add(DEPLOYMENT_TOTAL, at, values)
        for labels, values in series.get(UPSTREAM_ERRORS.name, ()):
            at = where(labels)
            sums.add(DEPLOYMENT_FAILURE, {**at, "exception_class": labels[3]}, values)
            sums.add(DEPLOYMENT_TOTAL, at, values)
        for ours, families in ((PROMPT_TOKENS, (TOKENS[0], TOKENS[1], TOKENS[3], TOKENS[4])),
                               (COMPLETION_TOKENS, (TOKENS[0], TOKENS[2], TOKENS[3], TOKENS[5])),
                               (SPEND, (SPEND_METRIC,)),
                               (LATENCY, (TOTAL_LATENCY, API_LATENCY)),
                               (FIRST_TOKEN, (FIRST_TOKEN_METRIC,))):
            for labels, values in series.get(ours.name, ()):
                at = where(labels)
                for family in families:
                    sums.add(family, at, values)
        self._scrape_time(sums)
        return sums.series()

    def _scrape_time(self, sums):
        """Deployment state and the rpm/tpm room left, read now from the router's state."""
        for name, group in self.router.groups.items():
            try:
                cooling = group.cooling()
                for d in group.deployments:
                    at = {"litellm_model_name": d.provider.config.model, "model_id": d.id, "model_group": name,
                          "api_base": d.provider.api_base or "", "api_provider": d.provider.name}
                    sums.add(DEPLOYMENT_STATE, at, [2.0 if d.id in cooling else 0.0])
                    if d.rpm is not None:
                        used = group.state.window(f"rpm:{d.id}")
                        sums.add(REMAINING_REQUESTS, at, [max(0.0, float(d.rpm) - used)])
                    if d.tpm is not None:
                        used = group.state.window(f"tpm:{d.id}")
                        sums.add(REMAINING_TOKENS, at, [max(0.0, float(d.tpm) - used)])
            except Exception as exc:  # noqa: BLE001  (state unreachable: leave the group's series out)
                log.warning("could not read the state of %s: %s", name, type(exc).__name__)
