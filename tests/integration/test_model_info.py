"""The model info routes and /routes on a real gunicorn + gevent gateway (2 workers, --debug logs)
in front of the fake OpenAI/Azure upstream: four deployments, one with a canary `api_key`, one whose
key is `os.environ/CANARY_KEY`, one with a canary header. LiteLLM's shapes, a virtual key limited to
one model sees only it, every worker gives the same ids (and the same id as x-litellm-model-id),
and no canary (nor any 8-character piece of one) is in any answer or in the gateway's log."""

import secrets

import openai
import pytest
import requests

from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.integration

MASTER = "sk-master-" + secrets.token_hex(8)
HELLO = [{"role": "user", "content": "hello"}]
INFO_PATHS = ("/model/info", "/v1/model/info", "/v2/model/info")
GROUP_PATHS = ("/model_group/info", "/v1/model_group/info")


def pieces(secret, size=8):
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def canaries():
    return {"key": "sk-cnry-" + secrets.token_hex(16), "env": "az-cnry-" + secrets.token_hex(16),
            "header": "hdr-cnry-" + secrets.token_hex(16)}


def model_list(fake, canaries):
    return [
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": fake.url + "/v1",
                                                    "api_key": canaries["key"], "rpm": 100}},
        {"model_name": "gpt-4o", "litellm_params": {"model": "azure/my-deployment", "api_base": fake.url,
                                                    "api_key": "os.environ/CANARY_KEY", "api_version": "2024-02-01",
                                                    "tpm": 100000}},
        {"model_name": "cheap", "litellm_params": {"model": "openai/gpt-3.5-turbo", "api_base": fake.url + "/v1",
                                                   "api_key": canaries["key"],
                                                   "headers": {"X-Upstream-Token": canaries["header"]}},
         "model_info": {"access_groups": ["beta"], "description": "the cheap one"}},
        {"model_name": "text-embedding-3-small", "litellm_params": {
            "model": "openai/text-embedding-3-small", "api_base": fake.url + "/v1", "api_key": canaries["key"]}},
    ]


def get(gw, path, key, **params):
    """A fresh connection each time, so the two workers both answer over a test's calls."""
    with requests.Session() as session:
        return session.get(gw.url + path, params=params, headers=bearer(key), timeout=10)


def test_model_info_routes_on_a_real_gateway(start_gateway, canaries):
    seen = []

    def keep(resp):
        seen.append(resp.text)
        seen.append("\n".join(f"{k}: {v}" for k, v in resp.headers.items()))
        return resp

    with FakeOpenAI(api_key=canaries["key"], azure_key=canaries["env"]) as fake:
        config = {"model_list": model_list(fake, canaries), "general_settings": {"master_key": MASTER}}
        gw = start_gateway(config, args=["--num_workers", "2", "--debug"], env={"CANARY_KEY": canaries["env"]})
        limited = keep(requests.post(gw.url + "/key/generate", json={"models": ["cheap"]}, headers=bearer(MASTER),
                                     timeout=10)).json()["key"]

        # Calls work with these keys (the upstream checks them), and name the deployment they used.
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=limited, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="cheap", messages=HELLO)
        keep(raw.http_response)
        used_id = raw.headers["x-litellm-model-id"]
        master = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0)
        for _ in range(4):  # both gpt-4o deployments, the azure one with the env key
            keep(master.chat.completions.with_raw_response.create(model="gpt-4o", messages=HELLO).http_response)

        # The master key: every deployment, the same on every path and every worker.
        answers = [keep(get(gw, path, MASTER)) for path in INFO_PATHS for _ in range(3)]
        assert all(resp.status_code == 200 for resp in answers)
        assert all(resp.json() == answers[0].json() for resp in answers)
        data = answers[0].json()["data"]
        assert [e["model_name"] for e in data] == ["gpt-4o", "gpt-4o", "cheap", "text-embedding-3-small"]
        for entry in data:
            assert set(entry) == {"model_name", "litellm_params", "model_info"}
            assert {"id", "db_model", "mode", "max_tokens", "max_input_tokens", "max_output_tokens",
                    "input_cost_per_token", "output_cost_per_token", "litellm_provider", "supports_vision",
                    "supports_function_calling", "access_groups"} <= set(entry["model_info"])
        ids = [e["model_info"]["id"] for e in data]
        assert len(set(ids)) == 4 and used_id == ids[2]
        assert data[1]["litellm_params"] == {"model": "azure/my-deployment", "api_base": fake.url,
                                             "api_version": "2024-02-01", "tpm": 100000}
        assert data[2]["model_info"]["access_groups"] == ["beta"]
        assert data[2]["model_info"]["description"] == "the cheap one"
        assert "headers" not in data[2]["litellm_params"]
        assert data[3]["model_info"]["mode"] == "embedding" and data[0]["model_info"]["litellm_provider"] == "openai"
        one = keep(get(gw, "/v2/model/info", MASTER, litellm_model_id=ids[1])).json()
        assert one == {"data": [data[1]]}
        assert keep(get(gw, "/model/info", MASTER, litellm_model_id="not-an-id")).status_code == 404

        groups = [keep(get(gw, path, MASTER)) for path in GROUP_PATHS]
        assert groups[0].json() == groups[1].json()
        by_group = {g["model_group"]: g for g in groups[0].json()["data"]}
        assert list(by_group) == ["gpt-4o", "cheap", "text-embedding-3-small"]
        assert by_group["gpt-4o"]["providers"] == ["azure", "openai"]
        assert (by_group["gpt-4o"]["rpm"], by_group["gpt-4o"]["tpm"]) == (100, 100000)
        assert by_group["cheap"]["max_input_tokens"] == 16385 and by_group["cheap"]["mode"] == "chat"
        missing = keep(get(gw, "/model_group/info", MASTER, model_group="nope"))
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "model_group"

        # The key limited to `cheap`: that model only, the others are 404s as if absent.
        for path in INFO_PATHS:
            assert [e["model_name"] for e in keep(get(gw, path, limited)).json()["data"]] == ["cheap"]
        assert [g["model_group"] for g in keep(get(gw, "/model_group/info", limited)).json()["data"]] == ["cheap"]
        assert keep(get(gw, "/model/info", limited, litellm_model_id=ids[0])).status_code == 404
        assert keep(get(gw, "/model_group/info", limited, model_group="gpt-4o")).status_code == 404

        # /routes: the master key's; a virtual key gets a 403.
        routes = keep(get(gw, "/routes", MASTER))
        assert routes.status_code == 200
        listed = {(r["path"], tuple(r["methods"])): r["name"] for r in routes.json()["routes"]}
        for path in INFO_PATHS:
            assert listed[(path, ("GET",))] == "model_info.model_info"
        assert listed[("/chat/completions", ("POST",))] == "chat.chat_completions"
        assert listed[("/routes", ("GET",))] == "model_info.routes"
        refused = keep(get(gw, "/routes", limited))
        assert refused.status_code == 403 and refused.json()["error"]["type"]
        gw.stop()
        log = gw.log()

    assert "curl" in log, "--debug logging was on"
    sources = {"answers": "\n".join(seen), "gateway log": log}
    leaks = [f"{name} canary in {where}" for where, text in sources.items() for name, secret in canaries.items()
             if any(piece in text for piece in pieces(secret))]
    assert not leaks, leaks
