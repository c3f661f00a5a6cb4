"""Check the fake Replicate API with the official `replicate` SDK (run, predictions + wait, stream, errors)."""

import pytest
import replicate
import requests
from replicate.exceptions import ModelError
from replicate.exceptions import ReplicateError

from tests.fakes.replicate_server import ANSWER_PREFIX
from tests.fakes.replicate_server import FakeReplicate

TOKEN = "r8_sdk_check_token_000000000000"
VERSION = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"


@pytest.fixture(scope="module")
def fake():
    with FakeReplicate(token=TOKEN) as server:
        yield server


@pytest.fixture
def client(fake):
    fake.reset()
    c = replicate.Client(api_token=TOKEN, base_url=fake.url)
    c.poll_interval = 0.01
    return c


def test_run_model_sync_mode(client, fake):
    out = client.run("meta/meta-llama-3-8b-instruct", input={"prompt": "Tell me a story", "max_new_tokens": 100})
    assert "".join(out) == ANSWER_PREFIX + "4 words received"
    sent = fake.requests[0]
    assert sent["path"] == "/v1/models/meta/meta-llama-3-8b-instruct/predictions"
    assert sent["headers"]["prefer"] == "wait"
    assert sent["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_run_pinned_version_returns_iterator(client, fake):
    out = client.run(f"replicate/hello-world:{VERSION}", input={"prompt": "Alice"})
    assert "".join(out) == ANSWER_PREFIX + "1 words received"
    assert fake.requests[0]["json"]["version"] == VERSION


def test_create_and_wait_polls(client, fake):
    prediction = client.predictions.create(version=VERSION, input={"prompt": "a b c", "max_new_tokens": 3})
    assert prediction.status == "starting"
    prediction.reload()
    assert prediction.status == "processing" and prediction.output
    prediction.wait()
    assert prediction.status == "succeeded"
    assert "".join(prediction.output) == "Hello from Replicate: "
    assert prediction.metrics["input_token_count"] == 3 and prediction.metrics["output_token_count"] == 3


def test_deployment(client, fake):
    prediction = client.deployments.predictions.create("acme/my-llm", input={"prompt": "x"})
    prediction.wait()
    assert prediction.status == "succeeded"
    assert fake.requests[0]["path"] == "/v1/deployments/acme/my-llm/predictions"


def test_stream(client, fake):
    events = list(client.stream("meta/meta-llama-3-8b-instruct", input={"prompt": "hi there", "image": "x"}))
    text = "".join(str(e) for e in events)
    assert text == ANSWER_PREFIX + "2 words received with an image"
    assert events[-1].event.value == "done"
    assert fake.requests[0]["json"]["stream"] is True


def test_stream_error_event(client):
    with pytest.raises(RuntimeError, match="CUDA error"):
        list(client.stream("acme/stream-error", input={"prompt": "one two three four"}))


def test_failed_prediction_raises_model_error(client):
    with pytest.raises(ModelError, match="CUDA out of memory"):
        client.run("acme/fails", input={"prompt": "x"})


def test_no_stream_url(client):
    with pytest.raises(ReplicateError, match="does not support streaming"):
        list(client.stream("acme/no-stream", input={"prompt": "x"}))


def test_cancel(client, fake):
    prediction = client.predictions.create(version=VERSION, input={"prompt": "x"})
    prediction.cancel()
    assert prediction.status == "canceled"
    assert fake.cancels == [prediction.id]


@pytest.mark.parametrize("model, status, title", [
    ("acme/missing", 404, "Not found"),
    ("acme/bad-input", 422, "Input validation failed"),
    ("acme/throttled", 429, "Request was throttled"),
])
def test_errors(fake, model, status, title):
    fake.reset()
    client = replicate.Client(api_token=TOKEN, base_url=fake.url, transport=None)
    with pytest.raises(ReplicateError) as exc:
        # The SDK retries 429 on its own; create() with POST is not retried.
        client.models.predictions.create(model=model, input={"prompt": "x"})
    assert exc.value.status == status and exc.value.title == title


def test_throttled_has_retry_after(fake):
    resp = requests.post(fake.url + "/v1/models/acme/throttled/predictions", json={"input": {}},
                         headers={"Authorization": f"Token {TOKEN}"}, timeout=5)
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert resp.headers["Content-Type"] == "application/problem+json"


def test_bad_token(fake):
    client = replicate.Client(api_token="r8_wrong", base_url=fake.url)
    with pytest.raises(ReplicateError) as exc:
        client.run("meta/x", input={"prompt": "x"})
    assert exc.value.status == 401


def test_foreign_urls_trigger(client):
    prediction = client.predictions.create(version="foreign-urls", input={"prompt": "x"})
    assert prediction.urls["get"].startswith("http://169.254.169.254")
