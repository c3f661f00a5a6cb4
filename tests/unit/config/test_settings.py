"""Settings: the LiteLLM proxy config keys, os.environ/ references, path-precise errors, env overrides."""

import logging
import os
import textwrap

import pytest

from gateway.config import settings as config
from gateway.config.settings import ConfigError
from gateway.config.settings import from_dict
from gateway.config.settings import load_file


@pytest.fixture
def gateway_logs(caplog, monkeypatch):
    """caplog that also sees `gateway.*` records after create_app() stopped their propagation."""
    monkeypatch.setattr(logging.getLogger("gateway"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="gateway.config.settings")
    return caplog


def deployment(model="gpt-4o", name="gpt", **params):
    return {"model_name": name, "litellm_params": {"model": model, **params}}


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


FULL_CONFIG = """\
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/TEST_OPENAI_KEY
      api_base: https://api.example.com/v1
      timeout: 30
      temperature: 0.2
      max_tokens: 256
      top_p: 0.9
      my_custom_default: {nested: [1, 2]}
      headers:
        X-Team: os.environ/TEST_TEAM
        X-Static: fixed
    model_info:
      id: primary
      mode: chat
      max_input_tokens: 128000
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt4o-eu
      api_base: https://eu.openai.azure.com/
      api_key: os.environ/TEST_AZURE_KEY
      api_version: "2024-06-01"
      rpm: 600
  - model_name: embed
    litellm_params:
      model: text-embedding-3-small
litellm_settings:
  drop_params: true
  set_verbose: true
  request_timeout: 45
router_settings:
  model_group_alias:
    gpt4: gpt-4o
    hidden-alias: {model: embed, hidden: true}
general_settings:
  master_key: os.environ/TEST_MASTER
  max_request_size_mb: 2
environment_variables:
  TEST_TEAM: platform
"""


@pytest.fixture
def full_env(monkeypatch, env_sandbox):
    env_sandbox("TEST_TEAM")
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-openai-123")
    monkeypatch.setenv("TEST_AZURE_KEY", "azure-456")
    monkeypatch.setenv("TEST_MASTER", "sk-master-789")


def test_full_litellm_config_file(tmp_path, full_env):
    path = write(tmp_path, FULL_CONFIG)
    s = load_file(path)
    assert s.source == str(path)
    assert [d.model_name for d in s.deployments] == ["gpt-4o", "gpt-4o", "embed"]
    assert [d.index for d in s.deployments] == [0, 1, 2]
    first = s.deployments[0]
    assert first.model == "openai/gpt-4o"
    assert first.params == {
        "model": "openai/gpt-4o", "api_key": "sk-openai-123", "api_base": "https://api.example.com/v1",
        "timeout": 30.0, "temperature": 0.2, "max_tokens": 256, "top_p": 0.9,
        "my_custom_default": {"nested": [1, 2]},
        "headers": {"X-Team": "platform", "X-Static": "fixed"},
    }
    assert first.model_info == {"id": "primary", "mode": "chat", "max_input_tokens": 128000}
    second = s.deployments[1]
    assert second.params["api_version"] == "2024-06-01"
    assert second.params["api_key"] == "azure-456"
    assert second.params["rpm"] == 600
    assert second.model_info == {}
    assert s.deployments[2].params == {"model": "text-embedding-3-small"}
    assert s.drop_params is True
    assert s.debug is True
    assert s.request_timeout == 45.0
    assert s.group_aliases == {"gpt4": "gpt-4o", "hidden-alias": "embed"}
    assert s.master_key == "sk-master-789"
    assert s.max_body_bytes == 2 * 1024 * 1024
    assert s.catch_all is False
    assert os.environ["TEST_TEAM"] == "platform"


def test_defaults_for_an_empty_config():
    for raw in (None, {}):
        s = from_dict(raw)
        assert s.deployments == ()
        assert s.master_key is None
        assert s.drop_params is False
        assert s.debug is False
        assert s.request_timeout == 600.0
        assert s.max_body_bytes == 32 * 1024 * 1024
        assert s.group_aliases == {}


def test_empty_file_is_an_empty_config(tmp_path):
    assert load_file(write(tmp_path, "")).deployments == ()


@pytest.mark.parametrize("section", ["litellm_settings", "router_settings", "general_settings",
                                     "environment_variables", "model_list"])
def test_null_sections_are_allowed(section):
    s = from_dict({section: None, "model_list": [deployment()]} if section != "model_list" else {section: []})
    assert isinstance(s, config.Settings)


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("true", True),
                                             ("False", False), (None, False)])
