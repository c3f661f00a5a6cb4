"""Heavy optional libraries load only when the configuration uses them (DESIGN: performance)."""

import json
import os
import subprocess
import sys

HEAVY = ("boto3", "botocore", "sqlalchemy", "alembic", "psycopg2", "redis", "opentelemetry")

SCRIPT = r"""
import json, sys
from gateway.app import create_app
from gateway.config.settings import from_dict
app = create_app(from_dict(CONFIG))
client = app.test_client()
headers = {"Authorization": "Bearer sk-master-0123456789abcdef"}
for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                   ("/v1/embeddings", {"input": "hi"})):
    resp = client.post(path, json=body, headers=headers)
    assert resp.status_code == 200
    resp.close()  # runs the close hooks (the spend row), as gunicorn does
assert client.get("/v1/models", headers=headers).status_code == 200
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))))
"""


def loaded_after_calls(config, env=None):
    """The heavy top-level packages a fresh process has imported after serving a few calls."""
    code = f"CONFIG = {config!r}\nHEAVY = {HEAVY!r}\n" + SCRIPT
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_plain_config_with_master_key_imports_no_heavy_library(tmp_path):
    config = {"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}},
                             {"model_name": "bedrock-model", "litellm_params": {
                                 "model": "bedrock/anthropic.claude-3-haiku-20240307-v1:0",
                                 "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret",
                                 "aws_region_name": "us-east-1"}}],
              "general_settings": {"master_key": "sk-master-0123456789abcdef", "disable_spend_logs": True}}
    # A Bedrock deployment that is configured but not called loads no boto3; the master key with
    # spend logs off opens no database.
    assert loaded_after_calls(config) == []
    # With spend logs on (the default), the calls' rows open the store: SQLAlchemy and alembic, on
    # SQLite (no psycopg2).
    config["general_settings"] = {"master_key": "sk-master-0123456789abcdef",
                                  "database_url": f"sqlite:///{tmp_path / 'spend.sqlite'}"}
    assert loaded_after_calls(config) == ["alembic", "sqlalchemy"]


def test_redis_is_imported_only_when_configured():
    config = {"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
              "router_settings": {"redis_host": "127.0.0.1", "redis_port": 1},
              "general_settings": {"master_key": "sk-master-0123456789abcdef", "disable_spend_logs": True}}
    # redis-py itself imports opentelemetry (its own observability) when that is installed.
    assert [name for name in loaded_after_calls(config) if name != "opentelemetry"] == ["redis"]


def test_opentelemetry_is_imported_only_when_tracing_is_on():
    config = {"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
              "general_settings": {"master_key": "sk-master-0123456789abcdef", "disable_spend_logs": True}}
    assert loaded_after_calls(config) == []  # (the plain case above checks it too, with spend logs)
    # On: exported to a port nobody listens on (the export fails quietly, off the request path).
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_SCHEDULE_DELAY": "10"}
    config["general_settings"]["otel"] = True
    assert loaded_after_calls(config, env) == ["opentelemetry"]
    config["general_settings"].pop("otel")
    config["litellm_settings"] = {"callbacks": ["otel"]}
    assert loaded_after_calls(config, env) == ["opentelemetry"]
