"""The secret canary run (issues #5 and #6): unique canary values as the provider keys, the master
key, a virtual key and the Langfuse secret; a gateway with everything that writes somewhere turned on
(--debug curl logs, JSON logs, the response cache, the spend ledger, /metrics, OpenTelemetry to an
in-test collector, jsonl + webhook + langfuse callbacks, LiteLLM's prometheus names, models stored in
the database); a mix of calls that succeed, stream, fail, retry, hit the cache, go through a wildcard
or a model added by /model/new, and are refused; the model info routes. Then every log line, response body, health / readiness /
metrics / spend / key answer, exported span, callback payload and database row is searched for each
canary and for every 8-character piece of it: nothing may be found.

The one place a key may appear is the answer of /key/generate (a key is shown once, to the master key):
that answer is left out of the search.
"""

import secrets
import sqlite3

import openai
import pytest
import requests

from tests.fakes.callback_server import FakeLangfuse
from tests.fakes.callback_server import FakeWebhook
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.otlp_receiver import OTLPHTTPReceiver
from tests.integration.conftest import openai_config

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello there"}]


def pieces(secret, size=8):
    """Every `size`-character piece of a secret."""
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


@pytest.fixture(scope="module")
def canaries():
    return {"provider": "sk-prov-" + secrets.token_hex(16), "azure": "az-" + secrets.token_hex(16),
            "master": "sk-master-" + secrets.token_hex(16), "langfuse": "sk-lf-" + secrets.token_hex(16),
            "db_model": "sk-dbm-" + secrets.token_hex(16)}


