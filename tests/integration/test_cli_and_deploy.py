"""The ways users start and poke the gateway: CLI flags, --test, --health, wsgi.py, Procfile, conf/."""

import json
import subprocess
import sys

import openai
import pytest
import yaml

from tests.integration.conftest import REPO
from tests.integration.conftest import free_port
from tests.integration.conftest import gateway_command

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello there"}]


def run_cli(*args, env=None, timeout=60):
    """Run the gateway CLI to completion; returns the CompletedProcess."""
    import os
    return subprocess.run(gateway_command() + list(args), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, **(env or {})})


def test_model_flag_routes_every_name_to_one_model(start_gateway, fake_openai):
    gw = start_gateway(args=["--model", "gpt-3.5-turbo", "--temperature", "0.1", "--max_tokens", "50"],
                       env={"OPENAI_API_KEY": fake_openai.api_key, "OPENAI_API_BASE": fake_openai.url + "/v1"})
    c = openai.OpenAI(base_url=gw.url, api_key="anything", max_retries=0)
    for name in ("gpt-3.5-turbo", "gpt-4", "whatever"):
        assert c.chat.completions.create(model=name, messages=HELLO).choices[0].message.content
    sent = fake_openai.requests[-1]
    assert sent["json"]["model"] == "gpt-3.5-turbo"
    assert (sent["json"]["temperature"], sent["json"]["max_tokens"]) == (0.1, 50)
    assert sent["headers"]["authorization"] == f"Bearer {fake_openai.api_key}"
    assert [m.id for m in c.models.list()] == ["gpt-3.5-turbo"]


def test_model_flag_openai_compatible_server_with_alias(start_gateway, fake_openai):
    fake_openai.api_key, saved = None, fake_openai.api_key  # a local server started without a key
    try:
        gw = start_gateway(args=["--model", "openai/my-model", "--api_base", fake_openai.url + "/v1",
                                 "--alias", "local"], env={"OPENAI_API_KEY": "sk-must-not-leak-0000"})
        c = openai.OpenAI(base_url=gw.url, api_key="anything", max_retries=0)
        assert c.chat.completions.create(model="local", messages=HELLO).choices
    finally:
        fake_openai.api_key = saved
    sent = fake_openai.requests[-1]
    assert sent["json"]["model"] == "my-model"
    # OPENAI_API_KEY belongs to api.openai.com; it is not sent to a server named by --api_base.
    assert "authorization" not in sent["headers"]
    assert [m.id for m in c.models.list()] == ["local"]


def test_model_flag_azure(start_gateway, fake_openai):
    gw = start_gateway(args=["--model", "azure/my-deployment", "--api_base", fake_openai.url,
                             "--api_version", "2023-08-01"], env={"AZURE_API_KEY": fake_openai.azure_key})
    c = openai.OpenAI(base_url=gw.url, api_key="anything", max_retries=0)
    assert c.chat.completions.create(model="gpt-4", messages=HELLO).choices
    sent = fake_openai.requests[-1]
    assert sent["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert sent["query"]["api-version"] in ("2023-08-01", ["2023-08-01"])


def test_cli_test_and_health_against_running_gateway(start_gateway, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
        "general_settings": {"master_key": "sk-cli-master-1234567890"}}))
    gw = start_gateway(config)
    port = str(gw.port)
    ok = run_cli("--test", "--host", "127.0.0.1", "--port", port, "--config", str(config))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "chat (" in ok.stdout and "stream (first chunk" in ok.stdout and "You said:" in ok.stdout
    by_env = run_cli("--test", "--host", "127.0.0.1", "--port", port,
                     env={"GATEWAY_MASTER_KEY": "sk-cli-master-1234567890"})
    assert by_env.returncode == 0, by_env.stdout
    no_key = run_cli("--test", "--host", "127.0.0.1", "--port", port, env={"GATEWAY_MASTER_KEY": ""})
    assert no_key.returncode == 1 and "401" in no_key.stdout
    health = run_cli("--health", "--host", "127.0.0.1", "--port", port, "--config", str(config))
    assert health.returncode == 0, health.stdout
    assert "1 healthy, 0 unhealthy" in health.stdout and "demo/echo" in health.stdout
    assert "sk-cli-master" not in ok.stdout + health.stdout


def test_cli_test_and_health_fail_when_nothing_runs():
    port = str(free_port())
    assert run_cli("--test", "--host", "127.0.0.1", "--port", port).returncode == 1
    health = run_cli("--health", "--host", "127.0.0.1", "--port", port)
    assert health.returncode == 1 and "unreachable" in health.stdout