def test_drop_params_and_set_verbose_booleans(value, expected):
    s = from_dict({"litellm_settings": {"drop_params": value, "set_verbose": value}})
    assert s.drop_params is expected
    assert s.debug is expected


@pytest.mark.parametrize("key, value, path", [
    ("drop_params", "yes", "litellm_settings.drop_params"),
    ("set_verbose", 1, "litellm_settings.set_verbose"),
    ("request_timeout", 0, "litellm_settings.request_timeout"),
    ("request_timeout", -5, "litellm_settings.request_timeout"),
    ("request_timeout", "10", "litellm_settings.request_timeout"),
    ("request_timeout", True, "litellm_settings.request_timeout"),
])
def test_litellm_settings_wrong_values_name_the_path(key, value, path):
    with pytest.raises(ConfigError) as info:
        from_dict({"litellm_settings": {key: value}})
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("value, expected", [(1, 1024 * 1024), (0.5, 512 * 1024), (0.001, 1048)])
def test_max_request_size_mb(value, expected):
    assert from_dict({"general_settings": {"max_request_size_mb": value}}).max_body_bytes == expected


@pytest.mark.parametrize("value", [0, -1, "5", False, [1]])
def test_max_request_size_mb_wrong_values(value):
    with pytest.raises(ConfigError, match=r"^general_settings\.max_request_size_mb: "):
        from_dict({"general_settings": {"max_request_size_mb": value}})


@pytest.mark.parametrize("value", [1234, "", True, ["k"]])
def test_master_key_must_be_a_non_empty_string(value):
    with pytest.raises(ConfigError, match=r"^general_settings\.master_key: "):
        from_dict({"general_settings": {"master_key": value}})


def test_gateway_master_key_env_overrides_the_file(monkeypatch):
    monkeypatch.setenv("GATEWAY_MASTER_KEY", "sk-from-env")
    assert from_dict({"general_settings": {"master_key": "sk-from-file"}}).master_key == "sk-from-env"
    assert from_dict({}).master_key == "sk-from-env"


def test_empty_gateway_master_key_env_does_not_override(monkeypatch):
    monkeypatch.setenv("GATEWAY_MASTER_KEY", "")
    assert from_dict({"general_settings": {"master_key": "sk-from-file"}}).master_key == "sk-from-file"


def test_model_group_alias_forms():
    s = from_dict({"model_list": [deployment(name="g")],
                   "router_settings": {"model_group_alias": {"a": "g", "b": {"model": "g", "hidden": True}}}})
    assert s.group_aliases == {"a": "g", "b": "g"}


def test_model_group_alias_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"^router_settings\.model_group_alias: "):
        from_dict({"router_settings": {"model_group_alias": ["a", "b"]}})


def test_model_group_alias_object_without_model_is_a_config_error():
    # LiteLLM's object form is {model: <group>, hidden: bool}; a missing `model` is a config
    # mistake and must be reported as one, not crash with KeyError.
    with pytest.raises(ConfigError, match=r"router_settings\.model_group_alias"):
        from_dict({"router_settings": {"model_group_alias": {"x": {"hidden": True}}}})


# --- os.environ/ references and environment_variables -------------------------------------------

