"""The fake Petals backend, checked with raw HTTP against the documented API (there is no Petals SDK)."""

import pytest
import requests

from tests.fakes.petals_server import MODELS
from tests.fakes.petals_server import FakePetals
from tests.fakes.petals_server import petals_answer


@pytest.fixture(scope="module")
def fake():
    with FakePetals() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()
    yield


def generate(fake, **fields):
    return requests.post(fake.url + "/api/v1/generate", data=fields, timeout=5)


def test_readme_example(fake):
    # curl -X POST ".../api/v1/generate" -d "model=..." -d "inputs=Once upon a time," -d "max_new_tokens=20"
    resp = generate(fake, model="meta-llama/Llama-2-70b-chat-hf", inputs="Once upon a time,", max_new_tokens=20)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"ok": True, "outputs": " " + petals_answer("Once upon a time,") + "</s>"}
    assert fake.requests[-1]["raw"].startswith(b"model=meta-llama")


def test_max_new_tokens_cuts_without_eos(fake):
    out = generate(fake, inputs="hi", max_new_tokens=3).json()
    assert out == {"ok": True, "outputs": " Hello from fake"}
    assert generate(fake, inputs="a b", max_length=5).json()["outputs"] == " Hello from fake"


def test_query_string_counts_and_json_body_does_not(fake):
    resp = requests.post(fake.url + "/api/v1/generate?inputs=x&max_new_tokens=2")
    assert resp.json() == {"ok": True, "outputs": " Hello from"}
    resp = requests.post(fake.url + "/api/v1/generate", json={"inputs": "x", "max_new_tokens": 2})
    assert resp.json()["ok"] is False  # Flask's request.values holds no JSON fields
    assert resp.json()["traceback"].strip().endswith("specify either max_length or max_new_tokens")


def test_sampling_fields_are_typed(fake):
    assert generate(fake, inputs="x", max_new_tokens=2, do_sample=1, temperature=0.6, top_p=0.9).json()["ok"]
    assert fake.generated[-1] == {"model": None, "do_sample": "1", "temperature": "0.6"}
    bad = generate(fake, inputs="x", max_new_tokens=2, do_sample="True").json()
    assert bad["ok"] is False
    assert bad["traceback"].strip().splitlines()[-1] == "ValueError: invalid literal for int() with base 10: 'True'"


@pytest.mark.parametrize("fields, last_line", [
    ({"model": "no/such-model", "inputs": "x", "max_new_tokens": 5}, "KeyError: 'no/such-model'"),
    ({"inputs": "w " * 2000, "max_new_tokens": 100},
     "ValueError: Maximum length exceeded: prefix 0 + current 2100 exceeds pre-allocated maximum 2048"),
    ({"max_new_tokens": 5}, "ValueError: No inputs given and no inference session to continue"),
])
def test_failures_are_ok_false_with_traceback(fake, fields, last_line):
    resp = generate(fake, **fields)
    assert resp.status_code == 200
    body = resp.json()
    assert body["ok"] is False and "outputs" not in body
    assert body["traceback"].startswith("Traceback (most recent call last):")
    assert body["traceback"].strip().splitlines()[-1] == last_line


def test_proxy_error_and_unknown_path(fake):
    resp = generate(fake, inputs="TRIGGER_502", max_new_tokens=5)
    assert resp.status_code == 502 and "502 Bad Gateway" in resp.text
    assert resp.headers["Content-Type"] == "text/html"
    assert requests.post(fake.url + "/api/v2/nothing").status_code == 404
    assert MODELS[0] == "petals-team/StableBeluga2"
