"""The config's sections as frozen, typed dataclasses, each built once from its checked YAML mapping."""

import os
from dataclasses import dataclass
from dataclasses import field

from gateway.config import callbacks
from gateway.config.callbacks import CallbackConfig
from gateway.config.parse import as_bool
from gateway.config.parse import as_duration
from gateway.config.parse import DURATION_SHAPE
from gateway.config.parse import MAX_DURATION_SECONDS
from gateway.config.parse import duration_seconds
from gateway.config.parse import as_number
from gateway.config.parse import as_port
from gateway.config.parse import as_secret
from gateway.config.parse import as_seconds
from gateway.config.parse import as_text
from gateway.config.parse import fallback_map
from gateway.config.parse import name_list
from gateway.errors import ConfigError

BUDGET_MODES = ("soft", "strict")  # general_settings.budget_mode (unset: soft)
# router_settings.redis_outage_limits: what rate limits do while the router's Redis is unreachable.
REDIS_OUTAGE_LIMITS = ("local", "refuse")
DEFAULT_HEALTH_CHECK_INTERVAL = 300.0
DEFAULT_JOB_LEASE_SECONDS = 10.0  # general_settings.background_job_lease_seconds
DEFAULT_BUDGET_LEASE_SECONDS = 1.0  # general_settings.budget_lease_seconds (gateway/spend/leases.py)
DEFAULT_RETENTION_INTERVAL = "1d"  # LiteLLM's maximum_spend_logs_retention_interval default
DEFAULT_KEY_DURATION = "1h"
DEFAULT_SPOOL_DIR = "gateway-spool"
DEFAULT_DB_POOL_LIMIT = 10  # PostgreSQL connections one worker process may hold (LiteLLM's default too)
DEFAULT_DB_TIMEOUT = 5.0  # seconds a call waits for a pooled connection before its 503 (LiteLLM: 60)
# The names router_settings.routing_strategy takes (gateway/routing/balancer.py implements each).
ROUTING_STRATEGIES = ("simple-shuffle", "least-busy", "usage-based-routing", "usage-based-routing-v2",
                      "latency-based-routing")
# cache_params.supported_call_types: LiteLLM's call type names -> the endpoint each caches.
CALL_TYPES = {"completion": "chat", "acompletion": "chat", "text_completion": "completions",
              "atext_completion": "completions", "embedding": "embeddings", "aembedding": "embeddings",
              "anthropic_messages": "messages", "rerank": "rerank", "arerank": "rerank"}
# LiteLLM's other call type names: accepted in supported_call_types, never cached here (uploads, audio
# and images are not worth a copy in the cache; the Responses API keeps state of its own).
UNCACHED_CALL_TYPES = frozenset({"transcription", "atranscription", "speech", "aspeech", "image_generation",
                                 "aimage_generation", "moderation", "amoderation", "responses", "aresponses"})
DEFAULT_UI_SESSION_SECONDS = 24 * 3600  # LiteLLM's default UI session
MAX_UI_SESSION_SECONDS = 30 * 24 * 3600
CACHE_DEFAULT_TTL = 600.0
CACHE_LOCAL_MAX_MB = 32  # per worker
# Upper bound of `ttl` and `s-maxage`, per request and in cache_params: a year. Redis refuses an
# expiry past about 2^63 ms; the bound keeps every value a client can send far from that.
CACHE_MAX_SECONDS = 365 * 24 * 3600


