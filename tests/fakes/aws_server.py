"""A fake AWS upstream: the Bedrock Runtime and SageMaker Runtime REST APIs boto3 speaks, on loopback.

Every request's SigV4 signature is recomputed with botocore's signer from the received method, path,
headers and body (at the request's own X-Amz-Date) and must match, or the answer is AWS's 403. Bedrock
also takes `Authorization: Bearer <bearer_token>` (Bedrock API keys) when the fake has one.

Routes (boto3 `endpoint_url` = FakeAWS.url)
    Bedrock:   POST /model/{modelId}/converse          JSON Converse answer
               POST /model/{modelId}/converse-stream   application/vnd.amazon.eventstream, chunked
               POST /model/{modelId}/invoke            Titan / Cohere embeddings; Claude ("anthropic." in the
                                                       id): Anthropic's Messages API, as Bedrock hosts it;
                                                       Titan Image Generator / Nova Canvas: TEXT_IMAGE
               POST /model/{modelId}/invoke-with-response-stream
                                                       Claude only: one `chunk` event per Anthropic stream event
    SageMaker: POST /endpoints/{name}/invocations                  TGI (or embeddings when the name has "embed")
               POST /endpoints/{name}/invocations-response-stream  TGI SSE lines in PayloadPart events,
                                                                   split across parts on purpose

Answers are deterministic: Bedrock chat says ``bedrock_answer(last user text)``; with tools offered and
"weather" in the last user text it calls the (first weather) tool once per city ("weather in Paris
and Tokyo" -> two calls); after a tool result it answers ``"The tool said: <result>"``. SageMaker says
``sagemaker_answer(prompt)``. Token counts are whitespace word counts.

Claude on InvokeModel: the body is an Anthropic Messages body without ``model`` and ``stream``, with
``"anthropic_version": "bedrock-2023-05-31"`` (required) and optional ``anthropic_beta`` (a list of
strings); a missing or wrong version, a missing max_tokens/messages, a key Bedrock does not take (model,
stream, ...) or a malformed anthropic_beta is a ValidationException in Bedrock's "Malformed input
request" wording. The rest (with the model id as ``model``) goes through the Anthropic fake's
``validate`` (its message becomes the ValidationException's) and ``plan``, so the answer is the Anthropic
fake's message ("Hello from fake anthropic: ...", thinking blocks, tool calls, and its prompt-cache usage,
kept per FakeAWS in ``cache``) with a ``msg_bdrk_`` id and the Anthropic model name (``claude-...``,
without region prefix and ``-vN:M`` suffix). Headers: X-Amzn-Bedrock-Input-Token-Count (uncached input),
-Output-Token-Count, -Invocation-Latency and, when non-zero, -Cache-Read-Input-Token-Count and
-Cache-Write-Input-Token-Count. The stream sends the Anthropic fake's event sequence (without ping) as
``chunk`` events whose JSON payload is ``{"bytes": base64(event JSON)}`` (boto3 yields ``{"chunk":
{"bytes": b'<event JSON>'}}``); message_stop carries ``amazon-bedrock-invocationMetrics``
(inputTokenCount, outputTokenCount, invocationLatency, firstByteLatency, plus cacheRead/WriteInputTokenCount
when non-zero).

Image models on InvokeModel ("titan-image-generator" or "nova-canvas" in the id, so amazon.titan-image-
generator-v1, amazon.titan-image-generator-v2:0, amazon.nova-canvas-v1:0, with or without a region prefix):
the body is ``{"taskType": "TEXT_IMAGE", "textToImageParams": {"text", "negativeText"?, ...},
"imageGenerationConfig"?: {"numberOfImages", "width", "height", "quality", "cfgScale", "seed"}}`` (only
TEXT_IMAGE; see ``image_request_problem`` for every rule and its wording). The answer is ``{"images":
[base64 PNG, ...], "error": null}`` for Titan and ``{"images": [...]}`` for Nova Canvas (whose ``error``
only comes with content-filtered output), numberOfImages solid-colour PNGs of the asked width x height
(colour from prompt, seed and index), with x-amzn-RequestId and X-Amzn-Bedrock-Invocation-Latency.

Triggers (substring of model id / endpoint name): fail-validation, context-length, fail-access,
fail-notfound, fail-throttle, fail-timeout, fail-500, fail-503 (AWS error answers), slow (answer after
``slow_seconds``), stream-error (a modelStreamErrorException event after two deltas; Claude streams:
two deltas of the first block); SageMaker also missing-endpoint
and model-error (a ModelError wrapping TGI's context-length validation error); cut-stream (a stream
whose body just ends after two pieces, without messageStop / TGI's final line).
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import struct
import time
import uuid
import zlib
from functools import lru_cache
from urllib.parse import unquote
from urllib.parse import urlsplit

from tests.fakes.anthropic_server import TOP_LEVEL as ANTHROPIC_TOP_LEVEL
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import Invalid
from tests.fakes.anthropic_server import plan as anthropic_plan
from tests.fakes.anthropic_server import stream_events as anthropic_stream_events
from tests.fakes.anthropic_server import validate as anthropic_validate
from tests.fakes.http import CLIENT_GONE
from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer
from tests.fakes.openai_server import fake_embedding

ACCESS_KEY = "AKIAFAKEACCESSKEY123"
SECRET_KEY = "fake/secret+KEY0123456789abcdefghijklmno"
ACCOUNT = "123456789012"
BEDROCK_PREFIX = "Hello from fake bedrock: "
SAGEMAKER_PREFIX = "Hello from fake sagemaker: "
EVENTSTREAM = "application/vnd.amazon.eventstream"
BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
# What an Anthropic body on InvokeModel may hold: the Messages API's fields but model and stream, plus
# Bedrock's version and beta fields.
ANTHROPIC_INVOKE_KEYS = (ANTHROPIC_TOP_LEVEL - {"model", "stream"}) | {"anthropic_version", "anthropic_beta"}
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
                   r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$")
_BAD_SIGNATURE = ("The request signature we calculated does not match the signature you provided. Check "
                  "your AWS Secret Access Key and signing method. Consult the service documentation for details.")
_BEDROCK_FAILURES = {
    "fail-validation": (400, "ValidationException", "Malformed input request: #: extraneous key [foo] is not "
                        "permitted, please reformat your input and try again."),
    "context-length": (400, "ValidationException", "Input is too long for requested model."),
    "fail-access": (403, "AccessDeniedException", "You don't have access to the model with the specified model ID."),
    "fail-notfound": (404, "ResourceNotFoundException", "Could not resolve the foundation model from the "
                      "provided model identifier."),
    "fail-throttle": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "fail-timeout": (408, "ModelTimeoutException", "Model has timed out in processing the request. Try your "
                     "request again."),
    "fail-500": (500, "InternalServerException", "The server encountered an internal error while processing "
                 "the request."),
    "fail-503": (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
}
_SAGEMAKER_FAILURES = {
    "fail-validation": (400, "ValidationError", "1 validation error detected: Value at 'body' failed to satisfy "
                        "constraint."),
    "fail-throttle": (429, "ThrottlingException", "Rate exceeded"),
    "fail-500": (500, "InternalFailure", "An internal failure occurred."),
    "fail-503": (503, "ServiceUnavailable", "The service is unavailable. Try again later."),
}
TGI_CONTEXT_ERROR = ("Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048. Given: 2000 "
                     "`inputs` tokens and 100 `max_new_tokens`")


def words(text):
    """The fake tokenizer: whitespace word count."""
    return len(text.split())


def bedrock_answer(text):
    """What the fake Bedrock model says to a user text."""
    return BEDROCK_PREFIX + text


def sagemaker_answer(prompt):
    """What the fake TGI model generates for a prompt."""
    return f"{SAGEMAKER_PREFIX}I read {words(prompt)} words."


def _pieces(text):
    return re.findall(r"\S+\s*", text) or ([text] if text else [])


# --- event-stream framing ---------------------------------------------------------------------------

def _header(name, value):
    name, value = name.encode(), value.encode()
    return struct.pack(">B", len(name)) + name + b"\x07" + struct.pack(">H", len(value)) + value


def encode_message(headers, payload):
    """One application/vnd.amazon.eventstream message: prelude, CRCs, string headers, payload."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(raw_headers) + len(payload) + 4, len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event_message(event_type, payload, content_type="application/json"):
    """An `event` message; dict payloads are JSON with AWS's random-length `p` padding field."""
    if isinstance(payload, dict):
        payload = json.dumps({**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"[:len(event_type)]}).encode()
    return encode_message({":event-type": event_type, ":content-type": content_type,
                           ":message-type": "event"}, payload)


def exception_message(exception_type, body):
    """An `exception` message, as AWS sends a modeled error inside a started stream."""
    return encode_message({":exception-type": exception_type, ":content-type": "application/json",
                           ":message-type": "exception"}, json.dumps(body).encode())


# --- Bedrock logic --------------------------------------------------------------------------------

def _last_user(messages):
    for msg in reversed(messages or []):
        if msg.get("role") == "user":
            return msg.get("content") or []
    return []


def _schema_sample(schema, text):
    props = (schema or {}).get("properties") or {}
    if not props:
        return {"answer": text}
    kinds = {"string": text, "integer": words(text), "number": float(words(text)), "boolean": True}
    return {name: kinds.get((spec or {}).get("type"), text) for name, spec in props.items()}


def converse_plan(body):
    """(blocks, stopReason, usage) for a Converse request; blocks are text or toolUse dicts."""
    messages = body.get("messages") or []
    last = _last_user(messages)
    texts = [b["text"] for b in last if "text" in b]
    results = [b["toolResult"] for b in last if "toolResult" in b]
    images = [b["image"] for b in last if "image" in b]
    user_text = " ".join(texts)
    tools = [t["toolSpec"] for t in (body.get("toolConfig") or {}).get("tools") or []]
    choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
    blocks, stop = [], "end_turn"
    if results:
        said = " ".join(c.get("text") or json.dumps(c.get("json")) for r in results for c in r.get("content") or [])
        answer = f"The tool said: {said}"
    else:
        answer = bedrock_answer(user_text)
        if images:
            seen = ", ".join(f"{img['format']} {len(base64.b64decode(img['source']['bytes']))} bytes" for img in images)
            answer += f" [images: {seen}]"
    forced = (choice.get("tool") or {}).get("name")
    if tools and forced:
        spec = next(t for t in tools if t["name"] == forced)
        blocks.append({"toolUse": {"toolUseId": f"tooluse_{uuid.uuid4().hex[:22]}", "name": forced,
                                   "input": _schema_sample(spec["inputSchema"]["json"], answer)}})
        stop = "tool_use"
    elif tools and not results and ("weather" in user_text.lower() or "any" in choice):
        tool = next((t for t in tools if "weather" in t["name"]), tools[0])
        match = re.search(r"weather in ([\w ,]+)", user_text, re.I)
        cities = re.split(r"\s*(?:,|\band\b)\s*", match.group(1).strip()) if match else ["Paris"]
        blocks.append({"text": "Let me check the weather."})
        for city in [c for c in cities if c]:
            blocks.append({"toolUse": {"toolUseId": f"tooluse_{uuid.uuid4().hex[:22]}", "name": tool["name"],
                                       "input": {"location": city}}})
        stop = "tool_use"
    else:
        config = body.get("inferenceConfig") or {}
        for seq in config.get("stopSequences") or []:
            if seq in answer:
                answer, stop = answer[:answer.index(seq)], "stop_sequence"
        limit = config.get("maxTokens")
        if limit is not None and words(answer) > limit:
            answer, stop = " ".join(answer.split()[:limit]), "max_tokens"
        blocks.append({"text": answer})
    prompt_text = " ".join(b.get("text", "") for b in body.get("system") or [])
    prompt_text += " " + " ".join(c.get("text", "") for m in messages for c in m.get("content") or [])
    out_words = sum(words(b.get("text", "")) or 0 for b in blocks) + sum(
        words(json.dumps(b["toolUse"]["input"])) for b in blocks if "toolUse" in b)
    usage = {"inputTokens": words(prompt_text), "outputTokens": out_words,
             "totalTokens": words(prompt_text) + out_words}
    return blocks, stop, usage


def tgi_generation(body):
    """(generated text, finish_reason, tokens) the fake TGI model produces for a payload."""
    params = body.get("parameters") or {}
    text, finish = sagemaker_answer(body.get("inputs") or ""), "eos_token"
    for seq in params.get("stop") or []:
        if seq in text:  # TGI keeps the stop sequence in its output
            text, finish = text[:text.index(seq) + len(seq)], "stop_sequence"
    limit = params.get("max_new_tokens")
    if limit is not None and words(text) > limit:
        text, finish = " ".join(text.split()[:limit]), "length"
    return text, finish, _pieces(text)


def tgi_validation_error(body):
    """TGI's input validation message for a payload, or None."""
    params = body.get("parameters") or {}
    if not isinstance(body.get("inputs"), str):
        return "Failed to deserialize the JSON body into the target type: missing field `inputs`"
    if "temperature" in params and not params["temperature"] > 0:
        return "Input validation error: `temperature` must be strictly positive"
    if "top_p" in params and not 0 < params["top_p"] < 1:
        return "Input validation error: `top_p` must be > 0.0 and < 1.0"
    if "max_new_tokens" in params and params["max_new_tokens"] < 1:
        return "Input validation error: `max_new_tokens` must be strictly positive"
    return None


def _malformed(problem):
    return f"Malformed input request: {problem}, please reformat your input and try again."


def _json_type(value):
    """A JSON value's type as Bedrock's schema validator names it."""
    for kind, name in ((bool, "Boolean"), (str, "String"), (int, "Integer"), (float, "Number"),
                       (list, "JSONArray"), (dict, "JSONObject")):
        if isinstance(value, kind):
            return name
    return "Null"


def anthropic_request(model, body):
    """The Anthropic Messages body an InvokeModel body for Claude stands for (its Bedrock fields dropped,
    the model id as `model`); raises Invalid with Bedrock's wording when Bedrock or Anthropic refuses it."""
    for key in ("anthropic_version", "max_tokens", "messages"):
        if key not in body:
            raise Invalid(_malformed(f"#: required key [{key}] not found"))
    extra = sorted(set(body) - ANTHROPIC_INVOKE_KEYS)
    if extra:
        raise Invalid(_malformed(f"#: extraneous key [{extra[0]}] is not permitted"))
    if body["anthropic_version"] != BEDROCK_ANTHROPIC_VERSION:
        raise Invalid(_malformed(f"#/anthropic_version: {body['anthropic_version']} is not a valid enum value"))
    beta = body.get("anthropic_beta", [])
    if not isinstance(beta, list):
        raise Invalid(_malformed(f"#/anthropic_beta: expected type: JSONArray, found: {_json_type(beta)}"))
    for n, flag in enumerate(beta):
        if not isinstance(flag, str):
            raise Invalid(_malformed(f"#/anthropic_beta/{n}: expected type: String, found: {_json_type(flag)}"))
    request = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
    request["model"] = model
    anthropic_validate(request)
    return request


def anthropic_model_name(model):
    """The Anthropic model name a Bedrock id names: us.anthropic.claude-x-20241022-v2:0 -> claude-x-20241022."""
    name = model.split("anthropic.", 1)[1]
    return re.sub(r"-v\d+(?::\d+)?$", "", name)


def invocation_metrics(usage):
    """Bedrock's amazon-bedrock-invocationMetrics for an Anthropic usage (cache counts when non-zero)."""
    metrics = {"inputTokenCount": usage["input_tokens"], "outputTokenCount": usage["output_tokens"],
               "invocationLatency": 42, "firstByteLatency": 12}
    if usage.get("cache_read_input_tokens"):
        metrics["cacheReadInputTokenCount"] = usage["cache_read_input_tokens"]
    if usage.get("cache_creation_input_tokens"):
        metrics["cacheWriteInputTokenCount"] = usage["cache_creation_input_tokens"]
    return metrics


def chunk_event(data):
    """One InvokeModelWithResponseStream `chunk` event: the JSON payload {"bytes": base64(data JSON)}."""
    return event_message("chunk", {"bytes": base64.b64encode(json.dumps(data).encode()).decode()})


# --- Bedrock image generation (Titan Image Generator G1 v1/v2, Nova Canvas) --------------------------

# Titan Image Generator G1 (v1 and v2): the (width, height) pairs AWS documents, nothing else.
TITAN_IMAGE_SIZES = (
    (1024, 1024), (768, 768), (512, 512), (768, 1152), (384, 576), (1152, 768), (576, 384), (768, 1280),
    (384, 640), (1280, 768), (640, 384), (896, 1152), (448, 576), (1152, 896), (576, 448), (768, 1408),
    (384, 704), (1408, 768), (704, 384), (640, 1408), (320, 704), (1408, 640), (704, 320), (1152, 640),
    (1173, 640))
NOVA_MAX_PIXELS = 4_194_304  # 2048 x 2048
# What each model takes: prompt length limit, seed maximum, and the textToImageParams keys its schema knows
# (image conditioning, and Nova's style, are accepted and ignored; Titan v1 knows only text and negativeText).
_IMAGE_LIMITS = {
    "titan": {"text": 512, "seed": 2_147_483_646,
              "params": {"text", "negativeText", "conditionImage", "controlMode", "controlStrength"}},
    "nova": {"text": 1024, "seed": 858_993_459,
             "params": {"text", "negativeText", "style", "conditionImage", "controlMode", "controlStrength"}},
}
_IMAGE_CONFIG_KEYS = {"numberOfImages", "width", "height", "quality", "cfgScale", "seed"}


def image_family(model):
    """"nova" or "titan" for an image model id, None for any other model."""
    if "nova-canvas" in model:
        return "nova"
    return "titan" if "titan-image-generator" in model else None


def _check_type(path, value, kind):
    """Bedrock's schema complaint when a value is not of the JSON type (`Integer`, `Number`, `String`,
    `JSONObject`), else None. Booleans are no numbers; whole numbers are Numbers."""
    found = _json_type(value)
    if found == kind or (kind == "Number" and found == "Integer"):
        return None
    return _malformed(f"{path}: expected type: {kind}, found: {found}")


def _check_range(path, value, low, high):
    if value < low:
        return _malformed(f"{path}: {value} is not greater or equal to {low}")
    if value > high:
        return _malformed(f"{path}: {value} is not less or equal to {high}")
    return None


def image_request_problem(model, body):
    """The ValidationException message Bedrock gives a TEXT_IMAGE body for this image model, or None.

    Schema rules first (wording of Bedrock's JSON-schema validator, "Malformed input request: #/...:
    ..., please reformat your input and try again."): taskType required and TEXT_IMAGE; textToImageParams
    required object; text required string of 1-512 characters (Titan) or 1-1024 (Nova Canvas), negativeText
    the same when present; imageGenerationConfig optional object; numberOfImages integer 1-5; quality
    "standard" or "premium"; cfgScale number 1.1-10.0; seed integer 0-2147483646 (Titan) or 0-858993459
    (Nova Canvas); no keys besides the documented ones. Then the size: Titan takes only its documented
    width x height pairs; Nova Canvas takes widths and heights of 320-4096 that are multiples of 16, at most
    4,194,304 pixels in all and an aspect ratio between 1:4 and 4:1. Both default to 1024 x 1024."""
    limits = _IMAGE_LIMITS[image_family(model)]
    allowed = {"text", "negativeText"} if "titan-image-generator-v1" in model else limits["params"]
    for key in ("taskType", "textToImageParams"):
        if key not in body:
            return _malformed(f"#: required key [{key}] not found")
    extra = sorted(set(body) - {"taskType", "textToImageParams", "imageGenerationConfig"})
    if extra:
        return _malformed(f"#: extraneous key [{extra[0]}] is not permitted")
    if body["taskType"] != "TEXT_IMAGE":
        return _malformed(f"#/taskType: {body['taskType']} is not a valid enum value")
    params = body["textToImageParams"]
    problem = _check_type("#/textToImageParams", params, "JSONObject")
    if problem:
        return problem
    if "text" not in params:
        return _malformed("#/textToImageParams: required key [text] not found")
    extra = sorted(set(params) - allowed)
    if extra:
        return _malformed(f"#/textToImageParams: extraneous key [{extra[0]}] is not permitted")
    for key in ("text", "negativeText"):
        if key not in params:
            continue
        path, value = f"#/textToImageParams/{key}", params[key]
        problem = _check_type(path, value, "String")
        if problem:
            return problem
        if not value:
            return _malformed(f"{path}: expected minLength: 1, actual: 0")
        if len(value) > limits["text"]:
            return _malformed(f"{path}: expected maxLength: {limits['text']}, actual: {len(value)}")
    config = body.get("imageGenerationConfig", {})
    problem = _check_type("#/imageGenerationConfig", config, "JSONObject")
    if problem:
        return problem
    extra = sorted(set(config) - _IMAGE_CONFIG_KEYS)
    if extra:
        return _malformed(f"#/imageGenerationConfig: extraneous key [{extra[0]}] is not permitted")
    ranges = {"numberOfImages": ("Integer", 1, 5), "cfgScale": ("Number", 1.1, 10.0),
              "seed": ("Integer", 0, limits["seed"]), "width": ("Integer", None, None),
              "height": ("Integer", None, None)}
    for key, (kind, low, high) in ranges.items():
        if key not in config:
            continue
        path = f"#/imageGenerationConfig/{key}"
        problem = _check_type(path, config[key], kind) or (
            _check_range(path, config[key], low, high) if low is not None else None)
        if problem:
            return problem
    if "quality" in config and config["quality"] not in ("standard", "premium"):
        return _malformed(f"#/imageGenerationConfig/quality: {config['quality']} is not a valid enum value")
    width, height = config.get("width", 1024), config.get("height", 1024)
    if image_family(model) == "titan":
        if (width, height) not in TITAN_IMAGE_SIZES:
            sizes = ", ".join(f"{w}x{h}" for w, h in TITAN_IMAGE_SIZES)
            return (f"The provided image size {width}x{height} is not supported. Supported sizes (width x "
                    f"height): {sizes}.")
        return None
    for key, value in (("width", width), ("height", height)):
        path = f"#/imageGenerationConfig/{key}"
        problem = _check_range(path, value, 320, 4096)
        if problem:
            return problem
        if value % 16:
            return _malformed(f"{path}: {value} is not a multiple of 16")
    if width * height > NOVA_MAX_PIXELS:
        return (f"The image size {width}x{height} has {width * height} pixels; the total pixel count must be "
                f"at most {NOVA_MAX_PIXELS}.")
    if not 0.25 <= width / height <= 4:
        return f"The image size {width}x{height} has an aspect ratio outside the supported range of 1:4 to 4:1."
    return None


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", binascii.crc32(kind + data))


@lru_cache(maxsize=64)
def solid_png(width, height, rgb):
    """A valid PNG of width x height pixels, all of colour `rgb` (3 bytes), as bytes."""
    row = b"\x00" + rgb * width  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(row * height, 9)) + _png_chunk(b"IEND", b""))