def test_invalid_config_exits_2_naming_the_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model_list": [
        {"model_name": "a", "litellm_params": {"model": "demo/echo"}},
        {"model_name": "b", "litellm_params": {"model": "demo/echo"}},
        {"model_name": "c", "litellm_params": {"api_base": "http://x"}}]}))
    result = run_cli("--config", str(bad), "--port", str(free_port()))
    assert result.returncode == 2
    assert "model_list[2].litellm_params.model: required" in result.stderr
    azure = tmp_path / "azure.yaml"
    azure.write_text(yaml.safe_dump({"model_list": [{"model_name": "a", "litellm_params": {
        "model": "azure/dep", "api_key": "k"}}]}))
    result = run_cli("--config", str(azure), "--port", str(free_port()), env={"AZURE_API_BASE": ""})
    assert result.returncode == 2 and "model_list[0].litellm_params.api_base" in result.stderr


def test_help_documents_every_flag():
    out = run_cli("--help").stdout
    for flag in ("--host", "--port", "--num_workers", "--model", "--alias", "--api_base", "--api_version",
                 "--config", "--debug", "--temperature", "--max_tokens", "--request_timeout", "--drop_params",
                 "--add_function_to_prompt", "--telemetry", "--test", "--health", "--version"):
        assert flag in out, flag


def test_plain_gunicorn_wsgi_with_gateway_config(start_gateway, fake_openai, tmp_path):
    from tests.integration.conftest import openai_config
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(openai_config(fake_openai)))
    gw = start_gateway(command=[sys.executable, "-m", "gunicorn", "wsgi:app", "-k", "gevent",
                                "--bind", "127.0.0.1:{port}", "--workers", "2"],
                       env={"GATEWAY_CONFIG": str(config)})
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    assert c.chat.completions.create(model="gpt-3.5-turbo", messages=HELLO).choices
    assert "monkey" not in gw.log().lower(), gw.log()  # no late monkey-patching warnings


def test_procfile_command_serves_demo_on_port(start_gateway):
    web = (REPO / "Procfile").read_text().split("web:", 1)[1].strip().replace("$PORT", "{port}").split()
    assert web[0] == "gunicorn" and "gevent" in web
    command = [sys.executable, "-m", "gunicorn"] + web[1:]
    gw = start_gateway(command=command, env={"GATEWAY_CONFIG": ""})
    c = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    assert c.chat.completions.create(model="demo", messages=HELLO).choices


def test_litellm_style_config_from_conf(start_gateway, fake_openai):
    env = {"OPENAI_API_KEY": fake_openai.api_key, "OPENAI_API_BASE": fake_openai.url + "/v1",
           "AZURE_API_BASE": fake_openai.url, "AZURE_API_KEY": fake_openai.azure_key,
           "VLLM_API_BASE": fake_openai.url + "/v1", "GATEWAY_MASTER_KEY": "sk-conf-master-123456"}
    fake_openai.api_key, saved = None, fake_openai.api_key
    try:
        gw = start_gateway(REPO / "conf" / "multi-model.yaml", env=env)
        c = openai.OpenAI(base_url=gw.url, api_key="sk-conf-master-123456", max_retries=0)
        names = [m.id for m in c.models.list()]
        assert names == ["gpt-3.5-turbo", "gpt-4o", "local-llama", "text-embedding-3-small", "demo", "gpt-4",
                         "openai/*"]
        for name in ("gpt-3.5-turbo", "gpt-4o", "gpt-4", "local-llama", "demo", "openai/gpt-4o-mini"):
            assert c.chat.completions.create(model=name, messages=HELLO).choices[0].message.content
        assert c.embeddings.create(model="text-embedding-3-small", input="x").data
    finally:
        fake_openai.api_key = saved
    assert any(r["json"] and r["json"].get("model") == "gpt-4o-mini" for r in fake_openai.requests)  # the wildcard
    local = [r for r in fake_openai.requests if r["json"] and r["json"].get("model") ==
             "meta-llama/Meta-Llama-3-8B-Instruct"][-1]
    assert (local["json"]["temperature"], local["json"]["max_tokens"]) == (0.2, 512)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.url, api_key="wrong", max_retries=0).models.list()