@dataclass(frozen=True)
class GeneralSettings:
    """`general_settings` (master_key and max_request_size_mb are Settings.master_key / max_body_bytes)."""

    database_url: str | None = None  # else DATABASE_URL, else SQLite in the working directory
    database_connection_pool_limit: int = DEFAULT_DB_POOL_LIMIT  # per worker process (PostgreSQL)
    database_connection_timeout: float = DEFAULT_DB_TIMEOUT  # the wait for a pooled connection (PostgreSQL)
    default_key_duration: str = DEFAULT_KEY_DURATION  # for /key/generate without a duration
    disable_spend_logs: bool = False
    spend_spool_dir: str = DEFAULT_SPOOL_DIR
    budget_mode: str = "soft"
    budget_hold_seconds: float | None = None  # None: the router's timeout + 60 s
    budget_lease_seconds: float = DEFAULT_BUDGET_LEASE_SECONDS  # 0: every budgeted call holds in the database
    background_health_checks: bool = False
    health_check_interval: float = DEFAULT_HEALTH_CHECK_INTERVAL
    otel: bool = False
    metrics_public: bool = False  # opens /metrics only for a literal `true` (see general_section)
    allow_mock_response: bool = False  # any caller may send `mock_response` (else proxy admins only)
    store_model_in_db: bool = False  # /model/new and friends; models served from the database too
    ui_session_seconds: int = DEFAULT_UI_SESSION_SECONDS  # how long an admin UI sign-in lasts
    # Background jobs (gateway/storage/jobs.py): the lease one worker of the cluster holds to run them.
    job_lease_seconds: float = DEFAULT_JOB_LEASE_SECONDS
    spend_logs_retention: int | None = None  # seconds a spend row is kept; None: forever
    spend_logs_retention_interval: int = 86400  # seconds between retention runs


@dataclass(frozen=True)
class RouterSettings:
    """`router_settings`, with the keys LiteLLM also takes from `litellm_settings` filled from there."""

    routing_strategy: str = "simple-shuffle"
    num_retries: int = 0
    max_retries: int = 5
    max_fallbacks: int = 5
    allowed_fails: int = 3
    cooldown_time: float = 60.0
    max_request_timeout: float = 600.0
    timeout: float | None = None  # None (or 0): litellm_settings.request_timeout
    stream_timeout: float | None = None
    fallbacks: dict = field(default_factory=dict)  # {group: [fallback groups]}
    context_window_fallbacks: dict = field(default_factory=dict)
    default_fallbacks: tuple = ()
    redis_url: str | None = None  # Redis for shared state (else REDIS_* environment variables)
    redis_host: str | None = None
    redis_port: int | None = None
    redis_password: str | None = field(default=None, repr=False)
    local_state_path: str | None = None
    # While Redis is unreachable: `local` counts each limit per instance (up to N x the limit over N
    # instances), `refuse` answers a call that needs a shared limit with a 503.
    redis_outage_limits: str = "local"


@dataclass(frozen=True)
class CacheSettings:
    """`litellm_settings.cache_params` when `cache: true`."""

    type: str | None = None  # local, redis; None: redis when a host is set (REDIS_HOST too), else local
    ttl: float = CACHE_DEFAULT_TTL
    namespace: str | None = None
    call_types: frozenset = frozenset(CALL_TYPES.values())  # endpoints cached
    max_size_mb: float = CACHE_LOCAL_MAX_MB  # the local backend's size per worker
    shared: bool = False  # one entry for every key (else per key)
    url: str | None = None
    host: str | None = None
    port: int | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LitellmSettings:
    """`litellm_settings` beyond the Settings flags (drop_params, set_verbose, request_timeout, ...)."""

    json_logs: bool = False
    turn_off_message_logging: bool = False
    callback_names: tuple = ()  # the `callbacks` key as names ("otel" there turns tracing on)
    callbacks: CallbackConfig = field(default_factory=CallbackConfig)
    cache: CacheSettings | None = None  # None: caching is off


def _budget_mode(value):
    if value is None:
        return "soft"
    if value not in BUDGET_MODES:
        raise ConfigError(f"general_settings.budget_mode: must be `soft` or `strict` (got {str(value)[:40]!r}); "
                          "soft, the default, lets a key with budget left make one call past it, strict never "
                          "overshoots")
    return value


def _outage_limits(value):
    if value is None:
        return "local"
    if value not in REDIS_OUTAGE_LIMITS:
        raise ConfigError(f"router_settings.redis_outage_limits: must be `local` or `refuse` (got "
                          f"{str(value)[:40]!r}); local, the default, counts limits per instance while Redis "
                          "is unreachable, refuse answers calls that need a limit with a 503")
    return value


