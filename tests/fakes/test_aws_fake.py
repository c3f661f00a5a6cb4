"""Check the fake AWS upstream with boto3 itself: if botocore signs for it, parses its answers, its
event streams and raises its typed errors, the gateway's AWS tests can rely on it."""

import base64
import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.exceptions import EventStreamError

from tests.fakes.anthropic_server import ANSWER_PREFIX
from tests.fakes.anthropic_server import signature
from tests.fakes.anthropic_server import stream_events
from tests.fakes.aws_server import ACCESS_KEY
from tests.fakes.aws_server import SECRET_KEY
from tests.fakes.aws_server import FakeAWS
from tests.fakes.aws_server import bedrock_answer
from tests.fakes.aws_server import encode_message
from tests.fakes.aws_server import sagemaker_answer

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
TOOLS = {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                                 "inputSchema": {"json": {"type": "object", "properties": {
                                     "location": {"type": "string"}}}}}}]}
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
                       "AAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def fake():
    with FakeAWS() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake):
    fake.reset()
    fake.session_token = None
    yield


def client(fake, service, secret=SECRET_KEY, key=ACCESS_KEY, token=None):
    return boto3.session.Session().client(
        service, region_name="us-east-1", endpoint_url=fake.url, aws_access_key_id=key,
        aws_secret_access_key=secret, aws_session_token=token,
        config=Config(retries={"max_attempts": 0}, read_timeout=5, connect_timeout=5))


@pytest.fixture(scope="module")
def bedrock(fake):
    return client(fake, "bedrock-runtime")


@pytest.fixture(scope="module")
def sagemaker(fake):
    return client(fake, "sagemaker-runtime")


def user(*blocks):
    return [{"role": "user", "content": list(blocks)}]


# --- Bedrock --------------------------------------------------------------------------------------

def test_converse(bedrock, fake):
    resp = bedrock.converse(modelId=MODEL, system=[{"text": "be brief"}], messages=user({"text": "hi there"}),
                            inferenceConfig={"maxTokens": 50, "temperature": 0.2})
    assert resp["output"]["message"] == {"role": "assistant", "content": [{"text": bedrock_answer("hi there")}]}
    assert resp["stopReason"] == "end_turn"
    assert resp["usage"] == {"inputTokens": 4, "outputTokens": 6, "totalTokens": 10}
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    sent = fake.requests[-1]
    assert sent["path"] == f"/model/{MODEL}/converse" and "%3A" in sent["raw_path"]
    assert sent["json"]["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.2}


def test_converse_limits_and_stops(bedrock):
    cut = bedrock.converse(modelId=MODEL, messages=user({"text": "a b c d"}), inferenceConfig={"maxTokens": 3})
    assert cut["stopReason"] == "max_tokens" and cut["output"]["message"]["content"][0]["text"] == "Hello from fake"
    stop = bedrock.converse(modelId=MODEL, messages=user({"text": "x"}), inferenceConfig={"stopSequences": ["fake"]})
    assert stop["stopReason"] == "stop_sequence" and stop["output"]["message"]["content"][0]["text"] == "Hello from "


def test_converse_image_bytes_arrive(bedrock):
    resp = bedrock.converse(modelId=MODEL, messages=user({"text": "what is it"},
                                                         {"image": {"format": "png", "source": {"bytes": PNG}}}))
    assert f"[images: png {len(PNG)} bytes]" in resp["output"]["message"]["content"][0]["text"]


def test_converse_tool_use_round_trip(bedrock):
    first = bedrock.converse(modelId=MODEL, toolConfig=TOOLS,
                             messages=user({"text": "What is the weather in Paris and Tokyo?"}))
    assert first["stopReason"] == "tool_use"
    uses = [b["toolUse"] for b in first["output"]["message"]["content"] if "toolUse" in b]
    assert [u["input"] for u in uses] == [{"location": "Paris"}, {"location": "Tokyo"}]
    messages = user({"text": "What is the weather in Paris?"}) + [first["output"]["message"]] + user(
        *[{"toolResult": {"toolUseId": u["toolUseId"], "content": [{"text": "sunny"}]}} for u in uses])
    second = bedrock.converse(modelId=MODEL, toolConfig=TOOLS, messages=messages)
    assert second["output"]["message"]["content"][0]["text"] == "The tool said: sunny sunny"


def test_converse_forced_tool(bedrock):
    config = {"tools": [{"toolSpec": {"name": "json_tool_call", "inputSchema": {"json": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}}],
        "toolChoice": {"tool": {"name": "json_tool_call"}}}
    resp = bedrock.converse(modelId=MODEL, toolConfig=config, messages=user({"text": "Lyon"}))
    assert resp["output"]["message"]["content"][0]["toolUse"]["input"] == {"city": bedrock_answer("Lyon")}


def test_converse_stream_events_parse(bedrock):
    resp = bedrock.converse_stream(modelId=MODEL, messages=user({"text": "hello stream"}))
    events = list(resp["stream"])
    assert events[0] == {"messageStart": {"role": "assistant"}}
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == bedrock_answer("hello stream")
    assert events[-2] == {"messageStop": {"stopReason": "end_turn"}}
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 6


def test_converse_stream_tool_deltas(bedrock):
    resp = bedrock.converse_stream(modelId=MODEL, toolConfig=TOOLS, messages=user({"text": "weather in Oslo"}))
    events = list(resp["stream"])
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "get_weather" and start["contentBlockIndex"] == 1
    pieces = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events
              if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {})]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == {"location": "Oslo"}