def test_env_refs_anywhere_in_the_tree(monkeypatch):
    monkeypatch.setenv("T_KEY", "k1")
    monkeypatch.setenv("T_HDR", "h1")
    monkeypatch.setenv("T_BASE", "https://b.example/v1")
    monkeypatch.setenv("T_MASTER", "sk-m")
    monkeypatch.setenv("T_TIMEOUT", "12")
    s = from_dict({
        "model_list": [deployment(api_key="os.environ/T_KEY", api_base="os.environ/T_BASE",
                                  headers={"X-A": "os.environ/T_HDR", "X-B": "literal"})],
        "litellm_settings": {"something_new": ["os.environ/T_HDR"]},
        "general_settings": {"master_key": "os.environ/T_MASTER"},
    })
    params = s.deployments[0].params
    assert params["api_key"] == "k1"
    assert params["api_base"] == "https://b.example/v1"
    assert params["headers"] == {"X-A": "h1", "X-B": "literal"}
    assert s.litellm_settings["something_new"] == ["h1"]
    assert s.master_key == "sk-m"


def test_env_ref_with_an_empty_value_resolves_to_empty(monkeypatch):
    monkeypatch.setenv("T_EMPTY", "")
    s = from_dict({"model_list": [deployment(api_key="os.environ/T_EMPTY")]})
    assert s.deployments[0].params["api_key"] == ""


def test_only_exact_prefix_is_a_reference(monkeypatch):
    monkeypatch.setenv("T_KEY", "resolved")
    s = from_dict({"model_list": [deployment(api_key=" os.environ/T_KEY",
                                             headers={"X": "prefix os.environ/T_KEY"})]})
    assert s.deployments[0].params["api_key"] == " os.environ/T_KEY"
    assert s.deployments[0].params["headers"] == {"X": "prefix os.environ/T_KEY"}


@pytest.mark.parametrize("raw, path", [
    ({"model_list": [deployment(), deployment(api_key="os.environ/T_MISSING")]},
     "model_list[1].litellm_params.api_key"),
    ({"model_list": [deployment(headers={"X-Team": "os.environ/T_MISSING"})]},
     "model_list[0].litellm_params.headers.X-Team"),
    ({"general_settings": {"master_key": "os.environ/T_MISSING"}}, "general_settings.master_key"),
    ({"litellm_settings": {"callbacks": ["a", "os.environ/T_MISSING"]}}, "litellm_settings.callbacks[1]"),
])
def test_missing_env_var_names_the_path_and_the_variable(raw, path):
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    assert str(info.value) == f"{path}: environment variable T_MISSING is not set"


def test_every_missing_env_var_is_reported():
    raw = {"model_list": [deployment(api_key="os.environ/T_MISSING_A"),
                          deployment(api_key="os.environ/T_MISSING_B")]}
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    lines = str(info.value).splitlines()
    assert lines == ["model_list[0].litellm_params.api_key: environment variable T_MISSING_A is not set",
                     "model_list[1].litellm_params.api_key: environment variable T_MISSING_B is not set"]


def test_environment_variables_are_set_and_usable_by_references(env_sandbox):
    env_sandbox("T_SET_A", "T_SET_N")
    s = from_dict({"environment_variables": {"T_SET_A": "value-a", "T_SET_N": 5},
                   "model_list": [deployment(api_key="os.environ/T_SET_A")]})
    assert os.environ["T_SET_A"] == "value-a"
    assert os.environ["T_SET_N"] == "5"
    assert s.deployments[0].params["api_key"] == "value-a"


def test_environment_variables_not_applied_when_environ_false(env_sandbox):
    env_sandbox("T_SET_X")
    from_dict({"environment_variables": {"T_SET_X": "v"}}, environ=False)
    assert "T_SET_X" not in os.environ


def test_environment_variables_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"^environment_variables: "):
        from_dict({"environment_variables": ["A=1"]})