def metrics_opened(value):
    """Whether general_settings.metrics_public opens /metrics: only a literal YAML `true` does, never
    text (an os.environ/ reference, a quoted "true"): a route opens to callers without a key only
    when the file itself says so."""
    return as_bool(value, "general_settings.metrics_public") and value is True


def store_model_in_db(raw, environ=os.environ):
    """general_settings.store_model_in_db, else LiteLLM's STORE_MODEL_IN_DB environment variable."""
    if raw.get("store_model_in_db") is not None:
        return as_bool(raw.get("store_model_in_db"), "general_settings.store_model_in_db")
    return as_bool(environ.get("STORE_MODEL_IN_DB"), "STORE_MODEL_IN_DB")


def ui_session_seconds(raw, environ=os.environ):
    """general_settings.ui_session_duration, else LiteLLM's LITELLM_UI_SESSION_DURATION (`24h`):
    how long an admin UI sign-in lasts (at most 30 days; never "never")."""
    value, path = raw.get("ui_session_duration"), "general_settings.ui_session_duration"
    if value is None or value == "":
        value, path = environ.get("LITELLM_UI_SESSION_DURATION"), "LITELLM_UI_SESSION_DURATION"
    text = as_duration(value, path, None)  # the shape of every duration, checked as they are
    if text is None:
        return DEFAULT_UI_SESSION_SECONDS
    seconds = duration_seconds(text)
    if seconds is None or not 0 < seconds <= MAX_UI_SESSION_SECONDS:
        raise ConfigError(f"{path}: must be a duration from 1s to 30d")
    return seconds


def positive_duration(raw, key, default=None):
    """A duration key (`30d`, `12h`, `90s`) as whole seconds, at least one second; "never" is not one."""
    path = "general_settings." + key
    value = raw.get(key)
    if value is None or value == "":
        value = default
    if value is None:
        return None
    try:
        seconds = duration_seconds(value)
    except ValueError:
        seconds = None
    if not seconds or seconds > MAX_DURATION_SECONDS:
        raise ConfigError(f"{path}: must be a duration like {DURATION_SHAPE} (at least 1s)")
    return seconds


def general_section(raw):
    """GeneralSettings from the `general_settings` mapping; ConfigError names the key at fault."""
    path = "general_settings."
    return GeneralSettings(
        database_url=as_text(raw.get("database_url"), path + "database_url"),
        database_connection_pool_limit=as_number(raw.get("database_connection_pool_limit"),
                                                 path + "database_connection_pool_limit",
                                                 DEFAULT_DB_POOL_LIMIT, above=0, whole=True),
        database_connection_timeout=as_seconds(raw.get("database_connection_timeout"),
                                               path + "database_connection_timeout", DEFAULT_DB_TIMEOUT),
        default_key_duration=as_duration(raw.get("default_key_duration"), path + "default_key_duration",
                                         DEFAULT_KEY_DURATION),
        disable_spend_logs=as_bool(raw.get("disable_spend_logs"), path + "disable_spend_logs"),
        spend_spool_dir=as_text(raw.get("spend_spool_dir"), path + "spend_spool_dir", DEFAULT_SPOOL_DIR),
        budget_mode=_budget_mode(raw.get("budget_mode")),
        budget_hold_seconds=as_seconds(raw.get("budget_hold_seconds"), path + "budget_hold_seconds"),
        budget_lease_seconds=as_seconds(raw.get("budget_lease_seconds"), path + "budget_lease_seconds",
                                        DEFAULT_BUDGET_LEASE_SECONDS, minimum=0, maximum=60),
        background_health_checks=as_bool(raw.get("background_health_checks"), path + "background_health_checks"),
        health_check_interval=as_seconds(raw.get("health_check_interval"), path + "health_check_interval",
                                         DEFAULT_HEALTH_CHECK_INTERVAL),
        otel=as_bool(raw.get("otel"), path + "otel"),
        metrics_public=metrics_opened(raw.get("metrics_public")),
        allow_mock_response=as_bool(raw.get("allow_mock_response"), path + "allow_mock_response"),
        store_model_in_db=store_model_in_db(raw),
        ui_session_seconds=ui_session_seconds(raw),
        job_lease_seconds=as_seconds(raw.get("background_job_lease_seconds"),
                                     path + "background_job_lease_seconds", DEFAULT_JOB_LEASE_SECONDS,
                                     minimum=1),
        spend_logs_retention=positive_duration(raw, "maximum_spend_logs_retention_period"),
        spend_logs_retention_interval=positive_duration(raw, "maximum_spend_logs_retention_interval",
                                                        DEFAULT_RETENTION_INTERVAL),
    )