def test_no_secret_anywhere(start_gateway, tmp_path, canaries):
    with FakeOpenAI(api_key=canaries["provider"], azure_key=canaries["azure"]) as fake, \
            OTLPHTTPReceiver() as collector, FakeWebhook() as webhook, \
            FakeLangfuse(public_key="pk-lf-" + secrets.token_hex(6), secret_key=canaries["langfuse"]) as langfuse:
        jsonl = tmp_path / "calls.jsonl"
        database = tmp_path / "spend.sqlite"
        config = openai_config(
            fake, master_key=canaries["master"], num_retries=1, cache=True, cache_params={"type": "local"},
            json_logs=True, callbacks=["jsonl", "webhook"], success_callback=["langfuse", "prometheus"],
            callback_settings={"jsonl": {"path": str(jsonl)}, "webhook": {"url": webhook.url + "/hook"},
                               "langfuse": {"host": langfuse.url, "public_key": langfuse.public_key,
                                            "secret_key": canaries["langfuse"]}})
        config["model_list"].append({"model_name": "flaky", "litellm_params": {
            "model": "openai/flaky-1", "api_base": fake.url + "/v1", "api_key": canaries["provider"]}})
        config["model_list"].append({"model_name": "wild/*", "litellm_params": {  # a wildcard's key too
            "model": "openai/*", "api_base": fake.url + "/v1", "api_key": canaries["provider"]}})
        config["general_settings"].update(otel=True, database_url=f"sqlite:///{database}", store_model_in_db=True)
        gw = start_gateway(config, args=["--debug"], env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "200"})
        admin = {"Authorization": f"Bearer {canaries['master']}"}
        generated = requests.post(gw.url + "/key/generate", headers=admin, timeout=10,
                                  json={"key_alias": "canary-team", "max_budget": 100, "tpm_limit": 100000})
        virtual = generated.json()["key"]  # this answer is the one place the key may be seen
        seen = []

        def keep(resp):
            seen.append(resp.text)
            seen.append("\n".join(f"{k}: {v}" for k, v in resp.headers.items()))

        # A model added at run time with its own provider key (the fake takes it as its Azure key),
        # updated, and listed: the key is stored sealed and shown nowhere.
        keep(requests.post(gw.url + "/model/new", headers=admin, timeout=10, json={
            "model_name": "db-azure", "litellm_params": {"model": "azure/gpt-35-turbo", "api_base": fake.url,
                                                         "api_key": canaries["azure"], "api_version": "2024-02-01"},
            "model_info": {"id": "db-azure-1"}}))
        assert '"db-azure-1"' in seen[-2], seen[-2]  # added
        keep(requests.post(gw.url + "/model/new", headers=admin, timeout=10, json={
            "model_name": "db-unused", "litellm_params": {"model": "openai/x", "api_base": fake.url + "/v1",
                                                          "api_key": canaries["db_model"]}}))
        keep(requests.post(gw.url + "/model/update", headers=admin, timeout=10, json={
            "model_info": {"id": "db-azure-1"}, "litellm_params": {"rpm": 1000}}))
        for path in ("/model/info", "/v2/model/info", "/model_group/info", "/routes"):
            keep(requests.get(gw.url + path, headers=admin, timeout=10))
        assert '"db-azure"' in seen[-8] and '"wild/*"' in seen[-8], "the model info lists both"

        for key in (canaries["master"], virtual):
            client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
            for _ in range(2):  # the second is a cache hit
                keep(client.chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=HELLO))
                stream = client.chat.completions.create(model="gpt-3.5-turbo", messages=HELLO, stream=True)
                seen.append("".join(chunk.model_dump_json() for chunk in stream))
            keep(client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="x"))
            keep(client.chat.completions.with_raw_response.create(model="azure-gpt", messages=HELLO))
            keep(client.chat.completions.with_raw_response.create(model="db-azure", messages=HELLO))
            keep(client.chat.completions.with_raw_response.create(model="wild/gpt-3.5-turbo", messages=HELLO))
            keep(client.chat.completions.with_raw_response.create(  # a retry, never cached
                model="flaky", messages=HELLO, extra_body={"caching": False}))
            # the other surfaces: Anthropic's Messages (translated), the Responses API (its stored
            # state is in the database dump), images, moderations
            keep(requests.post(gw.url + "/v1/messages", headers={"x-api-key": key}, timeout=10, json={
                "model": "gpt-3.5-turbo", "max_tokens": 20, "messages": HELLO}))
            made = client.responses.with_raw_response.create(model="gpt-3.5-turbo", input="hello")
            keep(made)
            keep(client.responses.with_raw_response.create(model="gpt-3.5-turbo", input="again",
                                                           previous_response_id=made.parse().id))
            keep(requests.post(gw.url + "/v1/moderations", headers={"Authorization": f"Bearer {key}"}, timeout=10,
                               json={"model": "gpt-3.5-turbo", "input": "x"}))
            for model in ("fail-401", "fail-500", "stream-error", "nope"):
                try:
                    for _ in client.chat.completions.create(model=model, messages=HELLO,
                                                            stream=model == "stream-error"):
                        pass
                except openai.APIError as exc:
                    seen.append(str(exc))
        for path in ("/health", "/health/readiness", "/metrics", "/key/list", "/spend/logs",
                     f"/key/info?key={virtual}"):
            keep(requests.get(gw.url + path, headers=admin, timeout=30))
        keep(requests.get(gw.url + "/key/info", headers={"Authorization": f"Bearer {virtual}"}, timeout=10))
        keep(requests.get(gw.url + "/model/info", headers={"Authorization": f"Bearer {virtual}"}, timeout=10))
        keep(requests.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {virtual[:-3]}xyz"},
                          timeout=10))  # a wrong key's error

        collector.wait_for(lambda spans: sum(1 for s in spans if s["attributes"].get("gen_ai.system")) >= 10)
        deadline_ok = _wait(lambda: jsonl.exists() and len(jsonl.read_text().splitlines()) >= 20
                            and len(webhook.records) >= 20 and langfuse.events)
        assert deadline_ok, "callbacks never delivered"
        gw.stop()  # flushes and writes the last lines

        sources = {
            "gateway log": gw.log(),
            "answers": "\n".join(seen),
            "spans": "\n".join(repr(s) for s in collector.spans) + "\n".join(map(repr, collector.raw)),
            "jsonl callback": jsonl.read_text(),
            "webhook callback": repr(webhook.records) + repr([r.get("headers") for r in webhook.requests]),
            "langfuse callback": repr(langfuse.events),
            "database": _dump(database),
        }
    assert "curl" in sources["gateway log"], "--debug curl logging is on"
    assert '"request_id"' in sources["gateway log"], "JSON request lines are on"
    assert sources["spans"] and sources["jsonl callback"] and sources["database"]
    secrets_to_find = {**canaries, "virtual": virtual}
    leaks = []
    for where, text in sources.items():
        for name, secret in secrets_to_find.items():
            found = sorted(p for p in pieces(secret) if p in text)
            if found:
                at = text.find(found[0])
                leaks.append(f"{name} key in {where}: {found[:3]} ...{text[max(0, at - 150):at + 30]!r}")
    assert not leaks, "\n".join(leaks)


def _wait(predicate, timeout=20.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _dump(path):
    """The gateway's whole SQLite database (keys, spend rows, holds) as SQL text."""
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()
