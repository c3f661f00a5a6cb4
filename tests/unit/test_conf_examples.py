"""Every example in conf/ loads and passes the start-up checks (the CLI's own check_settings)."""

from pathlib import Path

import pytest

from gateway.config import settings as config
from gateway.cli import check_settings

CONF = Path(__file__).resolve().parents[2] / "conf"
ENV = {"OPENAI_API_KEY": "sk-example", "AZURE_API_KEY": "example", "AZURE_API_BASE": "https://example.openai.azure.com",
       "GATEWAY_MASTER_KEY": "sk-example-master", "DATABASE_URL": "sqlite:///example.sqlite",
       "VLLM_API_BASE": "http://127.0.0.1:8001/v1", "REDIS_HOST": "127.0.0.1",
       "ALERT_WEBHOOK_URL": "https://hooks.example.com/gateway", "AZURE_EU_API_KEY": "example"}


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.name)
def test_conf_example_loads(path, monkeypatch, tmp_path):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GATEWAY_CALLBACK_JSONL", str(tmp_path / "calls.jsonl"))
    settings = config.load_file(str(path))
    check_settings(settings)
    assert settings.deployments
