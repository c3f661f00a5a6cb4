"""Images, moderations and rerank on the gateway (a real gunicorn + gevent process): rerank from Cohere
(checked with the `cohere` SDK against the gateway) and from an OpenAI-compatible rerank server,
images and moderations with the `openai` SDK; each billed by its unit in the spend ledger."""

import time

import cohere
import openai
import pytest
import requests

from tests.fakes.cohere_server import FakeCohere
from tests.fakes.openai_server import wav_bytes
from tests.integration import conftest
from tests.integration.conftest import admin_call
from tests.integration.conftest import config_gateway

pytestmark = pytest.mark.integration

MASTER = "sk-master-surfaces-0123456789"
DOCS = ["Carson City is the capital city of Nevada.", "The Commonwealth of the Northern Mariana Islands.",
        "Washington, D.C. is the capital of the United States.", "Capital punishment in the United States."]
QUERY = "What is the capital of the United States?"


@pytest.fixture(scope="module")
def fake_cohere():
    with FakeCohere() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(fake_cohere, fake_openai, tmp_path_factory):
    models = [
        {"model_name": "cohere-rerank", "litellm_params": {"model": "cohere/rerank-v3.5", "api_base": fake_cohere.url,
                                                           "api_key": fake_cohere.api_key}},
        {"model_name": "bge-rerank", "litellm_params": {"model": "hosted_vllm/bge-reranker-v2-m3",
                                                        "api_base": fake_cohere.url + "/compat/v1",
                                                        "api_key": fake_cohere.api_key,
                                                        "input_cost_per_token": 1e-6, "output_cost_per_token": 0}},
        {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": fake_openai.url + "/v1",
                                                 "api_key": fake_openai.api_key}},
    ]
    gw = config_gateway(tmp_path_factory.mktemp("gw-surfaces"),
                        {"model_list": models, "general_settings": {"master_key": MASTER}})
    yield gw
    gw.stop()


def ledger_row(gateway, request_id):
    return conftest.ledger_row(gateway, MASTER, request_id)


def test_the_cohere_sdk_reranks_through_the_gateway(gateway, fake_cohere):
    client = cohere.ClientV2(api_key=MASTER, base_url=gateway.url, timeout=20)
    answer = client.rerank(model="cohere-rerank", query=QUERY, documents=DOCS, top_n=2)
    assert len(answer.results) == 2 and answer.results[0].index == 2
    assert answer.results[0].relevance_score >= answer.results[1].relevance_score
    sent = fake_cohere.requests[-1]
    assert sent["path"] == "/v2/rerank" and sent["json"] == {"model": "rerank-v3.5", "query": QUERY,
                                                             "documents": DOCS, "top_n": 2}
    assert answer.meta.billed_units.search_units == 1


def test_rerank_is_billed_per_search_unit_or_by_tokens(gateway):
    for model, expected in (("cohere-rerank", lambda answer: 0.002),
                            ("bge-rerank", lambda answer: answer["meta"]["billed_units"]["total_tokens"] * 1e-6)):
        resp = requests.post(gateway.url + "/v1/rerank", timeout=20, headers={"Authorization": f"Bearer {MASTER}"},
                             json={"model": model, "query": QUERY, "documents": DOCS, "return_documents": True})
        assert resp.status_code == 200, resp.text
        answer = resp.json()
        assert answer["results"][0]["document"] == {"text": DOCS[answer["results"][0]["index"]]}
        assert float(resp.headers["x-litellm-response-cost"]) == pytest.approx(expected(answer))
        row = ledger_row(gateway, resp.headers["x-request-id"])
        assert (row["call_type"], row["status"]) == ("rerank", "success")
        assert row["spend"] == pytest.approx(expected(answer))


def test_an_upstream_rerank_error_and_a_provider_without_rerank(gateway):
    resp = requests.post(gateway.url + "/rerank", timeout=20, headers={"Authorization": f"Bearer {MASTER}"},
                         json={"model": "gpt-missing", "query": "q", "documents": ["a"]})
    assert resp.status_code == 404
    resp = requests.post(gateway.url + "/rerank", timeout=20, headers={"Authorization": f"Bearer {MASTER}"},
                         json={"model": "cohere-rerank", "query": "q", "documents": []})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "documents"
    resp = requests.post(gateway.url + "/v1/rerank", timeout=20, headers={"Authorization": f"Bearer {MASTER}"},
                         json={"model": "cohere-rerank", "query": "q", "documents": ["a"], "stream": True})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "stream"


# ---- images, moderations, audio through the openai SDK -------------------------------------------

