"""GET /metrics on a real gunicorn gateway with 2 workers: every scrape, whichever worker answers it,
shows the instance's totals, and they add up exactly to the calls sent (successes, upstream failures,
retries, fallbacks, streams); spend matches the cost headers and the ledger; no key ever shows."""

import collections
import http.client
import json
import os
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway.access.keys import hash_key
from tests.integration.conftest import openai_config

pytestmark = pytest.mark.integration

MASTER = "sk-master-metrics-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}
HELLO = [{"role": "user", "content": "hello there metrics"}]
UNKNOWN_MODEL = "sk-looks-like-a-key-" + "Z" * 30  # a client's text must never become a label


def entry(fake, name, model):
    return {"model_name": name, "litellm_params": {"model": f"openai/{model}", "api_base": fake.url + "/v1",
                                                   "api_key": fake.api_key}}


def parse(text):
    """{sample name: {frozenset(labels.items()): value}}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def total(samples, name, **labels):
    return sum(v for k, v in samples.get(name, {}).items() if set(labels.items()) <= k)


def by_label(samples, name, label):
    out = collections.Counter()
    for k, v in samples.get(name, {}).items():
        out[dict(k)[label]] += v
    return out


# -- which worker answered: the server side of a connection, found through /proc --------------------

def workers_of(master):
    children = []
    for task in os.listdir(f"/proc/{master}/task"):
        with open(f"/proc/{master}/task/{task}/children") as f:
            children += [int(pid) for pid in f.read().split()]
    return children


def server_inode(server_port, client_port):
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            parts = line.split()
            local, remote = parts[1], parts[2]
            if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
                return int(parts[9])
    return None


def owner_of(inode, pids):
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def scrape(gw, workers):
    """(worker pid, text) of one scrape on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers=AUTH)
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, body[:300]
        assert resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        inode = server_inode(gw.port, conn.sock.getsockname()[1])  # still open: keep-alive
        return owner_of(inode, workers), body
    finally:
        conn.close()


# -- the test ---------------------------------------------------------------------------------------