def _from_either(router, litellm, key):
    """(value, path) of a key LiteLLM takes in router_settings or, failing that, litellm_settings."""
    if key in router:
        return router[key], f"router_settings.{key}"
    return litellm.get(key), f"litellm_settings.{key}"


def router_section(router, litellm):
    """RouterSettings from `router_settings` (and `litellm_settings` for the keys both take)."""
    def number(key, default, whole=False):
        value, path = _from_either(router, litellm, key)
        found = as_number(value, path, default, minimum=0)
        return int(found) if whole else float(found)

    strategy = router.get("routing_strategy") or "simple-shuffle"
    if strategy not in ROUTING_STRATEGIES:
        raise ConfigError(f"router_settings.routing_strategy: {strategy!r} is not one of "
                          f"{', '.join(ROUTING_STRATEGIES)}")
    path = "router_settings."
    timeout = as_seconds(router.get("timeout"), path + "timeout", minimum=0)
    stream_timeout = as_seconds(router.get("stream_timeout"), path + "stream_timeout", minimum=0)
    return RouterSettings(
        routing_strategy=strategy,
        num_retries=number("num_retries", 0, whole=True),
        max_retries=number("max_retries", 5, whole=True),
        max_fallbacks=number("max_fallbacks", 5, whole=True),
        allowed_fails=number("allowed_fails", 3, whole=True),
        cooldown_time=number("cooldown_time", 60.0),
        max_request_timeout=number("max_request_timeout", 600.0),
        timeout=timeout,
        stream_timeout=stream_timeout,
        fallbacks=fallback_map(*_from_either(router, litellm, "fallbacks")),
        context_window_fallbacks=fallback_map(*_from_either(router, litellm, "context_window_fallbacks")),
        default_fallbacks=tuple(name_list(*_from_either(router, litellm, "default_fallbacks"))),
        redis_url=as_text(router.get("redis_url"), path + "redis_url"),
        redis_host=as_text(router.get("redis_host"), path + "redis_host"),
        redis_port=as_port(router.get("redis_port"), path + "redis_port"),
        redis_password=as_secret(router.get("redis_password"), path + "redis_password"),
        local_state_path=as_text(router.get("local_state_path"), path + "local_state_path"),
        redis_outage_limits=_outage_limits(router.get("redis_outage_limits")),
    )


