"""A fake Gemini API (Generative Language API, v1beta) upstream: a real HTTP/1.1 server on loopback.

It speaks the documented REST wire format closely enough that the official ``google-genai`` SDK
parses its answers, streams and errors.

Routes (any API version segment: v1, v1beta, v1alpha)
    POST /{version}/models/{model}:generateContent
    POST /{version}/models/{model}:streamGenerateContent?alt=sse   (SSE of GenerateContentResponse,
         CRLF-framed as Google sends it; no end marker: the body ends after the finishReason event)
    POST /{version}/models/{model}:streamGenerateContent           (without alt: one JSON array)
    POST /{version}/models/{model}:embedContent, :batchEmbedContents
    GET  /{version}/models
Auth: ``x-goog-api-key`` header (or ``?key=``). No key -> 403 PERMISSION_DENIED; a wrong key ->
400 INVALID_ARGUMENT with reason API_KEY_INVALID, as Google answers.

Behaviour
    Text answers say ``"Hello from fake Gemini: <last user text>"`` (plus `` [images: image/png]``
    when the last user turn carries inline data), word-split in streams, one token per word.
    When tools are offered and the last user turn mentions "weather", the model calls the first
    function once per known city named (Paris, London, Tokyo; Paris by default), in parallel.
    After a functionResponse turn it answers ``"Tool <name> said: <response json>"``.
    maxOutputTokens truncates (MAX_TOKENS); stopSequences cut (STOP); candidateCount gives n
    candidates; responseMimeType application/json gives ``{"answer": <text>}``.
    The request is validated as the API does: roles, empty parts, function response turns that do
    not follow a function call turn or do not match its number of calls, schema keys Gemini's
    OpenAPI subset does not know, undecodable inline data.
Trigger models: fail-400, fail-403, fail-404, fail-429, fail-500, fail-503, context-length,
    blocked (promptFeedback.blockReason, no candidates), safety (finishReason SAFETY),
    stream-error (two text events, then an in-stream error event), cut-stream (two text events, then
    the body ends without any finishReason).
"""

import base64
import binascii
import hashlib
import json
import re
import uuid

from tests.fakes.http import FakeServer
from tests.fakes.http import FakeHandler

ANSWER_PREFIX = "Hello from fake Gemini: "
DEFAULT_DIMENSIONS = 768
CITIES = ("Paris", "London", "Tokyo")
SCHEMA_KEYS = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
}
_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/(models/[^:/]+|tunedModels/[^:/]+):(\w+)$")


def google_error(code, status, message, details=None):
    """Google's error envelope."""
    err = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def words(text):
    """Whitespace word count: the fake's token count."""
    return len(text.split())


def fake_embedding(text, dims=DEFAULT_DIMENSIONS):
    """A deterministic unit vector for a text."""
    raw = b""
    counter = 0
    while len(raw) < dims * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [int.from_bytes(raw[i * 4:i * 4 + 4], "little") / 2**32 * 2 - 1 for i in range(dims)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]