def generated_images(body):
    """The base64 PNGs the fake image model paints for an (already validated) TEXT_IMAGE body."""
    config = body.get("imageGenerationConfig") or {}
    width, height = config.get("width", 1024), config.get("height", 1024)
    seed = config.get("seed", 0)
    images = []
    for index in range(config.get("numberOfImages", 1)):
        rgb = hashlib.sha256(f"{body['textToImageParams']['text']}|{seed}|{index}".encode()).digest()[:3]
        images.append(base64.b64encode(solid_png(width, height, rgb)).decode())
    return images


class AWSHandler(FakeHandler):
    """One connection of the fake AWS upstream."""

    server_version = "fake-aws"

    def _dispatch(self, method):
        raw_path = self.path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = unquote(urlsplit(raw_path).path)
        fake = self.server.fake
        fake.record({"method": method, "path": path, "raw_path": raw_path, "headers": headers,
                     "json": body, "raw": raw})
        try:
            denial = fake.check_signature(method, raw_path, headers, raw)
            if denial:
                return self.aws_error(*denial)
            self.route(method, path, {}, headers, body if body is not None else raw)
        except CLIENT_GONE:
            self.close_connection = True

    def aws_error(self, status, code, message, extra=None):
        """AWS's REST-JSON error answer: x-amzn-ErrorType names the code."""
        namespace = "sagemaker.runtime" if self.path.startswith("/endpoints/") else "bedrock"
        self.send_json(status, {"message": message, **(extra or {})}, headers={
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.{namespace}/",
            "x-amzn-RequestId": str(uuid.uuid4())})

    def route(self, method, path, query, headers, body):
        """Dispatch on the REST path."""
        fake = self.server.fake
        parts = path.strip("/").split("/")
        if method != "POST" or len(parts) != 3 or parts[0] not in ("model", "endpoints"):
            return self.aws_error(404, "UnknownOperationException", "Unknown operation")
        kind, name, action = parts
        if "slow" in name:
            time.sleep(fake.slow_seconds)
        if not isinstance(body, dict):
            return self.aws_error(400, "ValidationException" if kind == "model" else "ValidationError",
                                  "Malformed input request, please reformat your input and try again.")
        if kind == "model":
            failure = next((v for k, v in _BEDROCK_FAILURES.items() if k in name), None)
            if failure:
                return self.aws_error(*failure)
            handler = {"converse": self.converse, "converse-stream": self.converse_stream,
                       "invoke": self.invoke_model,
                       "invoke-with-response-stream": self.invoke_model_stream}.get(action)
        else:
            if "missing-endpoint" in name:
                return self.aws_error(400, "ValidationError", f"Endpoint {name} of account {ACCOUNT} not found.")
            if "model-error" in name:
                return self.model_error(name, 422, {"error": TGI_CONTEXT_ERROR, "error_type": "validation"})
            failure = next((v for k, v in _SAGEMAKER_FAILURES.items() if k in name), None)
            if failure:
                return self.aws_error(*failure)
            handler = {"invocations": self.invocations,
                       "invocations-response-stream": self.invocations_stream}.get(action)
        if handler is None:
            return self.aws_error(404, "UnknownOperationException", "Unknown operation")
        return handler(name, body)

    # --- Bedrock ----------------------------------------------------------------------------------

    def converse(self, model, body):
        if not body.get("messages"):
            return self.aws_error(400, "ValidationException", "A conversation must start with a user message.")
        blocks, stop, usage = converse_plan(body)
        self.send_json(200, {"output": {"message": {"role": "assistant", "content": blocks}},
                             "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 42}},
                       headers={"x-amzn-RequestId": str(uuid.uuid4())})

    def converse_stream(self, model, body):
        blocks, stop, usage = converse_plan(body)
        self.start_chunked(EVENTSTREAM, headers={"x-amzn-RequestId": str(uuid.uuid4())})
        self.write_chunk(event_message("messageStart", {"role": "assistant"}))
        for index, block in enumerate(blocks):
            if "text" in block:
                pieces = _pieces(block["text"])
                for n, piece in enumerate(pieces):
                    if "stream-error" in model and n == 2:
                        self.write_chunk(exception_message("modelStreamErrorException", {
                            "message": "The model stream broke.", "originalStatusCode": 500}))
                        return self.end_chunked()
                    if "cut-stream" in model and n == 2:
                        return self.end_chunked()  # the body just ends: no messageStop, no metadata
                    self.write_chunk(event_message("contentBlockDelta", {
                        "contentBlockIndex": index, "delta": {"text": piece}}))
            else:
                use = block["toolUse"]
                self.write_chunk(event_message("contentBlockStart", {"contentBlockIndex": index, "start": {
                    "toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
                args = json.dumps(use["input"])
                for start in range(0, len(args), 7):  # arguments arrive as several string fragments
                    self.write_chunk(event_message("contentBlockDelta", {
                        "contentBlockIndex": index, "delta": {"toolUse": {"input": args[start:start + 7]}}}))
            self.write_chunk(event_message("contentBlockStop", {"contentBlockIndex": index}))
        self.write_chunk(event_message("messageStop", {"stopReason": stop}))
        self.write_chunk(event_message("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}))
        self.end_chunked()

    def claude_message(self, model, body):
        """(Anthropic message, None) for an InvokeModel body for Claude, or (None, the refusal's message)."""
        try:
            request = anthropic_request(model, body)
        except Invalid as exc:
            return None, str(exc)
        content, stop_reason, stop_sequence, _, output_tokens = anthropic_plan(request)
        usage = self.server.fake.cache_usage(request)
        return {"id": "msg_bdrk_01" + uuid.uuid4().hex[:22], "type": "message", "role": "assistant",
                "model": anthropic_model_name(model), "content": content, "stop_reason": stop_reason,
                "stop_sequence": stop_sequence,
                "usage": {"input_tokens": usage.pop("input_tokens"), "output_tokens": output_tokens, **usage}}, None

    def invoke_model(self, model, body):
        headers = {"x-amzn-RequestId": str(uuid.uuid4()), "X-Amzn-Bedrock-Invocation-Latency": "12"}
        if "anthropic." in model:
            message, problem = self.claude_message(model, body)
            if problem:
                return self.aws_error(400, "ValidationException", problem)
            usage = message["usage"]
            headers["X-Amzn-Bedrock-Input-Token-Count"] = str(usage["input_tokens"])
            headers["X-Amzn-Bedrock-Output-Token-Count"] = str(usage["output_tokens"])
            if usage["cache_read_input_tokens"]:
                headers["X-Amzn-Bedrock-Cache-Read-Input-Token-Count"] = str(usage["cache_read_input_tokens"])
            if usage["cache_creation_input_tokens"]:
                headers["X-Amzn-Bedrock-Cache-Write-Input-Token-Count"] = str(usage["cache_creation_input_tokens"])
            return self.send_json(200, message, headers=headers)
        if image_family(model):
            problem = image_request_problem(model, body)
            if problem:
                return self.aws_error(400, "ValidationException", problem)
            answer = {"images": generated_images(body)}
            if image_family(model) == "titan":
                answer["error"] = None  # Nova Canvas sends `error` only when its content filter dropped images
            return self.send_json(200, answer, headers=headers)
        if "titan-embed" in model:
            text = body.get("inputText")
            if not isinstance(text, str):
                return self.aws_error(400, "ValidationException", "Malformed input request: #: required key "
                                      "[inputText] not found, please reformat your input and try again.")
            dims = body.get("dimensions", 1024 if "v2" in model else 1536)
            if "v2" in model and dims not in (256, 512, 1024):
                return self.aws_error(400, "ValidationException", "Malformed input request: #/dimensions: "
                                      f"{dims} is not a valid enum value, please reformat your input and try again.")
            tokens = words(text)
            headers["X-Amzn-Bedrock-Input-Token-Count"] = str(tokens)
            return self.send_json(200, {"embedding": fake_embedding(text, dims), "inputTextTokenCount": tokens},
                                  headers=headers)
        if "cohere.embed" in model:
            texts = body.get("texts")
            if not isinstance(texts, list) or not body.get("input_type"):
                return self.aws_error(400, "ValidationException", "Malformed input request: #: required key "
                                      "[input_type] not found, please reformat your input and try again.")
            headers["X-Amzn-Bedrock-Input-Token-Count"] = str(sum(words(t) for t in texts))
            return self.send_json(200, {"id": str(uuid.uuid4()), "texts": texts, "response_type": "embeddings_floats",
                                        "embeddings": [fake_embedding(t, 1024) for t in texts]}, headers=headers)
        return self.aws_error(400, "ValidationException", "The provided model identifier is invalid.")

    def invoke_model_stream(self, model, body):
        """Claude's Messages stream: the Anthropic fake's events (no ping) as `chunk` events."""
        if "anthropic." not in model:
            return self.aws_error(400, "ValidationException", "The provided model identifier is invalid.")
        message, problem = self.claude_message(model, body)
        if problem:
            return self.aws_error(400, "ValidationException", problem)
        broken = "stream-error" in model or "cut-stream" in model
        events = [(name, data) for name, data in anthropic_stream_events(message, cut_midway=broken)
                  if name != "ping"]
        self.start_chunked(EVENTSTREAM, headers={"x-amzn-RequestId": str(uuid.uuid4()),
                                                 "X-Amzn-Bedrock-Content-Type": "application/json"})
        for name, data in events:
            if name == "message_stop":
                data = {**data, "amazon-bedrock-invocationMetrics": invocation_metrics(message["usage"])}
            self.write_chunk(chunk_event(data))
        if "stream-error" in model:
            self.write_chunk(exception_message("modelStreamErrorException", {
                "message": "The model stream broke.", "originalStatusCode": 500}))
        self.end_chunked()

    # --- SageMaker --------------------------------------------------------------------------------

    def model_error(self, name, original_status, original):
        original = json.dumps(original)
        self.aws_error(424, "ModelError", f'Received client error ({original_status}) from primary with message '
                       f'"{original}". See https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1'
                       f'#logEventViewer:group=/aws/sagemaker/Endpoints/{name} in account {ACCOUNT} for more '
                       "information.", extra={
                           "ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": original_status,
                           "OriginalMessage": original,
                           "LogStreamArn": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:"
                                           f"/aws/sagemaker/Endpoints/{name}"})

    def invocations(self, name, body):
        headers = {"x-amzn-RequestId": str(uuid.uuid4()), "x-Amzn-Invoked-Production-Variant": "AllTraffic"}
        if "embed" in name:
            texts = body.get("text_inputs", body.get("inputs"))
            texts = [texts] if isinstance(texts, str) else texts
            if not isinstance(texts, list):
                return self.model_error(name, 400, {"error": "text_inputs is required"})
            return self.send_json(200, {"embedding": [fake_embedding(t, 384) for t in texts]}, headers=headers)
        problem = tgi_validation_error(body)
        if problem:
            return self.model_error(name, 422, {"error": problem, "error_type": "validation"})
        text, finish, pieces = tgi_generation(body)
        params = body.get("parameters") or {}
        if params.get("return_full_text"):
            text = body["inputs"] + text
        answer = {"generated_text": text}
        if params.get("details"):
            answer["details"] = {"finish_reason": finish, "generated_tokens": len(pieces) + (finish == "eos_token"),
                                 "seed": params.get("seed"), "prefill": [], "tokens": []}
        self.send_json(200, [answer], headers=headers)

    def invocations_stream(self, name, body):
        problem = tgi_validation_error(body)
        if problem:
            return self.model_error(name, 422, {"error": problem, "error_type": "validation"})
        text, finish, pieces = tgi_generation(body)
        lines = []
        for i, piece in enumerate(pieces):
            final = finish != "eos_token" and i == len(pieces) - 1
            lines.append({"index": i, "token": {"id": 1000 + i, "text": piece, "logprob": -0.25, "special": False},
                          "generated_text": text if final else None,
                          "details": {"finish_reason": finish, "generated_tokens": len(pieces), "seed": None}
                          if final else None})
        if finish == "eos_token":  # the end-of-sequence token is special and carries the summary
            lines.append({"index": len(pieces), "token": {"id": 2, "text": "</s>", "logprob": -0.01, "special": True},
                          "generated_text": text,
                          "details": {"finish_reason": finish, "generated_tokens": len(pieces) + 1, "seed": None}})
        if "cut-stream" in name:  # the body ends after two tokens: no final line with generated_text
            lines = lines[:2]
        data = b"".join(b"data:" + json.dumps(line).encode() + b"\n\n" for line in lines)
        self.start_chunked(EVENTSTREAM, headers={"x-amzn-RequestId": str(uuid.uuid4()),
                                                 "X-Amzn-SageMaker-Content-Type": "text/event-stream",
                                                 "x-Amzn-Invoked-Production-Variant": "AllTraffic"})
        # Parts cut at fixed byte sizes, as a container's flushes do: SSE lines (and even UTF-8
        # characters) straddle PayloadParts, so readers must buffer.
        size = self.server.fake.part_size
        for n, start in enumerate(range(0, len(data), size)):
            if "stream-error" in name and n == 8:  # after two whole SSE lines
                self.write_chunk(exception_message("ModelStreamError", {
                    "Message": "Your model stream was interrupted.", "ErrorCode": "ModelStreamError"}))
                return self.end_chunked()
            self.write_chunk(event_message("PayloadPart", data[start:start + size], "application/octet-stream"))
        self.end_chunked()


class FakeAWS(FakeServer):
    """Fake Bedrock Runtime + SageMaker Runtime; `requests` keeps every request (path, headers, json),
    `cache` the Claude prompt prefixes it has cached (the Anthropic fake's rule, per model id)."""

    handler = AWSHandler
    cache_usage = FakeAnthropic.cache_usage  # the Anthropic fake's prompt-cache rule, on this fake's cache

    def __init__(self, access_key=ACCESS_KEY, secret_key=SECRET_KEY, session_token=None, bearer_token=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.access_key = access_key
        self.secret_key = secret_key
        self.session_token = session_token
        self.bearer_token = bearer_token
        self.slow_seconds = 2.0
        self.part_size = 37
        self.cache = {}

    def reset(self):
        """Forget recorded requests and the Claude prompt cache."""
        super().reset()
        with self._lock:
            self.cache.clear()

    def check_signature(self, method, raw_path, headers, raw):
        """None when the request is signed with this fake's credentials, else (status, code, message)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and not raw_path.startswith("/endpoints/"):  # Bedrock API keys
            if self.bearer_token and hmac.compare_digest(auth[7:], self.bearer_token):
                return None
            return 403, "UnrecognizedClientException", "Invalid API Key format: Must start with pre-defined prefix"
        match = _AUTH.match(auth)
        if not match:
            return 403, "MissingAuthenticationTokenException", "Missing Authentication Token"
        key_id, day, region, service, signed, signature = match.groups()
        if key_id != self.access_key:
            return 403, "UnrecognizedClientException", "The security token included in the request is invalid."
        if self.session_token and headers.get("x-amz-security-token") != self.session_token:
            return 403, "UnrecognizedClientException", "The security token included in the request is invalid."
        wanted = "sagemaker" if raw_path.startswith("/endpoints/") else "bedrock"
        if service != wanted:
            return 403, "InvalidSignatureException", f"Credential should be scoped to correct service: '{wanted}'."
        names = signed.split(";")
        stamp = headers.get("x-amz-date", "")
        if "host" not in names or any(n not in headers for n in names) or not stamp.startswith(day):
            return 403, "IncompleteSignatureException", "Authorization header requires existence of either a "\
                "'X-Amz-Date' or a 'Date' header."
        request = AWSRequest(method=method, url=f"http://{headers['host']}{raw_path}", data=raw,
                             headers={n: headers[n] for n in names})
        request.context["timestamp"] = stamp
        signer = SigV4Auth(Credentials(key_id, self.secret_key, self.session_token), service, region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, signature):
            return 403, "InvalidSignatureException", _BAD_SIGNATURE
        return None