# --- validation errors name the exact path ------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ({"model_list": [deployment(), deployment(), {"model_name": "x", "litellm_params": {"api_key": "k"}}]},
     "model_list[2].litellm_params.model: required"),
    ({"model_list": [{"litellm_params": {"model": "gpt-4o"}}]}, "model_list[0].model_name: required"),
    ({"model_list": [{"model_name": "x"}]}, "model_list[0].litellm_params: required"),
    ({"model_list": [deployment(max_tokens="10")]}, "model_list[0].litellm_params.max_tokens: "),
    ({"model_list": [deployment(max_tokens=1.5)]}, "model_list[0].litellm_params.max_tokens: "),
    ({"model_list": [deployment(max_tokens=0)]}, "model_list[0].litellm_params.max_tokens: "),
    ({"model_list": [deployment(temperature="hot")]}, "model_list[0].litellm_params.temperature: "),
    ({"model_list": [deployment(timeout=0)]}, "model_list[0].litellm_params.timeout: "),
    ({"model_list": [deployment(timeout="soon")]}, "model_list[0].litellm_params.timeout: "),
    ({"model_list": [deployment(api_key=123)]}, "model_list[0].litellm_params.api_key: "),
    ({"model_list": [deployment(api_version=2024)]}, "model_list[0].litellm_params.api_version: "),
    ({"model_list": [deployment(headers="X-A: b")]}, "model_list[0].litellm_params.headers: "),
    ({"model_list": [deployment(headers={"X-A": 5})]}, "model_list[0].litellm_params.headers.X-A"),
    ({"model_list": [deployment(rpm=-1)]}, "model_list[0].litellm_params.rpm: "),
    ({"model_list": [deployment(model="")]}, "model_list[0].litellm_params.model: "),
    ({"model_list": [{"model_name": "x", "litellm_params": "gpt-4o"}]}, "model_list[0].litellm_params: "),
    ({"model_list": [deployment(), "gpt-4o"]}, "model_list[1]: "),
    ({"model_list": {"model_name": "x"}}, "model_list: "),
    ({"model_list": [{**deployment(), "model_info": "chat"}]}, "model_list[0].model_info: "),
    ({"litellm_settings": ["drop_params"]}, "litellm_settings: "),
    ({"router_settings": "simple-shuffle"}, "router_settings: "),
    ({"general_settings": 1}, "general_settings: "),
])
def test_validation_errors_name_the_exact_path(raw, expected):
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    message = str(info.value)
    assert any(line.startswith(expected) for line in message.splitlines()), message


def test_wrong_type_message_names_the_problem():
    with pytest.raises(ConfigError) as info:
        from_dict({"model_list": [deployment(max_tokens="ten")]})
    assert str(info.value) == "model_list[0].litellm_params.max_tokens: Not a valid integer."


def test_several_errors_are_all_reported_one_per_line():
    raw = {"model_list": [deployment(max_tokens="x"), {"model_name": "y", "litellm_params": {}}]}
    with pytest.raises(ConfigError) as info:
        from_dict(raw)
    lines = str(info.value).splitlines()
    assert "model_list[1].litellm_params.model: required" in lines
    assert any(line.startswith("model_list[0].litellm_params.max_tokens: ") for line in lines)


@pytest.mark.parametrize("raw", [[1, 2], "model_list: []", 5, True])
def test_non_mapping_config(raw):
    with pytest.raises(ConfigError, match="mapping"):
        from_dict(raw)


# --- files ----------------------------------------------------------------------------------------

