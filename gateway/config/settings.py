"""Load the LiteLLM-style YAML config, check every value once, and freeze it into one Settings object."""

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from dataclasses import field

import yaml
from marshmallow import EXCLUDE
from marshmallow import INCLUDE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate

from gateway.config import callbacks
from gateway.config import params
from gateway.config import public
from gateway.config import sections
from gateway.config.parse import ENV_PREFIX
from gateway.config.parse import as_bool
from gateway.config.parse import as_seconds
from gateway.config.parse import as_size_mb
from gateway.config.parse import env_references
from gateway.config.parse import key_path
from gateway.config.parse import resolve_env
from gateway.errors import ConfigError  # noqa: F401  (callers and tests import it from here too)

log = logging.getLogger("gateway.config.settings")

DEFAULT_MAX_BODY_MB = 32
DEFAULT_REQUEST_TIMEOUT = 600.0

# Keys the LiteLLM proxy knows that later gateway versions implement: accepted and warned about once.
PLANNED = {
    "litellm_settings": {
        "service_callback", "max_budget", "budget_duration",
        "redact_user_api_key_info", "modify_params", "max_internal_user_budget", "default_team_settings",
        "upperbound_key_generate_params", "default_key_generate_params", "enable_preview_features",
        "retry_after",
    },
    "router_settings": {
        "retry_after", "enable_pre_call_checks", "routing_strategy_args", "retry_policy",
        "allowed_fails_policy", "provider_budget_config", "disable_cooldowns",
    },
    "general_settings": {
        "alerting", "proxy_batch_write_at", "allow_user_auth", "custom_auth", "infer_model_from_keys",
        "public_routes", "allowed_routes", "enforce_user_param", "max_parallel_requests",
        "global_max_parallel_requests",
    },
}
IMPLEMENTED = {
    "litellm_settings": {"drop_params", "set_verbose", "request_timeout", "telemetry",
                         "add_function_to_prompt", "num_retries", "fallbacks", "context_window_fallbacks",
                         "default_fallbacks", "allowed_fails", "cooldown_time", "cache", "cache_params",
                         "success_callback", "failure_callback", "callbacks", "json_logs",
                         "turn_off_message_logging", "callback_settings"},
    "router_settings": {"model_group_alias", "routing_strategy", "num_retries", "timeout", "stream_timeout",
                        "redis_host", "redis_port", "redis_password", "redis_url", "allowed_fails",
                        "cooldown_time", "fallbacks", "context_window_fallbacks", "default_fallbacks",
                        "max_fallbacks", "max_retries", "max_request_timeout", "local_state_path",
                        "redis_outage_limits"},
    "general_settings": {"master_key", "max_request_size_mb", "background_health_checks",
                         "health_check_interval", "database_url", "default_key_duration",
                         "disable_spend_logs", "spend_spool_dir", "budget_hold_seconds", "budget_lease_seconds", "otel",
                         "metrics_public", "budget_mode", "allow_mock_response",
                         "store_model_in_db", "ui_session_duration", "background_job_lease_seconds",
                         "maximum_spend_logs_retention_period", "maximum_spend_logs_retention_interval",
                         "database_connection_pool_limit", "database_connection_timeout"},
}


class _Mapping(Schema):
    class Meta:
        unknown = INCLUDE


class LiteLLMParamsSchema(_Mapping):
    """Per-deployment parameters: connection keys plus default request parameters."""

    model = fields.String(required=True, validate=validate.Length(min=1))
    api_base = fields.String(allow_none=True)
    api_key = fields.String(allow_none=True)
    api_version = fields.String(allow_none=True)
    azure_ad_token = fields.String(allow_none=True)
    organization = fields.String(allow_none=True)
    timeout = fields.Float(allow_none=True, validate=validate.Range(min=0, min_inclusive=False))
    stream_timeout = fields.Float(allow_none=True, validate=validate.Range(min=0, min_inclusive=False))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    extra_headers = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    temperature = fields.Float(allow_none=True)
    max_tokens = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1))
    rpm = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))
    tpm = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))
    weight = fields.Float(allow_none=True, validate=validate.Range(min=0))
    order = fields.Integer(strict=True, allow_none=True)


class DeploymentSchema(Schema):
    """One `model_list` entry."""

    class Meta:
        unknown = EXCLUDE

    model_name = fields.String(required=True, validate=validate.Length(min=1))
    litellm_params = fields.Nested(LiteLLMParamsSchema, required=True)
    model_info = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)
    # LiteLLM's older form puts the limits beside litellm_params.
    rpm = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))
    tpm = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))


class ConfigSchema(Schema):
    """The whole file, with the LiteLLM proxy's top-level keys."""

    class Meta:
        unknown = INCLUDE

    model_list = fields.List(fields.Nested(DeploymentSchema), load_default=list)
    litellm_settings = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)
    router_settings = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)
    general_settings = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)
    environment_variables = fields.Dict(keys=fields.String(), load_default=dict, allow_none=True)


