"""The `gateway` command: flags and defaults, flags -> Settings, exit codes and messages."""

import pytest

from gateway import __version__
from gateway import cli
from gateway import probe
from gateway import server
from gateway.config.settings import ConfigError

FLAGS = ["--host", "--port", "--num_workers", "--model", "--alias", "--api_base", "--api_version",
         "--config", "--debug", "--detailed_debug", "--temperature", "--max_tokens", "--request_timeout",
         "--drop_params", "--add_function_to_prompt", "--telemetry", "--test", "--health", "--version"]


@pytest.fixture
def served(monkeypatch):
    """Replace gunicorn start-up: record what main() would serve, return 0."""
    calls = []

    def fake_serve(settings, host, port, workers):
        calls.append({"settings": settings, "host": host, "port": port, "workers": workers})
        return 0

    monkeypatch.setattr(server, "serve", fake_serve)
    monkeypatch.setattr(server, "patch", lambda: None)  # never monkey-patch the test process
    return calls


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_defaults():
    args = parse()
    assert args.host == "0.0.0.0"
    assert args.port == 8000
    assert args.num_workers == 1
    assert args.request_timeout is None
    assert args.model is None and args.config is None
    assert args.debug is False and args.drop_params is False
    assert args.telemetry is True


def test_default_request_timeout_means_600_in_settings():
    assert cli.settings_from_args(parse()).request_timeout == 600.0
    assert cli.settings_from_args(parse("--model", "gpt-4o")).request_timeout == 600.0


def test_help_mentions_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in out, flag
    assert "-m" in out and "-c" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"gateway {__version__}"


@pytest.mark.parametrize("argv", [["--port", "abc"], ["--num_workers", "x"], ["--telemetry", "maybe"],
                                  ["--temperature", "hot"], ["--no-such-flag"]])
def test_bad_flag_values_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("value, expected", [("false", False), ("True", True), ("0", False), ("on", True)])
def test_telemetry_values(value, expected):
    assert parse("--telemetry", value).telemetry is expected


def test_model_flags_build_one_catch_all_deployment():
    args = parse("--model", "gpt-3.5-turbo", "--alias", "x", "--api_base", "http://localhost:9/v1",
                 "--temperature", "0.2", "--max_tokens", "10", "--drop_params", "--debug")
    s = cli.settings_from_args(args)
    assert s.catch_all is True
    assert len(s.deployments) == 1
    d = s.deployments[0]
    assert d.model_name == "x"
    assert d.params == {"model": "gpt-3.5-turbo", "api_base": "http://localhost:9/v1",
                        "temperature": 0.2, "max_tokens": 10}
    assert s.drop_params is True
    assert s.debug is True
    assert s.request_timeout == 600.0


def test_model_alone_uses_the_model_as_its_name():
    s = cli.settings_from_args(parse("-m", "demo/echo"))
    assert [(d.model_name, d.params) for d in s.deployments] == [("demo/echo", {"model": "demo/echo"})]
    assert s.catch_all is True
    assert s.debug is False and s.drop_params is False


@pytest.mark.parametrize("flag", ["--debug", "--detailed_debug"])
def test_debug_flags(flag):
    assert cli.settings_from_args(parse("--model", "gpt-4o", flag)).debug is True
    assert cli.settings_from_args(parse(flag)).debug is True


def test_model_with_request_timeout_and_api_version():
    s = cli.settings_from_args(parse("--model", "azure/dep", "--api_base", "https://r.openai.azure.com",
                                     "--api_version", "2024-02-01", "--request_timeout", "12.5"))
    assert s.request_timeout == 12.5
    assert s.deployments[0].params["api_version"] == "2024-02-01"


def test_model_and_config_together_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_list: []\n")
    with pytest.raises(ConfigError, match="--model"):
        cli.settings_from_args(parse("--model", "gpt-4o", "--config", str(path)))


def test_config_flag_loads_the_file_and_flags_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_list:\n  - model_name: m\n    litellm_params: {model: demo/echo}\n"
                    "litellm_settings: {request_timeout: 30}\n")
    s = cli.settings_from_args(parse("--config", str(path)))
    assert s.source == str(path)
    assert s.catch_all is False
    assert s.request_timeout == 30.0
    assert s.debug is False
    s = cli.settings_from_args(parse("-c", str(path), "--request_timeout", "5", "--debug", "--drop_params"))
    assert (s.request_timeout, s.debug, s.drop_params) == (5.0, True, True)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_request_timeout_must_be_positive(value):
    with pytest.raises(ConfigError, match="request_timeout"):
        cli.settings_from_args(parse("--request_timeout", value))