@pytest.fixture(scope="module")
def media_gateway(fake_openai, tmp_path_factory):
    """OpenAI and Azure deployments of the media models, priced by the model table."""
    def openai_model(name, model):
        return {"model_name": name, "litellm_params": {"model": f"openai/{model}", "api_base": fake_openai.url + "/v1",
                                                       "api_key": fake_openai.api_key}}
    models = [openai_model("dall-e-3", "dall-e-3"), openai_model("gpt-image-1", "gpt-image-1"),
              openai_model("omni-moderation-latest", "omni-moderation-latest"),
              openai_model("whisper-1", "whisper-1"), openai_model("tts-1", "tts-1"),
              {"model_name": "azure-whisper", "litellm_params": {
                  "model": "azure/whisper-1", "api_base": fake_openai.url, "api_key": fake_openai.azure_key,
                  "api_version": "2024-06-01", "input_cost_per_second": 0.0001}}]
    gw = config_gateway(tmp_path_factory.mktemp("gw-media"),
                        {"model_list": models, "general_settings": {"master_key": MASTER}})
    yield gw
    gw.stop()


def sdk(gw):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER, max_retries=0, timeout=20)


def test_images_are_generated_and_billed_per_image_by_quality_and_size(media_gateway, fake_openai):
    raw = sdk(media_gateway).images.with_raw_response.generate(model="dall-e-3", prompt="a red fox", quality="hd",
                                                               size="1792x1024")
    answer = raw.parse()
    assert len(answer.data) == 1 and answer.data[0].url.startswith("https://")
    assert fake_openai.requests[-1]["json"]["model"] == "dall-e-3"
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(0.12)
    row = ledger_row(media_gateway, raw.headers["x-request-id"])
    assert (row["call_type"], row["spend"]) == ("images", pytest.approx(0.12))
    many = sdk(media_gateway).images.with_raw_response.generate(model="gpt-image-1", prompt="a fox", n=2,
                                                                quality="low", size="1024x1536")
    assert len(many.parse().data) == 2 and many.parse().data[0].b64_json
    assert float(many.headers["x-litellm-response-cost"]) == pytest.approx(2 * 0.016)


def test_moderations_are_answered_and_free(media_gateway):
    raw = sdk(media_gateway).moderations.with_raw_response.create(model="omni-moderation-latest",
                                                                  input=["I will kill the process", "hello"])
    answer = raw.parse()
    assert [r.flagged for r in answer.results] == [True, False]
    assert float(raw.headers["x-litellm-response-cost"]) == 0


@pytest.mark.parametrize("model", ["whisper-1", "azure-whisper"])
def test_a_wav_is_transcribed_and_billed_per_second(media_gateway, fake_openai, model):
    raw = sdk(media_gateway).audio.transcriptions.with_raw_response.create(
        model=model, file=("talk.wav", wav_bytes(3), "audio/wav"), language="en")
    assert raw.parse().text == "Fake transcript of 3.00 seconds"
    sent = fake_openai.requests[-1]
    assert sent["files"]["file"]["size"] == len(wav_bytes(3)) and sent["form"]["language"] == "en"
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(3 * 0.0001)


@pytest.mark.parametrize("fmt,starts", [("text", "Fake transcript"), ("srt", "1\n00:00:00,000 --> 00:00:02,000"),
                                        ("vtt", "WEBVTT")])
def test_text_formats_are_made_from_verbose_json(media_gateway, fake_openai, fmt, starts):
    text = sdk(media_gateway).audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(2), "audio/wav"),
                                                          response_format=fmt)
    assert text.startswith(starts)
    assert fake_openai.requests[-1]["form"]["response_format"] == "verbose_json"


def test_translations(media_gateway):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        answer = sdk(media_gateway).audio.translations.create(model="whisper-1", file=("a.wav", wav_bytes(1), "audio/wav"))
    assert answer.text == "Fake translation of 1.00 seconds"


def test_speech_streams_the_audio_and_is_billed_per_character(media_gateway):
    text = "Hello there, this is a test of the speech route. " * 4
    with sdk(media_gateway).audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=text,
                                                                        response_format="wav") as resp:
        audio = b"".join(resp.iter_bytes())
        request_id = resp.headers["x-request-id"]
        assert resp.headers["content-type"] == "audio/wav"
    assert audio[:4] == b"RIFF" and len(audio) >= 16 * 1024
    row = ledger_row(media_gateway, request_id)
    assert (row["call_type"], row["status"], row["spend"]) == ("speech", "success", pytest.approx(len(text) * 1.5e-5))