def test_converse_stream_exception_event(bedrock):
    resp = bedrock.converse_stream(modelId="stream-error-model", messages=user({"text": "a b c d e"}))
    seen = []
    with pytest.raises(EventStreamError) as info:
        for event in resp["stream"]:
            seen.append(event)
    assert info.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert any("contentBlockDelta" in e for e in seen)


@pytest.mark.parametrize("model, code, status", [
    ("fail-validation", "ValidationException", 400), ("context-length", "ValidationException", 400),
    ("fail-access", "AccessDeniedException", 403), ("fail-notfound", "ResourceNotFoundException", 404),
    ("fail-throttle", "ThrottlingException", 429), ("fail-timeout", "ModelTimeoutException", 408),
    ("fail-500", "InternalServerException", 500), ("fail-503", "ServiceUnavailableException", 503),
])
def test_bedrock_typed_errors(bedrock, model, code, status):
    with pytest.raises(ClientError) as info:
        bedrock.converse(modelId=model, messages=user({"text": "hi"}))
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert type(info.value).__name__ == code  # botocore's modeled exception class
    with pytest.raises(ClientError):  # streams fail the same way, before any event
        bedrock.converse_stream(modelId=model, messages=user({"text": "hi"}))


def test_invoke_model_titan_and_cohere(bedrock):
    resp = bedrock.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps(
        {"inputText": "hello world", "dimensions": 256}), contentType="application/json", accept="application/json")
    data = json.loads(resp["body"].read())
    assert len(data["embedding"]) == 256 and data["inputTextTokenCount"] == 2
    resp = bedrock.invoke_model(modelId="cohere.embed-english-v3", body=json.dumps(
        {"texts": ["a", "b c"], "input_type": "search_document"}))
    data = json.loads(resp["body"].read())
    assert len(data["embeddings"]) == 2 and data["response_type"] == "embeddings_floats"
    assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "3"
    with pytest.raises(ClientError) as info:
        bedrock.invoke_model(modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "x",
                                                                                         "dimensions": 7}))
    assert info.value.response["Error"]["Code"] == "ValidationException"



# --- image generation on InvokeModel (Titan Image Generator, Nova Canvas) --------------------------