def cache_section(litellm):
    """CacheSettings when `litellm_settings.cache` is on, else None."""
    if not as_bool(litellm.get("cache"), "litellm_settings.cache"):
        return None
    params = litellm.get("cache_params") or {}
    path = "litellm_settings.cache_params"
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: must be a mapping")
    kind = params.get("type") or None
    if kind not in (None, "local", "redis"):
        raise ConfigError(f"{path}.type: {kind!r} is not supported (local, redis)")
    types = params.get("supported_call_types")
    if types is not None and (not isinstance(types, list) or any(
            t not in CALL_TYPES and t not in UNCACHED_CALL_TYPES for t in types)):
        raise ConfigError(f"{path}.supported_call_types: must list names from "
                          + ", ".join(sorted(set(CALL_TYPES) | UNCACHED_CALL_TYPES)))
    return CacheSettings(
        type=kind,
        ttl=as_seconds(params.get("ttl"), f"{path}.ttl", CACHE_DEFAULT_TTL, maximum=CACHE_MAX_SECONDS),
        namespace=_namespace(params.get("namespace"), f"{path}.namespace"),
        call_types=(frozenset(CALL_TYPES.values()) if types is None
                    else frozenset(CALL_TYPES[t] for t in types if t in CALL_TYPES)),
        max_size_mb=as_number(params.get("max_size_mb"), f"{path}.max_size_mb", CACHE_LOCAL_MAX_MB, above=0,
                              unit="megabytes"),
        shared=as_bool(params.get("shared"), f"{path}.shared"),
        url=as_text(params.get("url") or params.get("redis_url"),
                    f"{path}.{'url' if params.get('url') else 'redis_url'}"),
        host=as_text(params.get("host"), f"{path}.host"),
        port=as_port(params.get("port"), f"{path}.port"),
        password=as_secret(params.get("password"), f"{path}.password"),
    )


def _namespace(value, path):
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: must be a string")
    return value


def litellm_section(raw, environ=None):
    """LitellmSettings from `litellm_settings`: logging flags, callbacks (sinks checked), cache."""
    path = "litellm_settings."
    as_bool(raw.get("telemetry"), path + "telemetry")  # accepted for LiteLLM; nothing is ever sent
    found = callbacks.names(raw.get("callbacks"))
    return LitellmSettings(
        json_logs=as_bool(raw.get("json_logs"), path + "json_logs"),
        turn_off_message_logging=as_bool(raw.get("turn_off_message_logging"), path + "turn_off_message_logging"),
        callback_names=tuple(name for name in found if isinstance(name, str)) if isinstance(found, list) else (),
        callbacks=callbacks.parse(raw, environ=environ, warn=False),  # warned once, by from_dict
        cache=cache_section(raw),
    )


def deployment_numbers(index, params, info):
    """Check the numbers of one model_list entry the gateway reads beyond its schema (prices, health
    check timeouts, context windows), in litellm_params and model_info."""
    for section, values in (("litellm_params", params), ("model_info", info)):
        where = f"model_list[{index}].{section}."
        for name in ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
                     "cache_creation_input_token_cost"):
            as_number(values.get(name), where + name, minimum=0, unit="USD per token")
        as_number(values.get("output_cost_per_image"), where + "output_cost_per_image", minimum=0, unit="USD per image")
        as_number(values.get("input_cost_per_query"), where + "input_cost_per_query", minimum=0, unit="USD per query")
        for name, unit in (("input_cost_per_second", "USD per second"), ("output_cost_per_second", "USD per second"),
                           ("input_cost_per_character", "USD per character")):
            as_number(values.get(name), where + name, minimum=0, unit=unit)
        as_seconds(values.get("health_check_timeout"), where + "health_check_timeout")
        if section == "model_info":
            for name in ("max_input_tokens", "max_output_tokens"):
                as_number(values.get(name), where + name, minimum=0, whole=True, unit="tokens")


def deployment_routing(index, model_name, params, info):
    """Check what routing reads of one model_list entry beyond numbers: `model_info.access_groups`
    is a list of names, and a wildcard entry can never send a `*` upstream (its model has as many
    `*` as its model_name, each taking the text the name's matched, or none: one fixed model)."""
    where = f"model_list[{index}]"
    groups = (info or {}).get("access_groups")
    if groups is not None and (not isinstance(groups, list) or not all(
            isinstance(g, str) and g and len(g) <= 255 for g in groups)):
        raise ConfigError(f"{where}.model_info.access_groups: must be a list of names (strings)")
    model = params.get("model")
    stars = model.count("*") if isinstance(model, str) else 0
    if stars and stars != model_name.count("*"):
        raise ConfigError(f"{where}.litellm_params.model: {model!r} has {stars} `*` but model_name "
                          f"{model_name!r} has {model_name.count('*')}: a `*` the requested name does not "
                          "fill would be sent upstream; give it one `*` per `*` of model_name (or none)")