def test_metrics_add_up_across_two_workers(start_gateway, fake_openai):
    fake = fake_openai
    config = openai_config(fake, master_key=MASTER, fallbacks=[{"fail-503": ["gpt-3.5-turbo"]}],
                           extra_models=[entry(fake, "flaky-1", "flaky-1"), entry(fake, "flaky-2", "flaky-2"),
                                         entry(fake, "pair", "fail-429"), entry(fake, "pair", "gpt-3.5-turbo")])
    gw = start_gateway(config, args=["--num_workers", "2"])
    workers = workers_of(gw.proc.pid)
    assert len(workers) == 2
    virtual = requests.post(gw.url + "/key/generate", json={"key_alias": "metrics-team"}, headers=AUTH,
                            timeout=10).json()["key"]

    calls = []  # (model_group label, status code, stream, response headers)
    session = requests.Session()

    def call(model, label=None, stream=False, key=MASTER, path="/v1/chat/completions", **body):
        payload = {"model": model, **body}
        if path.endswith("embeddings"):
            payload["input"] = "hello metrics"
        else:
            payload["messages"] = HELLO
        if stream:
            payload["stream"] = True
        resp = session.post(gw.url + path, json=payload, headers={"Authorization": f"Bearer {key}"},
                            timeout=30, stream=stream)
        text = resp.text  # the whole body, a stream to its end
        calls.append((label or model, resp.status_code, stream, resp.headers, text))
        return resp

    for i in range(10):
        assert call("gpt-3.5-turbo", key=virtual if i % 2 else MASTER).status_code == 200
    for i in range(6):
        options = {"stream_options": {"include_usage": True}} if i % 2 else {}
        resp = call("gpt-3.5-turbo", stream=True, **options)
        assert resp.status_code == 200 and "[DONE]" in calls[-1][4]
    assert call("azure-gpt").status_code == 200
    assert call("azure-gpt", stream=True).status_code == 200
    for _ in range(3):
        assert call("text-embedding-3-small", path="/v1/embeddings").status_code == 200
    for _ in range(3):
        assert call("fail-500").status_code == 500
    for _ in range(2):
        assert call("fail-400", key=virtual).status_code == 400
    assert call("flaky-1", num_retries=1).status_code == 200
    assert call("flaky-2", num_retries=2).status_code == 200
    resp = call("fail-503")
    assert resp.status_code == 200 and resp.headers["x-litellm-attempted-fallbacks"] == "1"
    assert call(UNKNOWN_MODEL, label="(unknown)").status_code == 404
    for _ in range(30):  # until the fail-429 deployment has been tried: it cools down at once
        assert call("pair", num_retries=1).status_code == 200
        if calls[-1][3]["x-litellm-attempted-retries"] != "0":
            break
    else:
        pytest.fail("the pair group never picked its failing deployment")

    assert os.path.exists(f"/dev/shm/gateway-{os.geteuid()}/gateway-state-{gw.proc.pid}.sqlite.metrics")  # first use
    sent = collections.Counter((label, str(status)) for label, status, *_ in calls)
    retries = collections.Counter()
    fallbacks = collections.Counter()
    for label, status, _, headers, _ in calls:
        retries[label] += int(headers.get("x-litellm-attempted-retries", 0))
        fallbacks[label] += int(headers.get("x-litellm-attempted-fallbacks", 0))
    assert retries["flaky-1"] == 1 and retries["flaky-2"] == 2 and retries["pair"] >= 1
    header_cost = sum(float(h["x-litellm-response-cost"]) for *_, h, _ in calls if "x-litellm-response-cost" in h)
    streams_ok = sum(1 for _, status, stream, *_ in calls if stream and status == 200)

    # Observers run once the response is out: wait until the last calls are counted (any worker),
    # and until each worker's cooldown cache has seen the pair's failing deployment.
    deadline = time.monotonic() + 15
    while True:
        samples = parse(requests.get(gw.url + "/metrics", headers=AUTH, timeout=10).text)
        if (total(samples, "gateway_requests_total") == len(calls)
                and total(samples, "gateway_deployments_cooling_down", model_group="pair") == 1):
            break
        assert time.monotonic() < deadline, (len(calls), total(samples, "gateway_requests_total"))
        time.sleep(0.1)
    time.sleep(1.1)  # Group.cooling() is cached for a second per worker

    # Every scrape, whichever worker answers, shows the same totals.
    answered, texts = collections.Counter(), []
    for _ in range(200):
        pid, text = scrape(gw, workers)
        answered[pid] += 1
        texts.append(text)
        if len(texts) >= 6 and all(answered[w] >= 2 for w in workers):
            break
    assert set(answered) == set(workers), f"scrapes answered by {dict(answered)}"
    first = parse(texts[0])
    for text in texts[1:]:
        assert parse(text) == first
    samples, text = first, texts[0]

    # Requests: exactly what was sent, per model group and status code.
    got = collections.Counter()
    for k, v in samples["gateway_requests_total"].items():
        labels = dict(k)
        got[(labels["model_group"], labels["code"])] += v
        assert labels["status"] == ("success" if labels["code"] == "200" else "error")
    assert got == sent
    assert total(samples, "gateway_requests_total", model_group="fail-503", code="200") == 1
    assert total(samples, "gateway_requests_total", endpoint="embeddings") == 3

    # Histograms: one observation per call; first-token times for the streams that produced one.
    assert total(samples, "gateway_request_duration_seconds_count") == len(calls)
    assert total(samples, "gateway_request_duration_seconds_bucket", le="+Inf") == len(calls)
    assert total(samples, "gateway_time_to_first_token_seconds_count") == streams_ok
    assert total(samples, "gateway_request_duration_seconds_sum") > 0

    # Retries, fallbacks, upstream errors (one per failed attempt), cache.
    assert by_label(samples, "gateway_retries_total", "model_group") == +retries
    assert by_label(samples, "gateway_fallbacks_total", "model_group") == +fallbacks
    errors = by_label(samples, "gateway_upstream_errors_total", "model_group")
    assert errors == {"fail-500": 3, "fail-400": 2, "flaky-1": 1, "flaky-2": 2, "fail-503": 1,
                      "pair": retries["pair"]}
    assert total(samples, "gateway_cache_hits_total") == 0
    assert by_label(samples, "gateway_cache_misses_total", "model_group") == +collections.Counter(
        label for label, *_ in calls)
    cooling = by_label(samples, "gateway_deployments_cooling_down", "model_group")
    assert cooling["pair"] == 1 and sum(cooling.values()) == 1 and "gpt-3.5-turbo" in cooling

    # Spend and tokens match the cost headers and the ledger, row by row.
    rows = requests.get(gw.url + "/spend/logs", params={"limit": 1000}, headers=AUTH, timeout=10).json()
    assert len(rows) >= len(calls) - 1  # an unknown model may be refused before it gets a row
    ids = {h["x-request-id"] for *_, h, _ in calls}
    rows = [r for r in rows if r["request_id"] in ids]
    stream_ids = {h["x-request-id"] for _, _, stream, h, _ in calls if stream}
    spend = total(samples, "gateway_spend_usd_total")
    assert spend > 0
    assert spend == pytest.approx(header_cost + sum(r["spend"] for r in rows if r["request_id"] in stream_ids),
                                  rel=1e-9)
    assert spend == pytest.approx(sum(r["spend"] for r in rows), rel=1e-9)
    assert total(samples, "gateway_prompt_tokens_total") == sum(r["prompt_tokens"] for r in rows)
    assert total(samples, "gateway_completion_tokens_total") == sum(r["completion_tokens"] for r in rows)

    # No key, key hash, alias or client text in the output.
    for secret in (MASTER, virtual, virtual[-12:], hash_key(virtual), hash_key(virtual)[:16], "metrics-team",
                   fake.api_key, fake.azure_key, UNKNOWN_MODEL, "sk-"):
        assert secret not in text, secret

    # The route: master key only.
    assert requests.get(gw.url + "/metrics", timeout=10).status_code == 401
    resp = requests.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {virtual}"}, timeout=10)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "master_key_required"

    # Counts live as long as the instance: its file goes once it has stopped and another starts.
    path = f"/dev/shm/gateway-{os.geteuid()}/gateway-state-{gw.proc.pid}.sqlite.metrics"
    gw.stop()
    demo = {"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
            "general_settings": {"master_key": MASTER, "metrics_public": True}}
    public = start_gateway(demo)
    assert not os.path.exists(path)

    # metrics_public: true opens /metrics (and nothing else) to callers without a key.
    resp = requests.get(public.url + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert "gateway_requests_total" in resp.text and json.dumps(MASTER) not in resp.text
    assert requests.get(public.url + "/v1/models", timeout=10).status_code == 401