TITAN_IMAGE = "amazon.titan-image-generator-v2:0"
NOVA_CANVAS = "amazon.nova-canvas-v1:0"


def image_body(text="a red fox", config=None, **params):
    body = {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": text, **params}}
    if config is not None:
        body["imageGenerationConfig"] = config
    return json.dumps(body)


def png_size(data):
    """(width, height) of PNG bytes, after checking the signature and IHDR."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("model, config, count, size", [
    (TITAN_IMAGE, {"numberOfImages": 3, "width": 1152, "height": 896, "quality": "premium", "cfgScale": 8.0,
                   "seed": 7}, 3, (1152, 896)),
    ("amazon.titan-image-generator-v1", {"numberOfImages": 1, "width": 512, "height": 512}, 1, (512, 512)),
    ("us.amazon.nova-canvas-v1:0", {"numberOfImages": 2, "width": 1280, "height": 720, "quality": "standard",
                                    "cfgScale": 6.5, "seed": 858993459}, 2, (1280, 720)),
    (NOVA_CANVAS, None, 1, (1024, 1024)),  # imageGenerationConfig is optional: one 1024 x 1024 image
])
def test_invoke_model_image_generation(bedrock, fake, model, config, count, size):
    extra = {"style": "PHOTOREALISM"} if "nova" in model else {}  # taken, and ignored by the fake
    resp = bedrock.invoke_model(modelId=model, body=image_body(config=config, negativeText="blur", **extra),
                                contentType="application/json", accept="application/json")
    assert resp["contentType"] == "application/json"
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-requestid"] and headers["x-amzn-bedrock-invocation-latency"]
    data = json.loads(resp["body"].read())
    if "nova" in model:
        assert set(data) == {"images"}  # Nova Canvas sends `error` only when its filter dropped images
    else:
        assert set(data) == {"images", "error"} and data["error"] is None
    assert len(data["images"]) == count
    pngs = [base64.b64decode(image, validate=True) for image in data["images"]]
    assert all(png_size(png) == size for png in pngs)
    assert len(set(pngs)) == count  # each image its own
    sent = fake.requests[-1]
    assert sent["path"] == f"/model/{model}/invoke"
    assert sent["json"]["textToImageParams"] == {"text": "a red fox", "negativeText": "blur", **extra}


def test_invoke_model_image_generation_is_deterministic(bedrock):
    body = image_body(config={"numberOfImages": 1, "width": 512, "height": 512, "seed": 3})
    first, second = (json.loads(bedrock.invoke_model(modelId=TITAN_IMAGE, body=body)["body"].read())
                     for _ in range(2))
    assert first == second


@pytest.mark.parametrize("model, body, wording", [
    (TITAN_IMAGE, {"textToImageParams": {"text": "x"}}, "#: required key [taskType] not found"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE"}, "#: required key [textToImageParams] not found"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"negativeText": "x"}},
     "#/textToImageParams: required key [text] not found"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {}},
     "#/textToImageParams: required key [text] not found"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": ""}},
     "#/textToImageParams/text: expected minLength: 1, actual: 0"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x" * 513}},
     "#/textToImageParams/text: expected maxLength: 512, actual: 513"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x" * 1025}},
     "#/textToImageParams/text: expected maxLength: 1024, actual: 1025"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": 5}},
     "#/textToImageParams/text: expected type: String, found: Integer"),
    (TITAN_IMAGE, {"taskType": "IMAGE_OF_TEXT", "textToImageParams": {"text": "x"}},
     "#/taskType: IMAGE_OF_TEXT is not a valid enum value"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"}, "n": 2},
     "#: extraneous key [n] is not permitted"),
    ("amazon.titan-image-generator-v1", {"taskType": "TEXT_IMAGE", "textToImageParams": {
        "text": "x", "conditionImage": "AAAA"}},  # image conditioning is Titan v2's
     "#/textToImageParams: extraneous key [conditionImage] is not permitted"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x", "style": "PHOTOREALISM"}},
     "#/textToImageParams: extraneous key [style] is not permitted"),  # a Nova Canvas field
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"numberOfImages": 6}},
     "#/imageGenerationConfig/numberOfImages: 6 is not less or equal to 5"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"numberOfImages": 0}},
     "#/imageGenerationConfig/numberOfImages: 0 is not greater or equal to 1"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"numberOfImages": "2"}},
     "#/imageGenerationConfig/numberOfImages: expected type: Integer, found: String"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"quality": "hd"}},
     "#/imageGenerationConfig/quality: hd is not a valid enum value"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"cfgScale": 11}},
     "#/imageGenerationConfig/cfgScale: 11 is not less or equal to 10.0"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"seed": 858993460}},
     "#/imageGenerationConfig/seed: 858993460 is not less or equal to 858993459"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"width": 1000, "height": 1000}},
     "The provided image size 1000x1000 is not supported"),
    (TITAN_IMAGE, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"width": 896, "height": 896}},
     "The provided image size 896x896 is not supported"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"width": 1000, "height": 1024}},
     "#/imageGenerationConfig/width: 1000 is not a multiple of 16"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"width": 1024, "height": 304}},
     "#/imageGenerationConfig/height: 304 is not greater or equal to 320"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"width": 4112, "height": 1024}},
     "#/imageGenerationConfig/width: 4112 is not less or equal to 4096"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"width": 2048, "height": 2064}},
     "the total pixel count must be at most 4194304"),
    (NOVA_CANVAS, {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "x"},
                   "imageGenerationConfig": {"width": 2048, "height": 496}},
     "aspect ratio outside the supported range of 1:4 to 4:1"),
])
def test_invoke_model_image_generation_validation(bedrock, model, body, wording):
    with pytest.raises(ClientError) as info:
        bedrock.invoke_model(modelId=model, body=json.dumps(body))
    assert type(info.value).__name__ == "ValidationException"
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert wording in info.value.response["Error"]["Message"]


def test_invoke_model_image_generation_edge_sizes(bedrock):
    """What Nova Canvas takes at its limits: 2048 x 2048 (all the pixels), 4:1, and 320 x 320."""
    for width, height in ((2048, 2048), (1280, 320), (320, 320)):
        data = json.loads(bedrock.invoke_model(modelId=NOVA_CANVAS, body=image_body(
            config={"width": width, "height": height}))["body"].read())
        assert png_size(base64.b64decode(data["images"][0])) == (width, height)


@pytest.mark.parametrize("trigger, code, status", [
    ("fail-validation", "ValidationException", 400), ("fail-throttle", "ThrottlingException", 429),
    ("fail-access", "AccessDeniedException", 403), ("fail-500", "InternalServerException", 500),
])
def test_invoke_model_image_generation_typed_errors(bedrock, trigger, code, status):
    for model in (f"amazon.titan-image-generator-{trigger}-v2:0", f"us.amazon.nova-canvas-{trigger}-v1:0"):
        with pytest.raises(ClientError) as info:
            bedrock.invoke_model(modelId=model, body=image_body())
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


# --- Claude on InvokeModel (Anthropic's Messages API) ---------------------------------------------

CLAUDE = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
THINKING = {"type": "enabled", "budget_tokens": 1024}


def claude_body(text="hi there", **extra):
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 2000,
                       "messages": [{"role": "user", "content": text}], **extra})


def chunks(resp):
    """The Anthropic events an InvokeModelWithResponseStream answer carries, decoded."""
    out = []
    for event in resp["body"]:
        assert set(event) == {"chunk"} and isinstance(event["chunk"]["bytes"], bytes)
        out.append(json.loads(event["chunk"]["bytes"]))
    return out


def test_invoke_model_anthropic(bedrock, fake):
    resp = bedrock.invoke_model(modelId=CLAUDE, body=claude_body(system="be brief", anthropic_beta=["beta-1"]),
                                contentType="application/json", accept="application/json")
    assert resp["contentType"] == "application/json"
    data = json.loads(resp["body"].read())
    assert data["type"] == "message" and data["role"] == "assistant" and data["id"].startswith("msg_bdrk_")
    assert data["model"] == "claude-3-5-sonnet-20241022"
    assert data["content"] == [{"type": "text", "text": ANSWER_PREFIX + "hi there"}]
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    assert data["usage"]["input_tokens"] == 4 and data["usage"]["output_tokens"] == 6
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "4" and headers["x-amzn-bedrock-output-token-count"] == "6"
    assert headers["x-amzn-requestid"]
    sent = fake.requests[-1]
    assert sent["path"] == f"/model/{CLAUDE}/invoke" and sent["json"]["anthropic_beta"] == ["beta-1"]


def test_invoke_model_anthropic_thinking_and_tools(bedrock):
    data = json.loads(bedrock.invoke_model(modelId=CLAUDE, body=claude_body("think hard", thinking=THINKING))[
        "body"].read())
    thinking, text = data["content"]
    assert thinking == {"type": "thinking", "thinking": "Thinking about: think hard",
                        "signature": signature("Thinking about: think hard")}
    assert text["text"] == ANSWER_PREFIX + "think hard"
    assert data["usage"]["output_tokens"] == 6 + 4  # answer words + thinking words
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"location": {"type": "string"}}}}]
    data = json.loads(bedrock.invoke_model(modelId=CLAUDE, body=claude_body("weather in Paris and Tokyo?",
                                                                            tools=tools))["body"].read())
    assert data["stop_reason"] == "tool_use"
    assert [b["input"] for b in data["content"] if b["type"] == "tool_use"] == [{"location": "Paris"},
                                                                                 {"location": "Tokyo"}]


def test_invoke_model_anthropic_prompt_cache(bedrock):
    system = [{"type": "text", "text": "a long shared system prompt", "cache_control": {"type": "ephemeral"}}]
    first = bedrock.invoke_model(modelId=CLAUDE, body=claude_body(system=system))
    second = bedrock.invoke_model(modelId=CLAUDE, body=claude_body(system=system))
    one, two = (json.loads(r["body"].read())["usage"] for r in (first, second))
    assert (one["cache_creation_input_tokens"], one["cache_read_input_tokens"], one["input_tokens"]) == (5, 0, 2)
    assert (two["cache_creation_input_tokens"], two["cache_read_input_tokens"], two["input_tokens"]) == (0, 5, 2)
    assert first["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-cache-write-input-token-count"] == "5"
    assert second["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-cache-read-input-token-count"] == "5"


@pytest.mark.parametrize("body, wording", [
    ({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
     "required key [anthropic_version] not found"),
    ({"anthropic_version": "2023-06-01", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
     "#/anthropic_version"),
    ({"anthropic_version": "bedrock-2023-05-31", "messages": [{"role": "user", "content": "hi"}]},
     "required key [max_tokens] not found"),
    ({"anthropic_version": "bedrock-2023-05-31", "model": "claude", "max_tokens": 10,
      "messages": [{"role": "user", "content": "hi"}]}, "extraneous key [model] is not permitted"),
    ({"anthropic_version": "bedrock-2023-05-31", "stream": True, "max_tokens": 10,
      "messages": [{"role": "user", "content": "hi"}]}, "extraneous key [stream] is not permitted"),
    ({"anthropic_version": "bedrock-2023-05-31", "anthropic_beta": "x", "max_tokens": 10,
      "messages": [{"role": "user", "content": "hi"}]}, "expected type: JSONArray, found: String"),
    ({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "roles must alternate"),
    ({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1500, "thinking": THINKING,
      "messages": [{"role": "user", "content": "hi"}]}, None),
    ({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 1000, "thinking": THINKING,
      "messages": [{"role": "user", "content": "hi"}]}, "must be greater than `thinking.budget_tokens`"),
])
def test_invoke_model_anthropic_validation(bedrock, body, wording):
    for call in (bedrock.invoke_model, bedrock.invoke_model_with_response_stream):
        if wording is None:  # accepted: a whole answer, or a stream that runs to message_stop
            resp = call(modelId=CLAUDE, body=json.dumps(body))
            assert (chunks(resp)[-1] if "body" in resp and not hasattr(resp["body"], "read")
                    else json.loads(resp["body"].read()))["type"] in ("message", "message_stop")
            continue
        with pytest.raises(ClientError) as info:
            call(modelId=CLAUDE, body=json.dumps(body))
        assert info.value.response["Error"]["Code"] == "ValidationException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert wording in info.value.response["Error"]["Message"]


def test_invoke_model_with_response_stream_anthropic(bedrock, fake):
    body = claude_body("hello stream", thinking=THINKING)
    whole = json.loads(bedrock.invoke_model(modelId=CLAUDE, body=body)["body"].read())
    resp = bedrock.invoke_model_with_response_stream(modelId=CLAUDE, body=body, contentType="application/json",
                                                     accept="application/json")
    assert resp["contentType"] == "application/json"
    assert fake.requests[-1]["path"] == f"/model/{CLAUDE}/invoke-with-response-stream"
    events = chunks(resp)
    expected = [data for name, data in stream_events(whole) if name != "ping"]  # Bedrock sends no pings
    assert [e["type"] for e in events] == [e["type"] for e in expected]
    assert [e.get("delta") for e in events] == [e.get("delta") for e in expected]
    assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
    kinds = [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"]
    assert {"thinking_delta", "signature_delta", "text_delta"} <= set(kinds)
    text = "".join(e["delta"]["text"] for e in events if e.get("delta", {}).get("type") == "text_delta")
    assert text == ANSWER_PREFIX + "hello stream"
    assert events[0]["message"]["model"] == "claude-3-5-sonnet-20241022"
    assert events[-2]["type"] == "message_delta" and events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-1] == {"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": 2, "outputTokenCount": whole["usage"]["output_tokens"], "invocationLatency": 42,
        "firstByteLatency": 12}}


def test_invoke_model_with_response_stream_tool_deltas(bedrock):
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    events = chunks(bedrock.invoke_model_with_response_stream(
        modelId=CLAUDE, body=claude_body("weather in London", tools=tools)))
    start = next(e for e in events if e["type"] == "content_block_start" and e["index"] == 1)
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    args = "".join(e["delta"]["partial_json"] for e in events if e.get("delta", {}).get("type") == "input_json_delta")
    assert json.loads(args) == {"location": "London"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_invoke_model_with_response_stream_error_event(bedrock):
    resp = bedrock.invoke_model_with_response_stream(modelId="anthropic.claude-stream-error-v1:0",
                                                     body=claude_body("a b c d e"))
    seen = []
    with pytest.raises(EventStreamError) as info:
        for event in resp["body"]:
            seen.append(json.loads(event["chunk"]["bytes"]))
    assert info.value.response["Error"]["Code"] == "modelStreamErrorException"
    assert [e["type"] for e in seen] == ["message_start", "content_block_start", "content_block_delta",
                                         "content_block_delta"]


def test_invoke_model_with_response_stream_cut(bedrock):
    events = chunks(bedrock.invoke_model_with_response_stream(modelId="anthropic.claude-cut-stream-v1:0",
                                                              body=claude_body("a b c d e")))
    assert [e["type"] for e in events] == ["message_start", "content_block_start", "content_block_delta",
                                           "content_block_delta"]


@pytest.mark.parametrize("trigger, code, status", [
    ("fail-validation", "ValidationException", 400), ("fail-throttle", "ThrottlingException", 429),
    ("fail-access", "AccessDeniedException", 403), ("fail-503", "ServiceUnavailableException", 503),
])
def test_invoke_model_anthropic_typed_errors(bedrock, trigger, code, status):
    model = f"anthropic.claude-{trigger}-v1:0"
    for call in (bedrock.invoke_model, bedrock.invoke_model_with_response_stream):
        with pytest.raises(ClientError) as info:
            call(modelId=model, body=claude_body())
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_invoke_model_with_response_stream_needs_claude(bedrock):
    with pytest.raises(ClientError) as info:
        bedrock.invoke_model_with_response_stream(modelId="amazon.titan-embed-text-v2:0",
                                                  body=json.dumps({"inputText": "x"}))
    assert info.value.response["Error"]["Code"] == "ValidationException"


# --- signatures -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, code", [
    ({"secret": "wrong-secret"}, "InvalidSignatureException"),
    ({"key": "AKIAUNKNOWNKEY000000"}, "UnrecognizedClientException"),
])
def test_bad_credentials_are_rejected(fake, kwargs, code):
    bad = client(fake, "bedrock-runtime", **kwargs)
    with pytest.raises(ClientError) as info:
        bad.converse(modelId=MODEL, messages=user({"text": "hi"}))
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_session_token_is_checked(fake):
    fake.session_token = "session-token-1"
    with pytest.raises(ClientError):
        client(fake, "bedrock-runtime").converse(modelId=MODEL, messages=user({"text": "hi"}))
    ok = client(fake, "bedrock-runtime", token="session-token-1").converse(modelId=MODEL, messages=user({"text": "hi"}))
    assert ok["stopReason"] == "end_turn"


def _bearer_client(fake, token):
    """A boto3 client sending a Bedrock API key the way the gateway does: unsigned + bearer header.

    (botocore's own AWS_BEARER_TOKEN_BEDROCK support refuses plain-HTTP endpoints in newer
    releases, and the fake is plain HTTP.)"""
    from botocore import UNSIGNED
    from botocore.config import Config

    client = boto3.session.Session().client("bedrock-runtime", region_name="us-east-1", endpoint_url=fake.url,
                                            config=Config(signature_version=UNSIGNED))

    def add_bearer(request, **kwargs):
        request.headers["Authorization"] = f"Bearer {token}"
    client.meta.events.register("before-send.bedrock-runtime.*", add_bearer)
    return client


def test_bedrock_api_key_bearer_auth(fake, monkeypatch):
    fake.bearer_token = "bedrock-api-key-0123"
    try:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
            monkeypatch.delenv(name, raising=False)
        keyless = _bearer_client(fake, "bedrock-api-key-0123")
        assert keyless.converse(modelId=MODEL, messages=user({"text": "hi"}))["stopReason"] == "end_turn"
        assert fake.requests[-1]["headers"]["authorization"] == "Bearer bedrock-api-key-0123"
        wrong = _bearer_client(fake, "wrong-key")
        with pytest.raises(ClientError) as info:
            wrong.converse(modelId=MODEL, messages=user({"text": "hi"}))
        assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    finally:
        fake.bearer_token = None


def test_unsigned_request_is_rejected(fake):
    import requests

    resp = requests.post(f"{fake.url}/model/{MODEL}/converse", json={"messages": []}, timeout=5)
    assert resp.status_code == 403
    assert resp.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException")


def test_event_stream_framing_round_trips_through_botocore():
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(encode_message({":event-type": "chunk", ":message-type": "event"}, b"payload"))
    message = next(iter(buffer))
    assert message.headers == {":event-type": "chunk", ":message-type": "event"} and message.payload == b"payload"


# --- SageMaker ------------------------------------------------------------------------------------

def test_invoke_endpoint(sagemaker, fake):
    body = {"inputs": "hello there friend", "parameters": {"details": True, "max_new_tokens": 100}}
    resp = sagemaker.invoke_endpoint(EndpointName="my-tgi", Body=json.dumps(body), ContentType="application/json",
                                     Accept="application/json")
    assert resp["ContentType"] == "application/json" and resp["InvokedProductionVariant"] == "AllTraffic"
    data = json.loads(resp["Body"].read())
    assert data[0]["generated_text"] == sagemaker_answer("hello there friend")
    assert data[0]["details"]["finish_reason"] == "eos_token"
    assert fake.requests[-1]["path"] == "/endpoints/my-tgi/invocations"


def test_invoke_endpoint_stop_keeps_the_sequence(sagemaker):
    body = {"inputs": "x", "parameters": {"details": True, "stop": ["fake"]}}
    data = json.loads(sagemaker.invoke_endpoint(EndpointName="e", Body=json.dumps(body))["Body"].read())
    assert data[0]["generated_text"] == "Hello from fake" and data[0]["details"]["finish_reason"] == "stop_sequence"


def test_invoke_endpoint_embeddings(sagemaker):
    resp = sagemaker.invoke_endpoint(EndpointName="my-embed-endpoint", Body=json.dumps({"text_inputs": ["a", "b"]}))
    assert [len(v) for v in json.loads(resp["Body"].read())["embedding"]] == [384, 384]


def test_invoke_endpoint_with_response_stream(sagemaker, fake):
    body = {"inputs": "hello there friend", "parameters": {"details": True}, "stream": True}
    resp = sagemaker.invoke_endpoint_with_response_stream(EndpointName="my-tgi", Body=json.dumps(body),
                                                          ContentType="application/json")
    parts = [e["PayloadPart"]["Bytes"] for e in resp["Body"]]
    assert len(parts) > 3 and not all(p.endswith(b"\n\n") for p in parts)  # lines straddle parts
    lines = [json.loads(line[5:]) for line in b"".join(parts).split(b"\n\n") if line.startswith(b"data:")]
    text = "".join(x["token"]["text"] for x in lines if not x["token"]["special"])
    assert text == sagemaker_answer("hello there friend")
    assert lines[-1]["details"]["finish_reason"] == "eos_token" and lines[-1]["token"]["special"]


def test_response_stream_error_event(sagemaker):
    resp = sagemaker.invoke_endpoint_with_response_stream(
        EndpointName="stream-error-endpoint", Body=json.dumps({"inputs": "x", "stream": True}))
    with pytest.raises(EventStreamError) as info:
        list(resp["Body"])
    assert info.value.response["Error"]["Code"] == "ModelStreamError"


@pytest.mark.parametrize("endpoint, body, code, status", [
    ("missing-endpoint", {"inputs": "x"}, "ValidationError", 400),
    ("model-error", {"inputs": "x"}, "ModelError", 424),
    ("e", {"inputs": "x", "parameters": {"temperature": 0}}, "ModelError", 424),
    ("e", {"inputs": "x", "parameters": {"top_p": 1.0}}, "ModelError", 424),
    ("fail-500", {"inputs": "x"}, "InternalFailure", 500),
    ("fail-503", {"inputs": "x"}, "ServiceUnavailable", 503),
])
def test_sagemaker_typed_errors(sagemaker, endpoint, body, code, status):
    with pytest.raises(ClientError) as info:
        sagemaker.invoke_endpoint(EndpointName=endpoint, Body=json.dumps(body))
    assert info.value.response["Error"]["Code"] == code
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    if code == "ModelError":
        assert info.value.response["OriginalStatusCode"] == 422
        assert "Input validation error" in info.value.response["OriginalMessage"]


def test_credentials_scoped_to_the_wrong_service_are_rejected(fake):
    assert fake.check_signature("POST", "/endpoints/e/invocations", {
        "authorization": f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20240101/us-east-1/bedrock/aws4_request, "
                         "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        "host": "h", "x-amz-date": "20240101T000000Z"}, b"")[1] == "InvalidSignatureException"
