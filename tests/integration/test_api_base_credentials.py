"""Credentials in an api_base (issue #11 item 6): `http://user:password@host/v1`, a reverse proxy with
HTTP Basic auth in front of an OpenAI-compatible server. The gateway sends them as Basic auth on every
request of that deployment (urllib3 would silently drop them), and never shows them: not in the
`x-litellm-model-api-base` header, an answer or error body, /health, the log (with --debug curl
lines), a spend row, a callback record or an exported span.
"""

import base64
import secrets

import openai
import pytest
import requests

from tests.fakes.callback_server import FakeWebhook
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import OTLPHTTPReceiver
from tests.integration.conftest import free_port
from tests.integration.test_secret_canary import _dump
from tests.integration.test_secret_canary import _wait
from tests.integration.test_secret_canary import pieces

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello behind the proxy"}]
MASTER = "sk-master-basic-auth-0123456789"
USER = "gateway-user"


def test_basic_auth_is_sent_and_never_shown(start_gateway, tmp_path):
    password = "p4ss-canary-" + secrets.token_hex(8)
    basic = "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()
    with FakeOpenAI(api_key=None, basic_auth=(USER, password)) as proxy, OTLPHTTPReceiver() as collector, \
            FakeWebhook() as webhook:
        base = f"http://{USER}:{password}@127.0.0.1:{proxy.port}/v1"
        down = f"http://{USER}:{password}@127.0.0.1:{free_port()}/v1"  # nobody listens there
        jsonl = tmp_path / "calls.jsonl"
        database = tmp_path / "spend.sqlite"

        def deployment(name, model, api_base=base):
            # The api_key is what LiteLLM users write for such servers; the URL's Basic credentials win.
            return {"model_name": name, "litellm_params": {"model": model, "api_base": api_base,
                                                           "api_key": "sk-placeholder-key"}}

        config = {
            "model_list": [deployment("proxied", "openai/gpt-4o"),
                           deployment("proxied-embed", "openai/text-embedding-3-small"),
                           deployment("proxied-fail", "openai/fail-500"),
                           deployment("proxied-down", "openai/gpt-4o", api_base=down)],
            "litellm_settings": {"callbacks": ["jsonl", "webhook"],
                                 "callback_settings": {"jsonl": {"path": str(jsonl)},
                                                       "webhook": {"url": webhook.url + "/hook"}}},
            "router_settings": {"allowed_fails": 1000},
            "general_settings": {"master_key": MASTER, "otel": True, "database_url": f"sqlite:///{database}"},
        }
        gw = start_gateway(config, args=["--debug"], env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "200"})
        admin = {"Authorization": f"Bearer {MASTER}"}
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0, timeout=30)
        seen = []

        def keep(resp):
            seen.append(resp.text)
            seen.append("\n".join(f"{k}: {v}" for k, v in resp.headers.items()))

        raw = client.chat.completions.with_raw_response.create(model="proxied", messages=HELLO)
        keep(raw.http_response)
        answer = raw.parse()
        assert answer.choices[0].message.content == "Hello from fake upstream: hello behind the proxy"
        shown = raw.headers["x-litellm-model-api-base"]
        assert shown == f"http://127.0.0.1:{proxy.port}/v1"
        stream = client.chat.completions.create(model="proxied", messages=HELLO, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "Hello from fake upstream: hello behind the proxy"
        keep(client.embeddings.with_raw_response.create(model="proxied-embed", input="x").http_response)
        for model, status in (("proxied-fail", 500), ("proxied-down", 502)):
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(model=model, messages=HELLO)
            assert info.value.status_code == status
            keep(info.value.response)
            assert f"127.0.0.1:" in info.value.message  # the deployment is named, by its shown address
        health = requests.get(gw.url + "/health", headers=admin, timeout=60)
        keep(health)
        assert {e["model_name"] for e in health.json()["healthy_endpoints"]} >= {"proxied", "proxied-embed"}
        for path in ("/health/readiness", "/spend/logs", "/metrics"):
            keep(requests.get(gw.url + path, headers=admin, timeout=30))

        # Every request the proxy got carried the Basic credentials, never the placeholder bearer key.
        assert proxy.requests and all(r["headers"].get("authorization") == basic for r in proxy.requests)

        collector.wait_for(lambda spans: sum(1 for s in spans if s["attributes"].get("gen_ai.system")) >= 3)
        assert _wait(lambda: jsonl.exists() and len(jsonl.read_text().splitlines()) >= 5
                     and len(webhook.records) >= 5), "callbacks never delivered"
        gw.stop()
        sources = {
            "gateway log": gw.log(),
            "answers": "\n".join(seen),
            "spans": "\n".join(repr(s) for s in collector.spans) + "\n".join(map(repr, collector.raw)),
            "jsonl callback": jsonl.read_text(),
            "webhook callback": repr(webhook.records),
            "database": _dump(database),
        }
    assert "curl" in sources["gateway log"], "--debug curl lines are on"
    assert f"127.0.0.1:{proxy.port}/v1" in sources["jsonl callback"], "records name the shown address"
    leaks = []
    for where, text in sources.items():
        for name, secret in (("password", password), ("basic token", basic.split()[1])):
            found = sorted(p for p in pieces(secret) if p in text)
            if found:
                at = text.find(found[0])
                leaks.append(f"{name} in {where}: ...{text[max(0, at - 120):at + 30]!r}")
    assert not leaks, "\n".join(leaks)