FAILURES = {
    "fail-400": (400, "INVALID_ARGUMENT", "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), "
                                          "\"hot\"", None),
    "fail-403": (403, "PERMISSION_DENIED", "You do not have permission to access tuned model fail-403.", None),
    "fail-404": (404, "NOT_FOUND", "models/fail-404 is not found for API version v1beta, or is not supported "
                                   "for generateContent. Call ListModels to see the list of available models "
                                   "and their supported methods.", None),
    "fail-429": (429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and "
                                            "billing details.", [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
            {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
             "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]),
    "fail-500": (500, "INTERNAL", "An internal error has occurred. Please retry or report in "
                                  "https://developers.generativeai.google/guide/troubleshooting", None),
    "fail-503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", None),
    "context-length": (400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number "
                                                "of tokens allowed (1048576).", None),
}


class InvalidRequest(Exception):
    """A 400 INVALID_ARGUMENT with this message."""


class GeminiHandler(FakeHandler):
    """Routes one request of the fake Gemini API."""

    server_version = "scaffolding on HTTPServer2"

    def route(self, method, path, query, headers, body):
        fake = self.server.fake
        key = headers.get("x-goog-api-key") or query.get("key")
        if not key:
            return self.send_json(403, google_error(
                403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
                "established identity). Please use API Key or other form of API consumer identity to call "
                "this API."))
        if key != fake.api_key:
            return self.send_json(400, google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a "
                                                    "valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]))
        if method == "GET" and re.match(r"^/v1(beta|alpha)?/models$", path):
            return self.send_json(200, {"models": [
                {"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": ["generateContent"]}
                for m in fake.models]})
        match = _PATH.match(path)
        if method != "POST" or not match:
            return self.send_json(404, google_error(404, "NOT_FOUND", f"Method not found: {path}"))
        model, op = match.group(2).split("/", 1)[1], match.group(3)
        if not isinstance(body, dict):
            return self.send_json(400, google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
        if model in FAILURES:
            code, status, msg, details = FAILURES[model]
            return self.send_json(code, google_error(code, status, msg, details))
        try:
            if op in ("embedContent", "batchEmbedContents"):
                return self.embed(op, model, body)
            if op == "generateContent":
                return self.send_json(200, self.generate(model, body), content_type="application/json; "
                                                                                    "charset=UTF-8")
            if op == "streamGenerateContent":
                return self.stream(model, body, query.get("alt") == "sse")
        except InvalidRequest as exc:
            return self.send_json(400, google_error(400, "INVALID_ARGUMENT", str(exc)))
        return self.send_json(404, google_error(404, "NOT_FOUND", f"Method not found: {op}"))

    # --- generation -------------------------------------------------------------------------------

    def generate(self, model, body):
        """The whole GenerateContentResponse for a request."""
        contents, config = validate(body)
        prompt_tokens = sum(words(p.get("text", "")) for c in contents for p in c["parts"])
        system = (body.get("systemInstruction") or {}).get("parts", [])
        prompt_tokens += sum(words(p.get("text", "")) for p in system)
        base = {"modelVersion": model, "responseId": uuid.uuid4().hex[:22]}
        if model == "blocked":
            return {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
                "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}, **base}
        candidates, completion = [], 0
        for index in range(int(config.get("candidateCount") or 1)):
            parts, finish = self.answer(model, body, contents, config)
            completion += sum(words(p["text"]) if "text" in p else words(json.dumps(p["functionCall"]))
                              for p in parts)
            candidates.append({"content": {"parts": parts, "role": "model"}, "finishReason": finish,
                               "index": index, "safetyRatings": []})
        usage = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": completion,
                 "totalTokenCount": prompt_tokens + completion,
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]}
        return {"candidates": candidates, "usageMetadata": usage, **base}

    def answer(self, model, body, contents, config):
        """(parts, finishReason) of one candidate."""
        last = contents[-1]
        responses = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
        declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        text = " ".join(p["text"] for p in last["parts"] if "text" in p)
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode", "AUTO")
        if model == "safety":
            return [], "SAFETY"
        if responses:
            answer = " ".join(f"Tool {r['name']} said: {json.dumps(r.get('response'))}" for r in responses)
        elif declarations and mode != "NONE" and ("weather" in text.lower() or mode == "ANY"):
            allowed = (body["toolConfig"]["functionCallingConfig"].get("allowedFunctionNames")
                       if mode == "ANY" else None) or [declarations[0]["name"]]
            cities = [c for c in CITIES if c.lower() in text.lower()] or ["Paris"]
            return [{"functionCall": {"name": allowed[0], "args": {"location": city}}} for city in cities], "STOP"
        else:
            answer = ANSWER_PREFIX + text
            images = [mime_type(p["inlineData"]) for p in last["parts"] if "inlineData" in p]
            if images:
                answer += f" [images: {', '.join(images)}]"
        finish = "STOP"
        for stop in config.get("stopSequences") or []:
            if stop in answer:
                answer = answer[:answer.index(stop)]
        limit = config.get("maxOutputTokens")
        if limit is not None and words(answer) > limit:
            answer, finish = " ".join(answer.split()[:limit]), "MAX_TOKENS"
        if config.get("responseMimeType") == "application/json":
            answer = json.dumps({"answer": answer})
        return [{"text": answer}], finish

    def stream(self, model, body, sse):
        """streamGenerateContent: the same answer split into partial responses."""
        whole = self.generate(model, body)
        events = []
        usage = whole["usageMetadata"]
        running = {"promptTokenCount": usage["promptTokenCount"], "totalTokenCount": usage["promptTokenCount"]}
        for cand in whole.get("candidates") or []:
            parts = cand["content"]["parts"]
            index = {"index": cand["index"]} if cand["index"] else {}  # Google omits index 0 in streams
            if parts and "text" in parts[0] and model != "safety":
                pieces = re.findall(r"\S+\s*", parts[0]["text"]) or [""]
                for piece in pieces[:-1]:
                    events.append({"candidates": [{"content": {"parts": [{"text": piece}], "role": "model"},
                                                   **index}], "usageMetadata": running})
                parts = [{"text": pieces[-1]}]
            last = {"content": {"parts": parts, "role": "model"}, "finishReason": cand["finishReason"], **index}
            events.append({"candidates": [last], "usageMetadata": running})
        if events:
            events[-1]["usageMetadata"] = usage
        else:
            events.append({k: v for k, v in whole.items()})
        for event in events:
            event["modelVersion"] = whole["modelVersion"]
        if model == "stream-error":
            events = events[:2] + [google_error(500, "INTERNAL", "An internal error has occurred mid-stream.")]
        if model == "cut-stream":  # the body just ends: no event with a finishReason
            events = events[:2]
        if not sse:  # the JSON array form, sent whole
            return self.send_json(200, events)
        self.start_chunked("text/event-stream", headers={"Content-Disposition": "attachment"})
        for event in events:
            self.write_chunk(f"data: {json.dumps(event)}\r\n\r\n")
        self.end_chunked()

    # --- embeddings -------------------------------------------------------------------------------

    def embed(self, op, model, body):
        """embedContent / batchEmbedContents."""
        requests = body.get("requests") if op == "batchEmbedContents" else [{**body, "model": f"models/{model}"}]
        if not isinstance(requests, list) or not requests:
            raise InvalidRequest("* BatchEmbedContentsRequest.requests: contents is not specified")
        out = []
        for i, req in enumerate(requests):
            if req.get("model") != f"models/{model}":
                raise InvalidRequest(f"* BatchEmbedContentsRequest.requests[{i}].model: model must match the "
                                     "parent model")
            parts = (req.get("content") or {}).get("parts") or []
            text = " ".join(p.get("text", "") for p in parts)
            if not text:
                raise InvalidRequest(f"* BatchEmbedContentsRequest.requests[{i}].content.parts: contents is "
                                     "not specified")
            out.append({"values": fake_embedding(text, int(req.get("outputDimensionality") or DEFAULT_DIMENSIONS))})
        if op == "embedContent":
            return self.send_json(200, {"embedding": out[0]})
        return self.send_json(200, {"embeddings": out})


def mime_type(data):
    """inlineData's MIME type: the API takes proto field names in camelCase or snake_case."""
    return data.get("mimeType") or data.get("mime_type")


def validate(body):
    """(contents, generationConfig) after the checks the real API makes; InvalidRequest otherwise."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            raise InvalidRequest(f"Please use a valid role: user, model. (contents[{i}])")
        parts = content.get("parts")
        if not parts:
            raise InvalidRequest(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(parts):
            if "text" in part and not part["text"]:
                raise InvalidRequest("Unable to submit request because it has an empty text parameter. Add a "
                                     "value to the parameter and try again.")
            if "inlineData" in part:
                data = part["inlineData"]
                try:
                    base64.b64decode(data.get("data") or "", validate=True)
                except (binascii.Error, ValueError):
                    raise InvalidRequest(f"Invalid value at 'contents[{i}].parts[{j}].inline_data.data' "
                                         "(TYPE_BYTES), Base64 decoding failed") from None
                if not mime_type(data):
                    raise InvalidRequest(f"* GenerateContentRequest.contents[{i}].parts[{j}].inline_data."
                                         "mime_type: mime_type is not specified")
        responses = sum("functionResponse" in p for p in parts)
        if responses:
            calls = sum("functionCall" in p for p in contents[i - 1]["parts"]) if i else 0
            if not calls:
                raise InvalidRequest("Please ensure that function response turn comes immediately after a "
                                     "function call turn.")
            if calls != responses:
                raise InvalidRequest("Please ensure that the number of function response parts is equal to "
                                     "the number of function call parts of the function call turn.")
    for t, tool in enumerate(body.get("tools") or []):
        for d, decl in enumerate(tool.get("functionDeclarations") or []):
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_.\-]{0,63}$", decl.get("name") or ""):
                raise InvalidRequest(f"* GenerateContentRequest.tools[{t}].function_declarations[{d}].name: "
                                     "Invalid function name.")
            _check_schema(decl.get("parameters"), f"tools[{t}].function_declarations[{d}].parameters")
    config = body.get("generationConfig") or {}
    _check_schema(config.get("responseSchema"), "generation_config.response_schema")
    return contents, config


def _check_schema(schema, where):
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise InvalidRequest(f"Invalid JSON payload received. Invalid value at '{where}'")
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            raise InvalidRequest(f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': '
                                 "Cannot find field.")
        if key == "properties":
            if not value:
                raise InvalidRequest(f"* GenerateContentRequest.{where}.properties: should be non-empty for "
                                     "OBJECT type")
            for name, sub in value.items():
                _check_schema(sub, f"{where}.properties[{name}].value")
        elif key == "items":
            _check_schema(value, f"{where}.items")
        elif key == "anyOf":
            for k, sub in enumerate(value):
                _check_schema(sub, f"{where}.any_of[{k}]")


class FakeGemini(FakeServer):
    """The fake Gemini API on loopback; ``api_key`` is the one key it accepts."""

    handler = GeminiHandler

    def __init__(self, api_key="AIzaSyFAKE-gemini0123456789abcdefghijklm", **kwargs):
        super().__init__(**kwargs)
        self.api_key = api_key
        self.models = ["gemini-2.0-flash", "gemini-1.5-pro", "text-embedding-004"]
