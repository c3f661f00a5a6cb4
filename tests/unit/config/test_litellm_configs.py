"""Config files written the way LiteLLM proxy users write them load unchanged and mean the same."""

import textwrap

import pytest

from gateway.routing.router import Router
from gateway.config.settings import load_file
from gateway.wire.transport import Transport

# Forms seen in LiteLLM proxy configs: rpm/tpm beside litellm_params (older form) or inside it,
# YAML 1.1 numbers with underscores, a provider prefix this gateway does not serve, an
# OpenAI-compatible service without a key, and Redis settings given as environment_variables.
LOAD_BALANCER = """
litellm_settings:
  drop_params: True

model_list:
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: gpt-3.5-turbo
      api_key: sk-first-0000
    tpm: 20000
    rpm: 3
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: azure/gpt-35-eu
      api_base: https://example-eu.openai.azure.com/
      api_key: azure-key-0000
      tpm: 80_000
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openrouter/openai/gpt-3.5-turbo
  - model_name: mistral-7b-instruct
    litellm_params:
      model: mistralai/mistral-7b-instruct

environment_variables:
  REDIS_HOST: 127.0.0.1
  REDIS_PORT: "1"
"""


@pytest.fixture
def router(tmp_path, monkeypatch):
    for name in ("REDIS_HOST", "REDIS_PORT"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(LOAD_BALANCER))
    settings = load_file(path)
    yield Router(settings, Transport())
    for name in ("REDIS_HOST", "REDIS_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_entry_level_and_param_level_limits_both_count(router):
    group = router.groups["gpt-3.5-turbo"]
    first, azure, openrouter = group.deployments
    assert (first.rpm, first.tpm) == (3, 20000)
    assert azure.tpm == 80000
    assert openrouter.provider.name == "openrouter"
    assert group.uses_limits


def test_unknown_provider_is_skipped_not_fatal(router):
    assert "mistral-7b-instruct" not in router.groups
    assert router.names == ["gpt-3.5-turbo"]


def test_redis_from_environment_variables_falls_back_when_unreachable(router):
    assert router.state.name == "redis"
    assert router.state.status() == "redis unreachable (using local state)"
    allowed, _ = router.state.admit("probe", 1)
    assert allowed
