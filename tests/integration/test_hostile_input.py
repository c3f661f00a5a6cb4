"""Hostile input end to end (#11 items 10, 11, 15, 16, 19 and two LiteLLM compatibility points): a
real gunicorn gateway with one gevent worker (so one stalled worker would stall everything) in front
of the fake OpenAI, called with `requests` and raw sockets.
"""

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml

from gateway import __version__
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port
from tests.integration.conftest import openai_config

pytestmark = pytest.mark.integration

MASTER = "sk-master-hostile-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}
HELLO = [{"role": "user", "content": "hello"}]
CALL_TIMEOUT = 30
LOG_TIMEOUT = 10  # a request's log line is written right after its response
# How long /health/liveliness may take while eight 30 MB bodies are being posted: generous (about
# 0.5 s here with the fix, the time to take the bodies in), far below the ~10 s the per-byte repair
# of those eight bodies held the worker.
LIVELINESS_BOUND = 4.0
HUGE_POSTS = 8


@pytest.fixture(scope="module")
def gw(tmp_path_factory, fake_openai):
    tmp = tmp_path_factory.mktemp("hostile")
    config = openai_config(fake_openai, master_key=MASTER)
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = GatewayProcess(["--config", str(path), "--num_workers", "1"], {}, tmp / "gateway.log", free_port())
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def chat(gw, data, headers=AUTH):
    body = data if isinstance(data, bytes) else None
    return requests.post(gw.url + "/v1/chat/completions", data=body, json=None if body else data,
                         headers={**headers, "Content-Type": "application/json"}, timeout=CALL_TIMEOUT)


def await_log(gw, text):
    """The gateway's log once `text` is in it."""
    deadline = time.monotonic() + LOG_TIMEOUT
    while True:
        log = gw.log()
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def new_key(gw, **rules):
    resp = requests.post(gw.url + "/key/generate", json=rules, headers=AUTH, timeout=CALL_TIMEOUT)
    assert resp.status_code == 200, resp.text
    return resp.json()["key"]


# ---- item 11: deep nesting is a 400 at parse time, never a 500 -----------------------------------

def deep(levels):
    return b"[" * levels + b"1" + b"]" * levels


@pytest.mark.parametrize("where", [
    b'"metadata": {"x": %s}',
    b'"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"x": %s}}}',
    b'"tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": %s}}}]',
    b'"logit_bias": %s',
    b'"user": "u", "extra": %s',
])
def test_a_300_deep_body_is_a_400_envelope(gw, where):
    raw = b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], ' + \
        where.replace(b"%s", deep(300)) + b"}"
    resp = chat(gw, raw)
    assert resp.status_code == 400, resp.text[:300]
    error = resp.json()["error"]
    assert error["code"] == "invalid_json" and "nested more than 100 levels" in error["message"]


def test_deep_key_metadata_is_a_400(gw):
    raw = b'{"metadata": {"x": ' + deep(300) + b"}}"
    resp = requests.post(gw.url + "/key/generate", data=raw, headers=AUTH, timeout=CALL_TIMEOUT)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


# ---- item 10: a huge invalid body does not hold the worker ---------------------------------------

def test_liveliness_answers_while_huge_invalid_bodies_are_posted(gw):
    """30 MB bodies whose first error is a trailing comma (the repair once cost 1.6 s of CPU each, one
    after the other on the worker); liveliness must answer all along."""
    content = b"x" * (30 * 1024 * 1024)
    body = b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "' + content + b'"},], "n": }'
    with ThreadPoolExecutor(HUGE_POSTS) as pool:
        posts = [pool.submit(chat, gw, body) for _ in range(HUGE_POSTS)]
        probes = 0
        while not all(p.done() for p in posts) or probes == 0:
            resp = requests.get(gw.url + "/health/liveliness", timeout=LIVELINESS_BOUND)
            assert resp.status_code == 200
            probes += 1
        for post in posts:
            resp = post.result()
            assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
            assert "trailing comma" in resp.json()["error"]["message"]


# ---- item 15: client text cannot forge or flood log lines ----------------------------------------

def test_a_model_name_cannot_forge_a_log_line_or_flood_one(gw):
    forged = chat(gw, {"model": "x\nFORGED line", "messages": HELLO})
    huge = chat(gw, {"model": "y" * 2_000_000, "messages": HELLO})
    assert (forged.status_code, huge.status_code) == (404, 404)
    await_log(gw, forged.headers["x-request-id"])
    log = await_log(gw, huge.headers["x-request-id"])
    lines = log.splitlines()
    assert not [line for line in lines if line.startswith("FORGED")]
    assert [line for line in lines if forged.headers["x-request-id"] in line][0].count("x\\nFORGED line") == 1
    assert max(len(line) for line in lines) < 20_000


# ---- item 19 and LiteLLM compatibility: what a key sees of the models ----------------------------

def test_a_key_sees_and_gets_only_the_models_it_may_use(gw):
    key = new_key(gw, models=["gpt-3.5-turbo"], aliases={"my-gpt": "gpt-3.5-turbo"})
    auth = {"Authorization": f"Bearer {key}"}
    listing = requests.get(gw.url + "/v1/models", headers=auth, timeout=CALL_TIMEOUT)
    assert [m["id"] for m in listing.json()["data"]] == ["gpt-3.5-turbo"]  # not the alias `my-gpt`
    assert requests.get(gw.url + "/v1/models/gpt-3.5-turbo", headers=auth, timeout=CALL_TIMEOUT).status_code == 200
    for other in ("azure-gpt", "fail-500", "my-gpt", "nope"):
        resp = requests.get(gw.url + "/v1/models/" + other, headers=auth, timeout=CALL_TIMEOUT)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found", other
    # The alias still works for calls.
    assert chat(gw, {"model": "my-gpt", "messages": HELLO}, headers=auth).status_code == 200
    # A key without a models list sees and gets every model; so does the master key.
    free = {"Authorization": f"Bearer {new_key(gw, aliases={'my-gpt': 'gpt-3.5-turbo'})}"}
    for headers in (free, AUTH):
        names = [m["id"] for m in requests.get(gw.url + "/v1/models", headers=headers, timeout=CALL_TIMEOUT).json()["data"]]
        assert "azure-gpt" in names and "gpt-3.5-turbo" in names and "my-gpt" not in names
        assert requests.get(gw.url + "/v1/models/azure-gpt", headers=headers, timeout=CALL_TIMEOUT).status_code == 200


def test_readiness_carries_litellm_version(gw):
    ready = requests.get(gw.url + "/health/readiness", timeout=CALL_TIMEOUT).json()
    assert ready["litellm_version"] == ready["version"] == __version__


# ---- item 16: gunicorn's own log lines ------------------------------------------------------------

def test_gunicorns_own_log_lines_are_written(start_gateway, fake_openai):
    """An invalid request line, then a stop: gunicorn logs both, in its own format, without a
    logging error (its format prints the process id, which the gateway's records skip)."""
    gw = start_gateway(openai_config(fake_openai))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=CALL_TIMEOUT) as sock:
        sock.sendall(b"NOT A VALID REQUEST LINE\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")
    await_log(gw, "Invalid request")
    gw.stop()
    log = gw.log()
    assert "--- Logging error ---" not in log and "TypeError" not in log, log
    assert re.search(r"^\S+ \S+ \S+ \[\d+\] \[WARNING\] Invalid request from ip=127\.0\.0\.1", log, re.M), log
    assert re.search(r"^\S+ \S+ \S+ \[\d+\] \[INFO\] Worker exiting \(pid: \d+\)", log, re.M), log
