"""Encryption at rest (gateway/infra/secrets.py): which values are secrets, the round trip, another
salt key, and where the salt key comes from."""

import logging

import pytest

from gateway.infra import secrets
from gateway.infra.secrets import SecretBox
from gateway.infra.secrets import SecretError


@pytest.mark.parametrize("name, value, secret", [
    ("api_key", "sk-x", True), ("aws_access_key_id", "AKIA", True), ("vertex_credentials", {"a": 1}, True),
    ("azure_ad_token", "t", True), ("my_password", "p", True), ("extra_headers", {"X": "y"}, True),
    ("api_base", "https://user:pw@host", True), ("api_base", "https://host/v1", False),
    ("max_tokens", 100, False), ("input_cost_per_token", 0.1, False), ("model", "openai/gpt-4o", False),
    ("api_key", None, False), ("rpm", 5, False),
])
def test_which_values_are_secret(name, value, secret):
    assert secrets.is_secret(name, value) is secret


def test_sealed_params_open_again_and_hold_no_clear_value():
    box = SecretBox("salt-1")
    params = {"model": "openai/x", "api_key": "sk-canary-123", "vertex_credentials": {"k": "v-canary"},
              "max_tokens": 5}
    sealed = box.seal(params)
    assert sealed["model"] == "openai/x" and sealed["max_tokens"] == 5
    assert "canary" not in repr(sealed) and secrets.is_sealed(sealed["api_key"])
    assert box.open(sealed) == params
    with pytest.raises(SecretError) as info:
        SecretBox("salt-2").open(sealed)
    assert "canary" not in str(info.value)


def test_the_salt_key_comes_from_gateway_then_litellm_then_the_master_key(caplog, monkeypatch):
    monkeypatch.setattr(secrets, "_warned", set())
    assert secrets.salt_key("m", {"GATEWAY_SALT_KEY": "g", "LITELLM_SALT_KEY": "l"}) == "g"
    assert secrets.salt_key("m", {"LITELLM_SALT_KEY": "l"}) == "l"
    caplog.set_level(logging.WARNING, logger="gateway.infra.secrets")
    assert secrets.salt_key("m", {}) == "m" and secrets.salt_key("m", {}) == "m"
    assert len([r for r in caplog.records if "GATEWAY_SALT_KEY" in r.getMessage()]) == 1  # once