@dataclass(frozen=True)
class DeploymentConfig:
    """A deployment as configured: group name, provider model string and its parameters."""

    model_name: str
    params: dict
    model_info: dict
    index: int
    # Paths from the model_list entry (`("litellm_params", "api_key")`) of the values that came from
    # `os.environ/` references: the model info routes never show them (gateway/config/public.py).
    env_refs: frozenset = frozenset()

    @property
    def model(self):
        """The provider model string, e.g. `azure/my-deployment`."""
        return self.params["model"]

    @functools.cached_property
    def id(self):
        """The deployment's id (`x-litellm-model-id`, /model/info, shared routing state):
        `model_info.id` when configured (database models carry theirs there), else a sha256 of its
        place in the list, its name and its params with every secret left out (an id is public:
        no key is hashed into it). The place keeps apart deployments that differ only in a key."""
        given = self.model_info.get("id") if isinstance(self.model_info, dict) else None
        if isinstance(given, (str, int)) and not isinstance(given, bool) and str(given):
            return str(given)
        params, _info = public.public_config(self.params, None, self.env_refs)
        text = json.dumps({"index": self.index, "model_name": self.model_name, "litellm_params": params},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Settings:
    """Everything the app needs, resolved and checked once at start-up.

    The typed sections (`general`, `router`, `litellm`) are built from the three raw mappings when
    the object is made (so `dataclasses.replace` keeps them in step), and consumers read only them.
    The raw mappings stay as the file's record: keys this gateway does not read (LiteLLM's planned
    or unknown ones) pass through there untouched; nothing reads settings from them by key.
    """

    deployments: tuple = ()
    master_key: str | None = None
    drop_params: bool = False
    debug: bool = False
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_MB * 1024 * 1024
    add_function_to_prompt: bool = False
    catch_all: bool = False  # `--model`: every requested name goes to the one deployment
    group_aliases: dict = field(default_factory=dict)
    source: str = "defaults"
    litellm_settings: dict = field(default_factory=dict)
    router_settings: dict = field(default_factory=dict)
    general_settings: dict = field(default_factory=dict)
    general: sections.GeneralSettings = field(init=False, repr=False, compare=False)
    router: sections.RouterSettings = field(init=False, repr=False, compare=False)
    litellm: sections.LitellmSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        litellm = self.litellm_settings or {}
        object.__setattr__(self, "general", sections.general_section(self.general_settings or {}))
        object.__setattr__(self, "router", sections.router_section(self.router_settings or {}, litellm))
        object.__setattr__(self, "litellm", sections.litellm_section(litellm))


def _flatten_errors(errors, parts=()):
    """Turn marshmallow's nested error dict into sorted `path: message` lines."""
    lines = []
    if isinstance(errors, dict):
        for key, value in errors.items():
            if key == "_schema":
                lines.extend(_flatten_errors(value, parts))
            else:
                lines.extend(_flatten_errors(value, parts + (key,)))
    elif isinstance(errors, list):
        for message in errors:
            if isinstance(message, (dict, list)):
                lines.extend(_flatten_errors(message, parts))
            else:
                text = str(message)
                if text == "Missing data for required field.":
                    text = "required"
                elif text == "Unknown field.":
                    text = "unknown key"
                lines.append(f"{key_path(parts)}: {text}")
    return lines


def check_deployment(entry, index):
    """One model_list entry (a mapping, `os.environ/` references resolved) checked as the config file's
    are, as a DeploymentConfig; ConfigError lines name the field (`litellm_params.rpm: ...`, the
    numbers' as `model_list[index].litellm_params...`). /model/new checks its bodies with it."""
    if not isinstance(entry, dict):
        raise ConfigError("(top level): must be a mapping with model_name and litellm_params")
    try:
        data = DeploymentSchema().load(resolve_env(entry))
    except ValidationError as exc:
        raise ConfigError("\n".join(sorted(_flatten_errors(exc.messages)))) from None
    return _deployment(data, index, env_references(entry))


def _deployment(data, index, env_refs=()):
    """A loaded model_list entry as a DeploymentConfig, its numbers and its wildcard/access-group
    fields checked (ConfigError names `model_list[index]...`); `env_refs`: the params the file gave
    as `os.environ/` references (never shown by /model/info)."""
    config = DeploymentConfig(model_name=data["model_name"],
                              params={**{k: data[k] for k in ("rpm", "tpm") if data.get(k) is not None},
                                      **data["litellm_params"]},
                              model_info=dict(data.get("model_info") or {}), index=index,
                              env_refs=frozenset(env_refs))
    sections.deployment_numbers(index, config.params, config.model_info)
    sections.deployment_routing(index, config.model_name, config.params, config.model_info)
    return config


def _warn_keys(section, values):
    """Warn once about keys a later version implements, and about unknown keys."""
    for key in sorted(values or {}):
        if key in IMPLEMENTED.get(section, ()):
            continue
        if key in PLANNED.get(section, ()):
            log.warning("%s.%s is accepted but not implemented in this version; ignored", section, key)
        else:
            log.warning("%s.%s is not a setting this gateway knows; ignored", section, key)


def _warn_values(general, litellm):
    """Warn once, at load, about values that are valid but do not do what they may seem to."""
    callbacks.warn_unknown(litellm)
    public = general.get("metrics_public")
    if isinstance(public, str) and as_bool(public, "general_settings.metrics_public"):
        log.warning("general_settings.metrics_public: %r is text, so /metrics stays closed; only a literal "
                    "`true` in the file opens it to callers without a key", public[:20])


def _aliases(router):
    """router_settings.model_group_alias as {alias: group}."""
    aliases = router.get("model_group_alias") or {}
    if not isinstance(aliases, dict):
        raise ConfigError("router_settings.model_group_alias: must be a mapping of alias: group")
    resolved = {}
    for alias, target in aliases.items():
        if isinstance(target, dict):  # LiteLLM's object form: {"model": group, "hidden": bool}
            target = target.get("model")
        if not isinstance(target, str) or not target:
            raise ConfigError(f"router_settings.model_group_alias.{alias}: must name a model group")
        resolved[str(alias)] = target
    return resolved


def _deployment_env_refs(raw):
    """{model_list index: paths within the entry of its `os.environ/` values}."""
    found = {}
    for path in env_references(raw.get("model_list")):
        if len(path) >= 2:
            found.setdefault(path[0], set()).add(path[1:])
    return found


def from_dict(raw, *, source="config", environ=True):
    """Check a parsed config mapping, every value of it, and build Settings; ConfigError names the path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config file must be a mapping of top-level keys")
    env_vars = raw.get("environment_variables") or {}
    if not isinstance(env_vars, dict):
        raise ConfigError("environment_variables: must be a mapping of NAME: value")
    if environ:
        for name, value in env_vars.items():
            if value is not None and not str(value).startswith(ENV_PREFIX):
                os.environ[str(name)] = str(value)
    try:
        data = ConfigSchema().load(resolve_env(raw))
    except ValidationError as exc:
        raise ConfigError("\n".join(sorted(_flatten_errors(exc.messages)))) from None
    litellm = data["litellm_settings"] or {}
    router = data["router_settings"] or {}
    general = data["general_settings"] or {}
    for section, values in (("litellm_settings", litellm), ("router_settings", router),
                            ("general_settings", general)):
        _warn_keys(section, values)
    _warn_values(general, litellm)
    known_top = set(ConfigSchema().fields)
    for key in sorted(set(data) - known_top):
        log.warning("%s is not a top-level key this gateway knows; ignored", key)

    env_refs = _deployment_env_refs(raw)
    deployments = tuple(_deployment(d, i, env_refs.get(i, ())) for i, d in enumerate(data["model_list"]))
    params.warn(deployments)
    master_key = os.environ.get("GATEWAY_MASTER_KEY") or general.get("master_key")
    if master_key is not None and (not isinstance(master_key, str) or not master_key):
        raise ConfigError("general_settings.master_key: must be a non-empty string")
    if sections.store_model_in_db(general) and master_key is None:
        raise ConfigError("general_settings.store_model_in_db: needs general_settings.master_key (or "
                          "GATEWAY_MASTER_KEY): only the proxy admin may add models, and the database "
                          "models' provider keys are encrypted with a key derived from it by default")
    if general.get("maximum_spend_logs_retention_period") not in (None, "") and master_key is None:
        raise ConfigError("general_settings.maximum_spend_logs_retention_period: needs "
                          "general_settings.master_key (or GATEWAY_MASTER_KEY): spend logs are kept only "
                          "with one")
    return Settings(
        deployments=deployments,
        master_key=master_key,
        drop_params=as_bool(litellm.get("drop_params"), "litellm_settings.drop_params"),
        debug=as_bool(litellm.get("set_verbose"), "litellm_settings.set_verbose"),
        request_timeout=as_seconds(litellm.get("request_timeout"), "litellm_settings.request_timeout",
                                   DEFAULT_REQUEST_TIMEOUT),
        max_body_bytes=as_size_mb(general.get("max_request_size_mb"), "general_settings.max_request_size_mb",
                                  DEFAULT_MAX_BODY_MB),
        add_function_to_prompt=as_bool(litellm.get("add_function_to_prompt"),
                                       "litellm_settings.add_function_to_prompt"),
        group_aliases=_aliases(router),
        source=source,
        litellm_settings=litellm,
        router_settings=router,
        general_settings=general,
    )


def load_file(path):
    """Read a YAML config file (safe_load only) and build Settings."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return from_dict(raw, source=str(path))


def demo_settings():
    """The embedded defaults: one built-in demo model that needs no provider key."""
    return from_dict({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}]},
                     source="built-in demo defaults")


def from_env():
    """Settings for `gunicorn wsgi:app`: GATEWAY_CONFIG if set, else the embedded defaults."""
    path = os.environ.get("GATEWAY_CONFIG")
    return load_file(path) if path else demo_settings()
