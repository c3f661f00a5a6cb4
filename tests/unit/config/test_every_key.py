"""Every config key the gateway reads: one bool parser for every boolean key (the text "false" is off
everywhere), and one bad value per key stops the load with a ConfigError naming the key path."""

import pytest

from gateway import cli
from gateway import server
from gateway.app import create_app
from gateway.cache import build_cache
from gateway.config import settings as config
from gateway.config.settings import ConfigError
from gateway.config.settings import from_dict
from gateway.routing import health
from gateway.telemetry import otel

MASTER = "sk-master-every-key-0123456789"
DEMO = [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}]
FALSE_TEXT = ["false", "False", "0", "no", "NO", "off", " Off "]
TRUE_TEXT = ["true", "TRUE", "1", "on", "On"]


# -- defect: one boolean parser ----------------------------------------------------------------------

@pytest.fixture
def app_effect(tmp_path, monkeypatch):
    """Build the app from a config and report what the gateway did with it."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'keys.sqlite'}")
    started = []
    monkeypatch.setattr(health, "start_background", lambda router, interval: started.append(interval))

    def build(general):
        started.clear()
        app = create_app(from_dict({
            "model_list": DEMO, "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")},
            "general_settings": {"master_key": MASTER, "spend_spool_dir": str(tmp_path / "spool"), **general}}))
        gateway = app.extensions["gateway"]
        leased = gateway.jobs is not None and "health_check" in [job.name for job in gateway.jobs.jobs]
        return {"spend_logs": gateway.spend.ledger is not None, "health_checks": bool(started) or leased}
    return build


def _litellm(key):
    return lambda value: from_dict({"litellm_settings": {key: value}})


def _cache(value):
    return build_cache(from_dict({"litellm_settings": {"cache": value}})) is not None


def _shared(value):
    return build_cache(from_dict({"litellm_settings": {"cache": True, "cache_params": {"shared": value}}})).shared


def _message_logging(tmp_path):
    def read(value):
        settings = from_dict({"litellm_settings": {"callbacks": ["jsonl"], "callback_settings": {
            "jsonl": {"path": str(tmp_path / "calls.jsonl"), "message_logging": value}}}})
        return settings.litellm.callbacks.sinks[0].message_logging
    return read


def _readers(tmp_path, app_effect):
    """{key path: value -> whether the gateway turned the feature on}, read where the gateway uses it."""
    return {
        "litellm_settings.drop_params": lambda v: _litellm("drop_params")(v).drop_params,
        "litellm_settings.set_verbose": lambda v: _litellm("set_verbose")(v).debug,
        "litellm_settings.add_function_to_prompt": lambda v: _litellm("add_function_to_prompt")(v).add_function_to_prompt,
        "litellm_settings.json_logs": lambda v: _litellm("json_logs")(v).litellm.json_logs,
        "litellm_settings.turn_off_message_logging":
            lambda v: not otel.logs_messages(_litellm("turn_off_message_logging")(v)),
        "litellm_settings.cache": _cache,
        "litellm_settings.cache_params.shared": _shared,
        "litellm_settings.callback_settings.jsonl.message_logging": _message_logging(tmp_path),
        "general_settings.otel": lambda v: otel.wanted(from_dict({"general_settings": {"otel": v}})),
        "general_settings.disable_spend_logs": lambda v: not app_effect({"disable_spend_logs": v})["spend_logs"],
        "general_settings.background_health_checks":
            lambda v: app_effect({"background_health_checks": v})["health_checks"],
        "general_settings.allow_mock_response": lambda v: _mock_allowed(v),
    }


def _mock_allowed(value):
    """Whether a virtual key (not an admin) may send mock_response under this setting."""
    from gateway.access.auth import Caller
    from gateway.api.controls import check_mock
    from gateway.errors import PermissionDeniedError
    settings = from_dict({"model_list": DEMO,
                          "general_settings": {"master_key": "sk-m-1", "allow_mock_response": value}})
    try:
        check_mock({"mock_response": "x"}, Caller("key"), settings)
    except PermissionDeniedError:
        return False
    return True


BOOLEAN_KEYS = ["litellm_settings.drop_params", "litellm_settings.set_verbose",
                "litellm_settings.add_function_to_prompt", "litellm_settings.json_logs",
                "litellm_settings.turn_off_message_logging", "litellm_settings.cache",
                "litellm_settings.cache_params.shared", "litellm_settings.callback_settings.jsonl.message_logging",
                "general_settings.otel", "general_settings.disable_spend_logs",
                "general_settings.background_health_checks", "general_settings.allow_mock_response"]


@pytest.mark.parametrize("key", BOOLEAN_KEYS)
def test_false_text_is_off_and_true_text_is_on_for_every_boolean_key(key, tmp_path, app_effect):
    read = _readers(tmp_path, app_effect)[key]
    assert read(False) is False and read(True) is True
    for text in FALSE_TEXT:
        assert read(text) is False, f"{key}: {text!r} must be off"
    for text in TRUE_TEXT:
        assert read(text) is True, f"{key}: {text!r} must be on"


@pytest.mark.parametrize("key", BOOLEAN_KEYS + ["general_settings.metrics_public", "litellm_settings.telemetry"])
@pytest.mark.parametrize("value", ["maybe", "yes", "", 1, 0, [True]])
def test_anything_else_is_a_config_error_naming_the_key(key, value, tmp_path):
    raw = {"model_list": DEMO}
    parts = key.split(".")
    if parts[1] == "cache_params":
        raw["litellm_settings"] = {"cache": True, "cache_params": {parts[2]: value}}
    elif parts[1] == "callback_settings":
        raw["litellm_settings"] = {"callbacks": ["jsonl"], "callback_settings": {
            "jsonl": {"path": str(tmp_path / "calls.jsonl"), parts[3]: value}}}
    else:
        raw[parts[0]] = {parts[1]: value}
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    assert str(info.value) == f"{key}: must be true or false"


def test_false_text_from_an_environment_reference_turns_spend_logs_and_health_checks_off(
        monkeypatch, app_effect):
    # The report: `os.environ/` always yields text, and "false" turned these two on.
    monkeypatch.setenv("T_SPEND_OFF", "false")
    monkeypatch.setenv("T_CHECKS", "false")
    effect = app_effect({"disable_spend_logs": "os.environ/T_SPEND_OFF",
                         "background_health_checks": "os.environ/T_CHECKS"})
    assert effect == {"spend_logs": True, "health_checks": False}


@pytest.mark.parametrize("value, public", [(True, True), (False, False), ("false", False), ("0", False),
                                           ("true", False), (None, False)])
def test_metrics_public_opens_only_for_a_literal_true(value, public):
    # A route opens to callers without a key only when the file itself says `true`: text (an
    # os.environ/ reference, a quoted "true") keeps it closed, as before, and says so in the log.
    assert from_dict({"general_settings": {"metrics_public": value}}).general.metrics_public is public


# -- defect: every value is checked at load -----------------------------------------------------------

def _entry(**params):
    return {"model_name": "m", "litellm_params": {"model": "demo/echo", **params}}


def _cache_params(**params):
    return {"litellm_settings": {"cache": True, "cache_params": params}}


def _webhook(**options):
    return {"litellm_settings": {"callbacks": ["webhook"],
                                 "callback_settings": {"webhook": {"url": "http://127.0.0.1:9/x", **options}}}}


# One bad value per key the gateway reads; each must stop the load naming its path.
BAD = [
    ({"general_settings": {"master_key": 1234}}, "general_settings.master_key"),
    ({"general_settings": {"max_request_size_mb": "5"}}, "general_settings.max_request_size_mb"),
    ({"general_settings": {"background_health_checks": "maybe"}}, "general_settings.background_health_checks"),
    ({"general_settings": {"health_check_interval": "soon"}}, "general_settings.health_check_interval"),
    ({"general_settings": {"health_check_interval": 0}}, "general_settings.health_check_interval"),
    ({"general_settings": {"database_url": 5}}, "general_settings.database_url"),
    ({"general_settings": {"database_connection_pool_limit": 0}}, "general_settings.database_connection_pool_limit"),
    ({"general_settings": {"database_connection_pool_limit": 2.5}}, "general_settings.database_connection_pool_limit"),
    ({"general_settings": {"database_connection_pool_limit": "10"}}, "general_settings.database_connection_pool_limit"),
    ({"general_settings": {"database_connection_pool_limit": True}}, "general_settings.database_connection_pool_limit"),
    ({"general_settings": {"database_connection_timeout": 0}}, "general_settings.database_connection_timeout"),
    ({"general_settings": {"database_connection_timeout": -5}}, "general_settings.database_connection_timeout"),
    ({"general_settings": {"database_connection_timeout": "soon"}}, "general_settings.database_connection_timeout"),
    ({"general_settings": {"default_key_duration": "soon"}}, "general_settings.default_key_duration"),
    ({"general_settings": {"default_key_duration": 3600}}, "general_settings.default_key_duration"),
    ({"general_settings": {"disable_spend_logs": "maybe"}}, "general_settings.disable_spend_logs"),
    ({"general_settings": {"spend_spool_dir": ["a"]}}, "general_settings.spend_spool_dir"),
    ({"general_settings": {"budget_hold_seconds": "soon"}}, "general_settings.budget_hold_seconds"),
    ({"general_settings": {"budget_hold_seconds": -1}}, "general_settings.budget_hold_seconds"),
    ({"general_settings": {"budget_lease_seconds": "soon"}}, "general_settings.budget_lease_seconds"),
    ({"general_settings": {"budget_lease_seconds": -1}}, "general_settings.budget_lease_seconds"),
    ({"general_settings": {"budget_lease_seconds": 61}}, "general_settings.budget_lease_seconds"),
    ({"general_settings": {"otel": "maybe"}}, "general_settings.otel"),
    ({"general_settings": {"metrics_public": "maybe"}}, "general_settings.metrics_public"),
    ({"general_settings": {"allow_mock_response": "maybe"}}, "general_settings.allow_mock_response"),
    ({"general_settings": {"budget_mode": "hard"}}, "general_settings.budget_mode"),
    ({"general_settings": {"store_model_in_db": "maybe"}}, "general_settings.store_model_in_db"),
    ({"general_settings": {"store_model_in_db": True}}, "general_settings.store_model_in_db"),  # no master key
    ({"general_settings": {"ui_session_duration": "soon"}}, "general_settings.ui_session_duration"),
    ({"general_settings": {"ui_session_duration": "never"}}, "general_settings.ui_session_duration"),
    ({"general_settings": {"ui_session_duration": "31d"}}, "general_settings.ui_session_duration"),
    ({"general_settings": {"background_job_lease_seconds": "soon"}}, "general_settings.background_job_lease_seconds"),
    ({"general_settings": {"background_job_lease_seconds": 0.5}}, "general_settings.background_job_lease_seconds"),
    ({"general_settings": {"master_key": MASTER, "maximum_spend_logs_retention_period": "soon"}},
     "general_settings.maximum_spend_logs_retention_period"),
    ({"general_settings": {"master_key": MASTER, "maximum_spend_logs_retention_period": "never"}},
     "general_settings.maximum_spend_logs_retention_period"),
    ({"general_settings": {"master_key": MASTER, "maximum_spend_logs_retention_period": "0d"}},
     "general_settings.maximum_spend_logs_retention_period"),
    ({"general_settings": {"master_key": MASTER, "maximum_spend_logs_retention_period": 30}},
     "general_settings.maximum_spend_logs_retention_period"),
    ({"general_settings": {"maximum_spend_logs_retention_period": "30d"}},  # no master key: no spend logs
     "general_settings.maximum_spend_logs_retention_period"),
    ({"general_settings": {"maximum_spend_logs_retention_interval": "daily"}},
     "general_settings.maximum_spend_logs_retention_interval"),
    ({"litellm_settings": {"drop_params": "maybe"}}, "litellm_settings.drop_params"),
    ({"litellm_settings": {"set_verbose": "maybe"}}, "litellm_settings.set_verbose"),
    ({"litellm_settings": {"request_timeout": "soon"}}, "litellm_settings.request_timeout"),
    ({"litellm_settings": {"telemetry": "maybe"}}, "litellm_settings.telemetry"),
    ({"litellm_settings": {"add_function_to_prompt": "maybe"}}, "litellm_settings.add_function_to_prompt"),
    ({"litellm_settings": {"num_retries": -1}}, "litellm_settings.num_retries"),
    ({"litellm_settings": {"fallbacks": "gpt-4"}}, "litellm_settings.fallbacks"),
    ({"litellm_settings": {"context_window_fallbacks": ["gpt-4"]}}, "litellm_settings.context_window_fallbacks[0]"),
    ({"litellm_settings": {"default_fallbacks": "gpt-4"}}, "litellm_settings.default_fallbacks"),
    ({"litellm_settings": {"allowed_fails": "three"}}, "litellm_settings.allowed_fails"),
    ({"litellm_settings": {"cooldown_time": "soon"}}, "litellm_settings.cooldown_time"),
    ({"litellm_settings": {"cache": "maybe"}}, "litellm_settings.cache"),
    ({"litellm_settings": {"cache": True, "cache_params": "redis"}}, "litellm_settings.cache_params"),
    ({"litellm_settings": {"success_callback": ["langfuze"]}}, "litellm_settings.success_callback[0]"),
    ({"litellm_settings": {"failure_callback": "webhok"}}, "litellm_settings.failure_callback[0]"),
    ({"litellm_settings": {"callbacks": {"otel": True}}}, "litellm_settings.callbacks"),
    ({"litellm_settings": {"json_logs": "maybe"}}, "litellm_settings.json_logs"),
    ({"litellm_settings": {"turn_off_message_logging": "maybe"}}, "litellm_settings.turn_off_message_logging"),
    ({"litellm_settings": {"callbacks": ["otel"], "callback_settings": ["otel"]}},
     "litellm_settings.callback_settings"),
    ({"router_settings": {"model_group_alias": ["a"]}}, "router_settings.model_group_alias"),
    ({"router_settings": {"routing_strategy": "fastest"}}, "router_settings.routing_strategy"),
    ({"router_settings": {"num_retries": "two"}}, "router_settings.num_retries"),
    ({"router_settings": {"timeout": "soon"}}, "router_settings.timeout"),
    ({"router_settings": {"stream_timeout": -1}}, "router_settings.stream_timeout"),
    ({"router_settings": {"redis_host": 5}}, "router_settings.redis_host"),
    ({"router_settings": {"redis_port": "http"}}, "router_settings.redis_port"),
    ({"router_settings": {"redis_port": 70000}}, "router_settings.redis_port"),
    ({"router_settings": {"redis_password": ["pw"]}}, "router_settings.redis_password"),
    ({"router_settings": {"redis_url": 5}}, "router_settings.redis_url"),
    ({"router_settings": {"allowed_fails": -1}}, "router_settings.allowed_fails"),
    ({"router_settings": {"cooldown_time": "soon"}}, "router_settings.cooldown_time"),
    ({"router_settings": {"fallbacks": [{"gpt-4": 5}]}}, "router_settings.fallbacks[0].gpt-4"),
    ({"router_settings": {"context_window_fallbacks": "gpt-4"}}, "router_settings.context_window_fallbacks"),
    ({"router_settings": {"default_fallbacks": [1]}}, "router_settings.default_fallbacks"),
    ({"router_settings": {"max_fallbacks": "five"}}, "router_settings.max_fallbacks"),
    ({"router_settings": {"max_retries": -1}}, "router_settings.max_retries"),
    ({"router_settings": {"max_request_timeout": "soon"}}, "router_settings.max_request_timeout"),
    ({"router_settings": {"local_state_path": 5}}, "router_settings.local_state_path"),
    ({"router_settings": {"redis_outage_limits": "open"}}, "router_settings.redis_outage_limits"),
    ({"router_settings": {"redis_outage_limits": True}}, "router_settings.redis_outage_limits"),
    (_cache_params(type="memcached"), "litellm_settings.cache_params.type"),
    (_cache_params(host=5), "litellm_settings.cache_params.host"),
    (_cache_params(port="x"), "litellm_settings.cache_params.port"),
    (_cache_params(password=["pw"]), "litellm_settings.cache_params.password"),
    (_cache_params(url=5), "litellm_settings.cache_params.url"),
    (_cache_params(redis_url=5), "litellm_settings.cache_params.redis_url"),
    (_cache_params(ttl="soon"), "litellm_settings.cache_params.ttl"),
    (_cache_params(namespace=1), "litellm_settings.cache_params.namespace"),
    (_cache_params(supported_call_types=["not_a_call_type"]), "litellm_settings.cache_params.supported_call_types"),
    (_cache_params(max_size_mb=0), "litellm_settings.cache_params.max_size_mb"),
    (_cache_params(shared="maybe"), "litellm_settings.cache_params.shared"),
    (_webhook(url="ftp://x"), "litellm_settings.callback_settings.webhook.url"),
    (_webhook(headers=["a"]), "litellm_settings.callback_settings.webhook.headers"),
    (_webhook(queue_size=0), "litellm_settings.callback_settings.webhook.queue_size"),
    (_webhook(batch_size="x"), "litellm_settings.callback_settings.webhook.batch_size"),
    (_webhook(timeout="soon"), "litellm_settings.callback_settings.webhook.timeout"),
    (_webhook(max_attempts=0), "litellm_settings.callback_settings.webhook.max_attempts"),
    (_webhook(message_logging="maybe"), "litellm_settings.callback_settings.webhook.message_logging"),
    ({"model_list": [_entry(timeout="soon")]}, "model_list[0].litellm_params.timeout"),
    ({"model_list": [_entry(stream_timeout=0)]}, "model_list[0].litellm_params.stream_timeout"),
    ({"model_list": [_entry(max_tokens="x")]}, "model_list[0].litellm_params.max_tokens"),
    ({"model_list": [_entry(temperature="hot")]}, "model_list[0].litellm_params.temperature"),
    ({"model_list": [_entry(rpm=-1)]}, "model_list[0].litellm_params.rpm"),
    ({"model_list": [_entry(tpm="x")]}, "model_list[0].litellm_params.tpm"),
    ({"model_list": [_entry(weight=-1)]}, "model_list[0].litellm_params.weight"),
    ({"model_list": [_entry(order="first")]}, "model_list[0].litellm_params.order"),
    ({"model_list": [_entry(input_cost_per_token="cheap")]}, "model_list[0].litellm_params.input_cost_per_token"),
    ({"model_list": [_entry(output_cost_per_token=-1)]}, "model_list[0].litellm_params.output_cost_per_token"),
    ({"model_list": [_entry(health_check_timeout="soon")]}, "model_list[0].litellm_params.health_check_timeout"),
    ({"model_list": [{**_entry(), "rpm": "x"}]}, "model_list[0].rpm"),
    ({"model_list": [{**_entry(), "model_info": {"input_cost_per_token": "x"}}]},
     "model_list[0].model_info.input_cost_per_token"),
    ({"model_list": [{**_entry(), "model_info": {"output_cost_per_token": -1}}]},
     "model_list[0].model_info.output_cost_per_token"),
    ({"model_list": [{**_entry(), "model_info": {"max_input_tokens": "128k"}}]},
     "model_list[0].model_info.max_input_tokens"),
    ({"model_list": [{**_entry(), "model_info": {"max_output_tokens": -5}}]},
     "model_list[0].model_info.max_output_tokens"),
    ({"model_list": [{**_entry(), "model_info": {"health_check_timeout": 0}}]},
     "model_list[0].model_info.health_check_timeout"),
]


@pytest.mark.parametrize("raw, path", BAD, ids=[f"{path}={i}" for i, (_, path) in enumerate(BAD)])
def test_one_bad_value_per_key_stops_the_load_naming_the_key(raw, path):
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    lines = str(info.value).splitlines()
    assert any(line.startswith(f"{path}: ") for line in lines), str(info.value)


def test_the_table_covers_every_key_the_gateway_reads():
    covered = {path for _, path in BAD}
    for section, keys in config.IMPLEMENTED.items():
        for key in keys:
            assert any(p == f"{section}.{key}" or p.startswith(f"{section}.{key}.") or p.startswith(f"{section}.{key}[")
                       for p in covered), f"{section}.{key} has no bad value in the table"


def test_good_values_load(tmp_path, monkeypatch):
    monkeypatch.setenv("T_PORT", "6380")
    s = from_dict({"model_list": [{**_entry(health_check_timeout=5, input_cost_per_token=0.0),
                                   "model_info": {"max_input_tokens": 128000}}],
                   "general_settings": {"health_check_interval": 30, "budget_hold_seconds": 90,
                                        "default_key_duration": "30d", "background_health_checks": "on",
                                        "ui_session_duration": "8h", "master_key": MASTER,
                                        "background_job_lease_seconds": 6,
                                        "maximum_spend_logs_retention_period": "30d",
                                        "maximum_spend_logs_retention_interval": "12h",
                                        "database_connection_pool_limit": 3,
                                        "database_connection_timeout": 0.5},
                   "router_settings": {"redis_host": "127.0.0.1", "redis_port": "os.environ/T_PORT",
                                       "timeout": 0, "num_retries": 2, "redis_outage_limits": "refuse"},
                   "litellm_settings": {"cache": "true", "cache_params": {"type": "local", "ttl": 60}}})
    assert (s.general.health_check_interval, s.general.budget_hold_seconds) == (30.0, 90.0)
    assert s.general.default_key_duration == "30d" and s.general.background_health_checks is True
    assert s.general.ui_session_seconds == 8 * 3600
    assert (s.general.job_lease_seconds, s.general.spend_logs_retention,
            s.general.spend_logs_retention_interval) == (6.0, 30 * 86400, 12 * 3600)
    defaults = from_dict({}).general
    assert (defaults.job_lease_seconds, defaults.spend_logs_retention,
            defaults.spend_logs_retention_interval) == (10.0, None, 86400)
    assert (s.general.database_connection_pool_limit, s.general.database_connection_timeout) == (3, 0.5)
    assert (defaults.database_connection_pool_limit, defaults.database_connection_timeout) == (10, 5.0)
    assert (s.router.redis_port, s.router.timeout, s.router.num_retries) == (6380, 0.0, 2)
    assert s.router.redis_outage_limits == "refuse" and from_dict({}).router.redis_outage_limits == "local"
    assert s.litellm.cache.type == "local" and s.litellm.cache.ttl == 60


@pytest.fixture
def served(monkeypatch):
    """Replace gunicorn start-up: record what main() would serve, return 0."""
    calls = []
    monkeypatch.setattr(server, "serve", lambda settings, host, port, workers: calls.append(settings) or 0)
    monkeypatch.setattr(server, "patch", lambda: None)  # never monkey-patch the test process
    return calls


def test_gateway_config_with_a_bad_value_exits_2_naming_the_key(tmp_path, capsys, served):
    path = tmp_path / "bad.yaml"
    path.write_text("model_list:\n  - model_name: demo\n    litellm_params: {model: demo/echo}\n"
                    "general_settings:\n  background_health_checks: true\n  health_check_interval: soon\n")
    assert cli.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == "gateway: config error:\n  general_settings.health_check_interval: must be a positive number " \
                  "of seconds\n"
    assert served == []


def test_ui_session_duration_falls_back_to_litellms_variable_then_a_day(monkeypatch):
    monkeypatch.delenv("LITELLM_UI_SESSION_DURATION", raising=False)
    assert from_dict({}).general.ui_session_seconds == 24 * 3600
    monkeypatch.setenv("LITELLM_UI_SESSION_DURATION", "30m")
    assert from_dict({}).general.ui_session_seconds == 1800
    assert from_dict({"general_settings": {"ui_session_duration": "2h"}}).general.ui_session_seconds == 7200
    monkeypatch.setenv("LITELLM_UI_SESSION_DURATION", "soon")
    with pytest.raises(ConfigError, match="LITELLM_UI_SESSION_DURATION"):
        from_dict({})