def test_load_file_non_mapping_names_the_file(tmp_path):
    path = write(tmp_path, "- model_name: x\n- model_name: y\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "mapping" in str(info.value)


@pytest.mark.parametrize("text, line", [
    ("model_list:\n  - model_name: x\n    litellm_params: {model: gpt-4o\n", 4),
    ("model_list:\n  - model_name: x\n   litellm_params:\n", 3),
    ("general_settings:\n  master_key: \"unterminated\n", 3),
    ("a: 1\nb: [1, 2\nc: 3\n", 3),
    ("\tmodel_list: []\n", 1),
])
def test_invalid_yaml_reports_file_and_line(tmp_path, text, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid YAML")
    assert f"line {line}," in message


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "model_list: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_file(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == f"{path}: cannot read config file: No such file or directory"


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read config file: ")


def test_file_that_is_not_utf8_is_a_config_error(tmp_path):
    # A Latin-1 "é" in a comment: the operator needs a path-precise ConfigError, not a traceback.
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"# caf\xe9\nmodel_list: []\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}: ")


def test_validation_error_from_a_file_keeps_the_key_path(tmp_path):
    path = write(tmp_path, """\
        model_list:
          - model_name: a
            litellm_params: {model: gpt-4o}
          - model_name: b
            litellm_params: {model: gpt-4o}
          - model_name: c
            litellm_params:
              api_key: sk-x
    """)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert str(info.value) == "model_list[2].litellm_params.model: required"


# --- planned and unknown keys warn, never fail ----------------------------------------------------

@pytest.mark.parametrize("section, key, value, kind", [
    ("litellm_settings", "max_budget", 10, "not implemented"),
    ("litellm_settings", "service_callback", ["prometheus_system"], "not implemented"),
    ("router_settings", "retry_policy", {"TimeoutErrorRetries": 2}, "not implemented"),
    ("router_settings", "enable_pre_call_checks", True, "not implemented"),
    ("general_settings", "proxy_batch_write_at", 10, "not implemented"),
    ("general_settings", "alerting", ["slack"], "not implemented"),
    ("litellm_settings", "frobnicate", 1, "not a setting"),
    ("router_settings", "frobnicate", 1, "not a setting"),
    ("general_settings", "frobnicate", 1, "not a setting"),
])
def test_planned_and_unknown_keys_load_and_warn(gateway_logs, section, key, value, kind):
    s = from_dict({section: {key: value}})
    assert getattr(s, section)[key] == value
    warnings = [r for r in gateway_logs.records
                if r.levelno == logging.WARNING and f"{section}.{key}" in r.getMessage()]
    assert len(warnings) == 1, gateway_logs.text
    assert kind in warnings[0].getMessage()


def test_unknown_top_level_key_warns(gateway_logs):
    from_dict({"include": ["other.yaml"], "model_list": []})
    assert any("include" in r.getMessage() and r.levelno == logging.WARNING for r in gateway_logs.records)


def test_implemented_keys_do_not_warn(gateway_logs, env_sandbox):
    env_sandbox("T_IMPL")
    from_dict({"model_list": [deployment()],
               "litellm_settings": {"drop_params": True, "set_verbose": False, "request_timeout": 5},
               "router_settings": {"model_group_alias": {"a": "gpt"}},
               "general_settings": {"master_key": "sk-1", "max_request_size_mb": 1},
               "environment_variables": {"T_IMPL": "1"}})
    assert [r for r in gateway_logs.records if r.levelno >= logging.WARNING] == []


def test_secret_values_never_appear_in_warnings(gateway_logs):
    from_dict({"general_settings": {"database_url": "postgresql://user:hunter2@db/x"}})
    assert "hunter2" not in gateway_logs.text


# --- demo_settings / from_env ---------------------------------------------------------------------

def test_demo_settings():
    s = config.demo_settings()
    assert [(d.model_name, d.model) for d in s.deployments] == [("demo", "demo/echo")]
    assert s.master_key is None
    assert s.catch_all is False


def test_demo_settings_respects_gateway_master_key(monkeypatch):
    monkeypatch.setenv("GATEWAY_MASTER_KEY", "sk-env")
    assert config.demo_settings().master_key == "sk-env"


def test_from_env_without_gateway_config_is_the_demo():
    s = config.from_env()
    assert [d.model for d in s.deployments] == ["demo/echo"]
    assert s.source == config.demo_settings().source


def test_from_env_with_gateway_config(tmp_path, monkeypatch):
    path = write(tmp_path, "model_list:\n  - model_name: m\n    litellm_params: {model: gpt-4o-mini}\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    s = config.from_env()
    assert [(d.model_name, d.model) for d in s.deployments] == [("m", "gpt-4o-mini")]
    assert s.source == str(path)


def test_from_env_with_a_bad_gateway_config(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml: cannot read config file"):
        config.from_env()


def test_settings_are_immutable():
    s = config.demo_settings()
    with pytest.raises(AttributeError):
        s.master_key = "x"