def test_a_client_hanging_up_on_speech_closes_the_upstream(media_gateway, fake_openai):
    fake_openai.speech_chunk_interval = 0.05
    try:
        resp = requests.post(media_gateway.url + "/v1/audio/speech", stream=True, timeout=20,
                             headers={"Authorization": f"Bearer {MASTER}"},
                             json={"model": "tts-1", "voice": "alloy", "input": "x" * 2000})
        next(resp.iter_content(4096))
        resp.close()
        deadline = time.monotonic() + 10
        while not fake_openai.disconnects:
            assert time.monotonic() < deadline, "the upstream was never closed"
            time.sleep(0.05)
        assert fake_openai.disconnects[-1]["path"] == "/v1/audio/speech"
        row = ledger_row(media_gateway, resp.headers["x-request-id"])
        assert row["status"] == "client_disconnected" and row["spend"] == pytest.approx(2000 * 1.5e-5)
    finally:
        fake_openai.speech_chunk_interval = 0


def test_hostile_uploads_are_refused(media_gateway):
    url, auth = media_gateway.url + "/v1/audio/transcriptions", {"Authorization": f"Bearer {MASTER}"}
    bad_boundary = requests.post(url, data=b"x", timeout=20,
                                 headers={**auth, "Content-Type": "multipart/form-data; boundary=" + "a" * 200})
    assert bad_boundary.status_code == 400 and bad_boundary.json()["error"]["code"] == "invalid_multipart"
    parts = b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(100))
    too_many = requests.post(url, data=parts + b"--b--\r\n", timeout=20,
                             headers={**auth, "Content-Type": "multipart/form-data; boundary=b"})
    assert too_many.status_code == 413
    no_file = requests.post(url, files={"model": (None, "whisper-1")}, headers=auth, timeout=20)
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"


def test_a_budgeted_key_is_held_to_its_budget_on_images(media_gateway):
    key = admin_call(media_gateway, MASTER, "POST", "/key/generate", json={"max_budget": 0.1})["key"]
    client = openai.OpenAI(base_url=media_gateway.url + "/v1", api_key=key, max_retries=0, timeout=20)
    # soft budgets admit one call that may not fit while budget is left (gateway/spend/meter.py)
    client.images.generate(model="dall-e-3", prompt="a fox", quality="hd", size="1792x1024")
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="dall-e-3", prompt="a fox")
    assert "budget" in str(caught.value).lower()
    info = admin_call(media_gateway, MASTER, "GET", "/key/info", params={"key": key})["info"]
    assert info["spend"] == pytest.approx(0.12)


# ---- a provider of images other than OpenAI: Bedrock ---------------------------------------------

@pytest.fixture(scope="module")
def bedrock_gateway(tmp_path_factory):
    from tests.fakes.aws_server import ACCESS_KEY
    from tests.fakes.aws_server import SECRET_KEY
    from tests.fakes.aws_server import FakeAWS
    with FakeAWS() as fake:
        def bedrock(name, model):
            return {"model_name": name, "litellm_params": {
                "model": f"bedrock/{model}", "api_base": fake.url, "aws_access_key_id": ACCESS_KEY,
                "aws_secret_access_key": SECRET_KEY, "aws_region_name": "us-east-1"}}
        models = [bedrock("nova-canvas", "amazon.nova-canvas-v1:0"),
                  bedrock("titan-image", "amazon.titan-image-generator-v2:0"),
                  bedrock("claude", "anthropic.claude-3-haiku-20240307-v1:0")]
        gw = config_gateway(tmp_path_factory.mktemp("gw-bedrock-images"),
                            {"model_list": models, "general_settings": {"master_key": MASTER}})
        yield gw, fake
        gw.stop()


def test_bedrock_image_models_answer_images_billed_by_quality_and_size(bedrock_gateway):
    gw, fake = bedrock_gateway
    import base64
    raw = sdk(gw).images.with_raw_response.generate(model="nova-canvas", prompt="a red fox", n=2, size="1024x1024",
                                                    quality="hd")
    answer = raw.parse()
    assert len(answer.data) == 2 and base64.b64decode(answer.data[0].b64_json)[:8] == b"\x89PNG\r\n\x1a\n"
    sent = fake.requests[-1]["json"]
    assert sent == {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a red fox"},
                    "imageGenerationConfig": {"numberOfImages": 2, "width": 1024, "height": 1024,
                                              "quality": "premium"}}
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(2 * 0.06)
    titan = sdk(gw).images.with_raw_response.generate(model="titan-image", prompt="a fox", size="512x512")
    assert float(titan.headers["x-litellm-response-cost"]) == pytest.approx(0.008)
    with pytest.raises(openai.BadRequestError) as caught:  # a size the model does not make: AWS's 400
        sdk(gw).images.generate(model="titan-image", prompt="a fox", size="1000x1000")
    assert "size" in str(caught.value).lower()
    with pytest.raises(openai.BadRequestError) as caught:  # a chat model makes no images
        sdk(gw).images.generate(model="claude", prompt="a fox")
    assert caught.value.code == "unsupported_endpoint"
