"""The public view of a deployment (gateway/config/public.py) and DeploymentConfig.id: canary secrets
in api_key, aws_* params, headers, URLs and `os.environ/` values never come out; ids are stable,
differ per deployment and are not made from keys."""

import json
import secrets

import pytest

from gateway.config.public import is_secret_name
from gateway.config.public import public_config
from gateway.config.settings import from_dict


def canary(prefix="cnry"):
    return f"{prefix}-{secrets.token_hex(12)}"


def load(entries, **top):
    return from_dict({"model_list": entries, **top}, source="test_public", environ=False)


def shown(deployment):
    """Everything the view lets out for a deployment, as text (what an answer would carry)."""
    return json.dumps(public_config(deployment.params, deployment.model_info, deployment.env_refs))


def test_credential_params_and_secret_names_are_left_out():
    c = {name: canary() for name in ("key", "aws_secret", "aws_id", "aws_session", "ad", "vertex", "pw", "nested")}
    deployment = load([{"model_name": "g", "litellm_params": {
        "model": "openai/gpt-4o", "api_key": c["key"], "aws_secret_access_key": c["aws_secret"],
        "aws_access_key_id": c["aws_id"], "aws_session_token": c["aws_session"], "azure_ad_token": c["ad"],
        "vertex_credentials": {"private_key": c["vertex"]}, "proxy_password": c["pw"],
        "extra_body": {"inner": {"client_secret": c["nested"]}, "keep": 1},
        "max_tokens": 100, "max_completion_tokens": 50, "input_cost_per_token": 1e-6,
        "output_cost_per_token": 2e-6, "temperature": 0.2, "aws_region_name": "eu-west-1"}}]).deployments[0]
    params, info = public_config(deployment.params, deployment.model_info, deployment.env_refs)
    text = json.dumps([params, info])
    for value in c.values():
        assert value not in text
    # Token counts and per-token prices are not tokens: they stay, as do ordinary params.
    assert params == {"model": "openai/gpt-4o", "extra_body": {"inner": {}, "keep": 1}, "max_tokens": 100,
                      "max_completion_tokens": 50, "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                      "temperature": 0.2, "aws_region_name": "eu-west-1"}


@pytest.mark.parametrize("name", ["api_key", "API_KEY", "aws_access_key_id", "aws_session_token",
                                  "azure_ad_token", "vertex_credentials", "client_secret", "db_password",
                                  "refresh_token", "x_auth", "litellm_credential_name", "token"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["model", "max_tokens", "max_input_tokens", "max_output_tokens",
                                  "input_cost_per_token", "output_cost_per_token",
                                  "output_cost_per_token_above_128k_tokens", "api_base", "api_version", "rpm"])
def test_public_names(name):
    assert not is_secret_name(name)


def test_every_value_from_an_environment_reference_is_left_out(monkeypatch):
    values = {"CNRY_KEY": canary("sk"), "CNRY_BASE": "http://" + canary("host") + ":8000/v1",
              "CNRY_VERSION": canary("ver"), "CNRY_INFO": canary("info"), "CNRY_LIST": canary("item")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    deployment = load([{"model_name": "g", "litellm_params": {
        "model": "azure/dep", "api_key": "os.environ/CNRY_KEY", "api_base": "os.environ/CNRY_BASE",
        "api_version": "os.environ/CNRY_VERSION", "stop": ["literal", "os.environ/CNRY_LIST"]},
        "model_info": {"description": "os.environ/CNRY_INFO", "base_model": "gpt-4"}}]).deployments[0]
    assert deployment.params["api_base"] == values["CNRY_BASE"]  # resolved for calls...
    assert deployment.env_refs == {("litellm_params", "api_key"), ("litellm_params", "api_base"),
                                   ("litellm_params", "api_version"), ("litellm_params", "stop", 1),
                                   ("model_info", "description")}
    text = shown(deployment)  # ...and never shown
    for value in values.values():
        assert value not in text
    params, info = public_config(deployment.params, deployment.model_info, deployment.env_refs)
    assert params == {"model": "azure/dep", "stop": ["literal"]} and info == {"base_model": "gpt-4"}


def test_header_values_url_credentials_and_any_text_holding_a_secret_are_left_out():
    key, header, password = canary("sk"), canary("hdr"), canary("pw")
    deployment = load([{"model_name": "g", "litellm_params": {
        "model": "openai/m", "api_key": key, "headers": {"X-Api-Token": header, "X-Team": "research"},
        "extra_headers": {"X-Other": header},
        "api_base": f"http://user:{password}@127.0.0.1:9/v1?api-key={canary('q')}&n=1",
        "user": f"prefix-{key}"}}]).deployments[0]
    params, _info = public_config(deployment.params, deployment.model_info, deployment.env_refs)
    text = json.dumps(params)
    for value in (key, header, password):
        assert value not in text
    assert "headers" not in params and "extra_headers" not in params and "user" not in params
    assert params["api_base"] == "http://127.0.0.1:9/v1?api-key=****&n=1"


def test_the_view_never_changes_the_configuration():
    key = canary("sk")
    deployment = load([{"model_name": "g", "litellm_params": {"model": "openai/m", "api_key": key,
                                                               "headers": {"X-A": "b"}}}]).deployments[0]
    public_config(deployment.params, deployment.model_info, deployment.env_refs)
    assert deployment.params["api_key"] == key and deployment.params["headers"] == {"X-A": "b"}


# ---- ids ---------------------------------------------------------------------------------------------

def entry(name="g", key=None, **params):
    return {"model_name": name, "litellm_params": {"model": "openai/gpt-4o", "api_key": key or canary("sk"),
                                                   **params}}


def test_ids_are_stable_across_loads_and_differ_per_deployment():
    entries = [entry("a"), entry("a"), entry("b"), entry("a", api_base="http://127.0.0.1:1/v1")]
    first = [d.id for d in load(entries).deployments]
    again = [d.id for d in load(entries).deployments]
    assert first == again
    assert len(set(first)) == len(first)  # the two `a` that differ only by key too
    assert all(len(i) == 64 and int(i, 16) >= 0 for i in first)  # sha256 hex


def test_a_key_is_never_part_of_an_id(monkeypatch):
    """Change only the keys (literal and from the environment): the ids stay as they were, so no key
    went into the hash."""
    monkeypatch.setenv("CNRY_ID_KEY", canary("sk"))
    entries = [entry("a", key="os.environ/CNRY_ID_KEY"), entry("b", aws_secret_access_key=canary("aws"),
                                                               headers={"X-Key": canary("h")})]
    before = [d.id for d in load(entries).deployments]
    monkeypatch.setenv("CNRY_ID_KEY", canary("sk"))
    entries[1]["litellm_params"].update(api_key=canary("sk"), aws_secret_access_key=canary("aws"),
                                        headers={"X-Key": canary("h")})
    assert [d.id for d in load(entries).deployments] == before
    # A public param does change it.
    entries[1]["litellm_params"]["temperature"] = 0.5
    assert [d.id for d in load(entries).deployments][1] != before[1]


def test_a_configured_model_info_id_wins():
    deployments = load([{**entry("a"), "model_info": {"id": "my-id"}}, {**entry("b"), "model_info": {"id": 7}},
                        {**entry("c"), "model_info": {"id": ""}}]).deployments
    assert [d.id for d in deployments[:2]] == ["my-id", "7"]
    assert len(deployments[2].id) == 64


def test_the_balancer_uses_the_same_id():
    from gateway.routing.router import Router
    from gateway.wire.transport import Transport
    settings = load([entry("a", api_base="http://127.0.0.1:1/v1"), {**entry("b", api_base="http://127.0.0.1:1/v1"),
                                                                     "model_info": {"id": "pinned"}}])
    router = Router(settings, Transport())
    assert [d.id for d in router.deployments()] == [c.id for c in settings.deployments]
    assert router.groups["b"].deployments[0].id == "pinned"