# The seed's curl examples, verbatim but for the port. They send JSON with trailing commas and, for
# `--data` without a header, curl's form Content-Type.
CURL_EXAMPLES = [
    ("""curl --location 'http://0.0.0.0:PORT/chat/completions' \\
--header 'Content-Type: application/json' \\
--data ' {
      "model": "gpt-3.5-turbo",
      "messages": [
        {
          "role": "user",
          "content": "what llm are you"
        }
      ],
    }
'""", "chat.completion"),
    ("""curl http://0.0.0.0:PORT/v1/chat/completions \\
  -H "Content-Type: application/json" \\
  -d '{
     "model": "gpt-3.5-turbo",
     "messages": [{"role": "user", "content": "Say this is a test!"}],
     "temperature": 0.7
   }'""", "chat.completion"),
    ("""curl --location 'http://0.0.0.0:PORT/chat/completions' \\
--data ' {
"model": "gpt-3.5-turbo",
"messages": [{"role": "user", "content": "what llm are you"}]
}'""", "chat.completion"),
    ("""curl --location 'http://0.0.0.0:PORT/embeddings' \\
  --header 'Content-Type: application/json' \\
  --data ' {
  "model": "gpt-3.5-turbo",
  "input": ["write a litellm poem"]
  }'""", "list"),
    ("""curl http://0.0.0.0:PORT/v1/models""", "list"),
]


@pytest.mark.parametrize("example, obj", CURL_EXAMPLES)
def test_seed_curl_examples(start_gateway, example, obj):
    gw = start_gateway(args=["--model", "demo/echo", "--alias", "gpt-3.5-turbo"])
    command = example.replace("PORT", str(gw.port)).replace("0.0.0.0", "127.0.0.1")
    out = subprocess.run(["bash", "-c", command + " --silent --show-error"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["object"] == obj, out.stdout


def _substrings(secret, size=8):
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


def test_debug_log_and_answers_never_show_keys(start_gateway, fake_openai):
    """--debug logs every upstream call as curl; no 8-character piece of any key may appear."""
    master = "sk-Mq7x2Vb9LmZr4Tq8"
    upstream = "sk-Hk3Rt8WcYpJ5vN2d"
    azure = "Jn4Ds6FgQeK8wP3z"
    fake_openai.api_key, fake_openai.azure_key = upstream, azure
    try:
        models = [{"model_name": name, "litellm_params": {
            "model": f"openai/{name}", "api_base": fake_openai.url + "/v1", "api_key": upstream}}
            for name in ("gpt-3.5-turbo", "fail-500", "stream-error")]
        models.append({"model_name": "wrong-key", "litellm_params": {
            "model": "openai/gpt-3.5-turbo", "api_base": fake_openai.url + "/v1",
            "api_key": upstream[:-4] + "XXXX"}})
        models.append({"model_name": "azure", "litellm_params": {
            "model": "azure/dep", "api_base": fake_openai.url, "api_key": azure,
            "headers": {"X-Custom-Api-Key": "sk-Pw5Nb7UxG2cV9h"}}})
        gw = start_gateway({"model_list": models, "general_settings": {"master_key": master}},
                           args=["--debug"])
        c = openai.OpenAI(base_url=gw.url, api_key=master, max_retries=0)
        bodies = []
        for name in ("gpt-3.5-turbo", "azure"):
            bodies.append(c.chat.completions.create(model=name, messages=HELLO).model_dump_json())
            bodies.append("".join(ch.model_dump_json() for ch in c.chat.completions.create(
                model=name, messages=HELLO, stream=True)))
        for name in ("fail-500", "wrong-key", "stream-error"):
            try:
                for _ in c.chat.completions.create(model=name, messages=HELLO, stream=name == "stream-error"):
                    pass
            except openai.APIError as exc:
                bodies.append(str(exc))
        wrong = openai.OpenAI(base_url=gw.url, api_key=master[:-2] + "zz", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            wrong.models.list()
        bodies.append(str(info.value))
        bodies.append(run_cli("--health", "--host", "127.0.0.1", "--port", str(gw.port)).stdout)
    finally:
        fake_openai.api_key, fake_openai.azure_key = "sk-fake-upstream", "azure-fake-key"
    log = gw.log()
    assert "curl -X POST" in log, "debug logging is on"
    seen = log + "\n".join(bodies)
    for secret in (master, upstream, azure, "sk-Pw5Nb7UxG2cV9h"):
        leaked = [piece for piece in _substrings(secret) if piece in seen]
        assert not leaked, (secret, leaked[:3])