def test_no_model_no_config_uses_gateway_config(tmp_path, monkeypatch):
    path = tmp_path / "env.yaml"
    path.write_text("model_list:\n  - model_name: from-env\n    litellm_params: {model: demo/echo}\n")
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    assert [d.model_name for d in cli.settings_from_args(parse()).deployments] == ["from-env"]


def test_no_model_no_config_no_env_is_the_demo():
    assert [d.model for d in cli.settings_from_args(parse()).deployments] == ["demo/echo"]


# --- main(): exit codes and messages ---------------------------------------------------------------

BAD_CONFIG = """\
model_list:
  - model_name: a
    litellm_params: {model: demo/echo}
  - model_name: b
    litellm_params: {model: demo/echo}
  - model_name: c
    litellm_params:
      api_key: sk-x
"""


def test_main_bad_config_exits_2_with_the_path(tmp_path, capsys, served):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    assert cli.main(["--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "model_list[2].litellm_params.model: required" in captured.err
    assert captured.err.startswith("gateway: config error:")
    assert "Traceback" not in captured.err
    assert served == []


@pytest.mark.parametrize("text, fragment", [
    ("model_list: [\n", "invalid YAML (line 2"),
    ("- a\n", "mapping"),
    ("model_list:\n  - model_name: az\n    litellm_params: {model: azure/dep, api_key: k}\n",
     "model_list[0].litellm_params.api_base"),
    ("model_list:\n  - model_name: x\n    litellm_params: {model: openai/}\n",
     "model_list[0].litellm_params.model"),
    ("general_settings: {master_key: os.environ/T_CLI_MISSING}\n",
     "general_settings.master_key: environment variable T_CLI_MISSING is not set"),
])
def test_main_config_errors(tmp_path, capsys, served, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli.main(["--config", str(path)]) == 2
    assert fragment in capsys.readouterr().err
    assert served == []


def test_main_missing_config_file(tmp_path, capsys, served):
    path = tmp_path / "nope.yaml"
    assert cli.main(["-c", str(path)]) == 2
    assert f"{path}: cannot read config file" in capsys.readouterr().err


def test_main_model_and_config(tmp_path, capsys, served):
    path = tmp_path / "c.yaml"
    path.write_text("model_list: []\n")
    assert cli.main(["--model", "gpt-4o", "--config", str(path)]) == 2
    assert "--model" in capsys.readouterr().err


def test_main_unsupported_provider_is_served_without_it(tmp_path, served):
    # The router warns and skips it; one bad entry does not stop the rest of the config.
    path = tmp_path / "c.yaml"
    path.write_text("model_list:\n  - model_name: c\n    litellm_params: {model: nosuchprovider/claude-3}\n"
                    "  - model_name: d\n    litellm_params: {model: demo/echo}\n")
    assert cli.main(["--config", str(path)]) == 0
    assert len(served) == 1


def test_main_serves_with_host_port_workers(served):
    assert cli.main(["--model", "demo/echo", "--host", "127.0.0.1", "--port", "9999",
                     "--num_workers", "3"]) == 0
    (call,) = served
    assert (call["host"], call["port"], call["workers"]) == ("127.0.0.1", 9999, 3)
    assert call["settings"].catch_all is True


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_main_num_workers_must_be_positive(capsys, served, workers):
    assert cli.main(["--num_workers", workers]) == 2
    assert "--num_workers" in capsys.readouterr().err
    assert served == []


@pytest.mark.parametrize("flag, runner", [("--test", "run_test"), ("--health", "run_health")])
def test_main_test_and_health_call_the_probe(monkeypatch, flag, runner):
    calls = []
    monkeypatch.setattr(probe, runner, lambda base, key: calls.append((base, key)) or 7)
    monkeypatch.setenv("GATEWAY_MASTER_KEY", "sk-probe")
    assert cli.main([flag, "--host", "::1", "--port", "1234"]) == 7
    assert calls == [("http://[::1]:1234", "sk-probe")]


def test_main_probe_key_from_config(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("general_settings: {master_key: sk-from-file}\n")
    calls = []
    monkeypatch.setattr(probe, "run_health", lambda base, key: calls.append(key) or 0)
    assert cli.main(["--health", "--config", str(path)]) == 0
    assert calls == ["sk-from-file"]


def test_main_probe_with_bad_config_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(probe, "run_health", lambda base, key: pytest.fail("probe must not run"))
    path = tmp_path / "c.yaml"
    path.write_text("general_settings: {master_key: os.environ/T_CLI_MISSING}\n")
    assert cli.main(["--health", "--config", str(path)]) == 2
    assert "T_CLI_MISSING" in capsys.readouterr().err
