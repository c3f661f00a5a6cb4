"""A fake Replicate API on loopback: predictions that run, poll, stream (SSE) and fail like Replicate's.

Routes (https://replicate.com/docs/reference/http):
    POST /v1/models/{owner}/{name}/predictions, POST /v1/predictions {version},
    POST /v1/deployments/{owner}/{name}/predictions  -> a prediction (201), or finished with `Prefer: wait`
    GET  /v1/predictions/{id}                         -> the prediction, one step further each poll
    POST /v1/predictions/{id}/cancel                  -> canceled
    GET  /v1/models/{owner}/{name}[/versions/{id}]    -> model / version (with an iterator output schema)
    GET  /v1/streams/{id}                             -> SSE: `output` events (one token each), `done`
Auth: ``Authorization: Bearer <token>`` or ``Token <token>``; errors are RFC 7807 problem bodies.

Answers are deterministic: the output tokens spell ``"Hello from Replicate: <N> words received"`` (N =
words of `prompt` + `system_prompt`), plus ``" with an image"`` when `input.image` is set; they stop at
`max_new_tokens` / `max_tokens`. metrics carry input/output token counts.

Triggers (model name or version): ``missing`` -> 404, ``bad-input`` -> 422, ``throttled`` -> 429 with
Retry-After, ``fails`` -> a prediction that fails, ``no-stream`` -> no `urls.stream`, ``foreign-urls``
-> `urls` on another host (the client must not follow them), ``stream-error`` -> an SSE `error` event,
``cut-stream`` -> an SSE stream that ends after two `output` events, without `done`,
``echo-key`` -> a 401 whose detail echoes the token (gateways must scrub it).
"""

import json
import re
import threading
import uuid

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

ANSWER_PREFIX = "Hello from Replicate: "
POLLS_TO_FINISH = 2
_CREATE = re.compile(r"^/v1/(?:models|deployments)/([^/]+)/([^/]+)/predictions$")
_PREDICTION = re.compile(r"^/v1/predictions/([^/]+)(/cancel)?$")
_STREAM = re.compile(r"^/v1/streams/([^/]+)$")
_MODEL = re.compile(r"^/v1/models/([^/]+)/([^/]+)(?:/versions/([^/]+))?$")
TIMESTAMP = "2024-04-18T16:32:30.765994Z"


def problem(status, title, detail):
    """Replicate's error body."""
    return {"title": title, "detail": detail, "status": status}


def answer_tokens(inputs):
    """The output tokens for a prediction's input."""
    said = f"{inputs.get('system_prompt') or ''} {inputs.get('prompt') or ''}"
    text = f"{ANSWER_PREFIX}{len(said.split())} words received"
    if inputs.get("image"):
        text += " with an image"
    tokens = re.findall(r"\S+\s*", text)
    limit = inputs.get("max_new_tokens", inputs.get("max_tokens", inputs.get("max_length")))
    return tokens[:limit] if isinstance(limit, int) and limit >= 0 else tokens


class ReplicateHandler(FakeHandler):
    """Routes of the fake."""

    server_version = "fake-replicate"

    def route(self, method, path, query, headers, body):
        fake = self.server.fake
        auth = headers.get("authorization") or ""
        if auth not in (f"Bearer {fake.token}", f"Token {fake.token}"):
            return self.problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        if method == "POST" and (path == "/v1/predictions" or _CREATE.match(path)):
            return self.create(path, headers, body)
        match = _PREDICTION.match(path)
        if match:
            prediction = fake.predictions.get(match.group(1))
            if prediction is None:
                return self.problem(404, "Not found", "The requested resource could not be found.")
            if match.group(2) and method == "POST":
                fake.cancels.append(prediction["id"])
                return self.send_json(200, fake.cancel(prediction))
            return self.send_json(200, fake.advance(prediction))
        match = _STREAM.match(path)
        if match and method == "GET":
            return self.stream(fake.predictions.get(match.group(1)))
        match = _MODEL.match(path)
        if match and method == "GET":
            return self.model(*match.groups())
        self.problem(404, "Not found", "The requested resource could not be found.")

    def problem(self, status, title, detail, headers=None):
        self.send_json(status, problem(status, title, detail), headers=headers,
                       content_type="application/problem+json")

    def create(self, path, headers, body):
        fake = self.server.fake
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return self.problem(422, "Input validation failed", "- input: Invalid type. Expected: object")
        match = _CREATE.match(path)
        if match:
            model, version = f"{match.group(1)}/{match.group(2)}", "dp-" + uuid.uuid4().hex[:32]
        else:
            version = str(body.get("version") or "")
            if not version:
                return self.problem(422, "Input validation failed", "- version: version is required")
            model = "fake/versioned"
        name = f"{model} {version}"
        if "missing" in name:
            return self.problem(404, "Not found", "The requested resource could not be found.")
        if "bad-input" in name:
            return self.problem(422, "Input validation failed",
                                "- input.max_new_tokens: Must be less than or equal to 4096")
        if "throttled" in name:
            return self.problem(429, "Request was throttled",
                                "Request was throttled. Your rate limit resets in ~7s.", {"Retry-After": "7"})
        if "echo-key" in name:
            token = (headers.get("authorization") or "").split(" ", 1)[-1]
            return self.problem(401, "Unauthenticated", f"The token {token} was revoked")
        prediction = fake.new_prediction(model, version, body, self.server.fake.url)
        if "wait" in (headers.get("prefer") or ""):  # sync mode: answer once it is over
            while prediction["status"] not in ("succeeded", "failed", "canceled"):
                prediction = fake.advance(prediction)
            return self.send_json(201, prediction)
        self.send_json(201, prediction)

    def stream(self, prediction):
        if prediction is None:
            return self.problem(404, "Not found", "The requested resource could not be found.")
        fake = self.server.fake
        self.start_chunked("text/event-stream", headers={"Cache-Control": "no-store"})
        for i, token in enumerate(prediction["_tokens"]):
            self.write_chunk(_event("output", f"{prediction['id']}:{i}", token))
            if "stream-error" in prediction["model"] + prediction["version"] and i == 1:
                self.write_chunk(_event("error", f"{prediction['id']}:{i + 1}",
                                        json.dumps({"detail": "Prediction failed: CUDA error: out of memory"})))
                return self.end_chunked()
            if "cut-stream" in prediction["model"] + prediction["version"] and i == 1:
                return self.end_chunked()  # the body just ends: no `done` event
        while prediction["status"] not in ("succeeded", "failed", "canceled"):
            fake.advance(prediction)
        if prediction["status"] == "failed":
            self.write_chunk(_event("error", f"{prediction['id']}:error", json.dumps({"detail": prediction["error"]})))
        reason = {"succeeded": {}, "failed": {"reason": "error"}}.get(prediction["status"], {"reason": "canceled"})
        self.write_chunk(_event("done", f"{prediction['id']}:done", json.dumps(reason)))
        self.end_chunked()

    def model(self, owner, name, version):
        schema = {"openapi": "3.0.2", "components": {"schemas": {
            "Input": {"type": "object", "properties": {"prompt": {"type": "string"}}},
            "Output": {"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator",
                       "x-cog-array-display": "concatenate"}}}}
        v = {"id": version or "v" * 64, "created_at": TIMESTAMP, "cog_version": "0.9.4", "openapi_schema": schema}
        if version:
            return self.send_json(200, v)
        self.send_json(200, {"url": f"https://replicate.com/{owner}/{name}", "owner": owner, "name": name,
                             "description": "fake", "visibility": "public", "github_url": None,
                             "paper_url": None, "license_url": None, "run_count": 1, "cover_image_url": None,
                             "default_example": None, "latest_version": v})


def _event(name, event_id, data):
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\nid: {event_id}\n{lines}\n"


class FakeReplicate(FakeServer):
    """The fake Replicate API; `requests` holds what it received, `cancels` the canceled ids."""

    handler = ReplicateHandler

    def __init__(self, token="r8_fake_token_0123456789abcdef", **kwargs):
        super().__init__(**kwargs)
        self.token = token
        self.predictions = {}
        self.cancels = []
        self._plock = threading.Lock()

    def reset(self):
        """Forget requests, predictions and cancels."""
        super().reset()
        self.predictions.clear()
        self.cancels.clear()

    def new_prediction(self, model, version, body, base):
        """A `starting` prediction with its urls."""
        pid = uuid.uuid4().hex[:26]
        trigger = f"{model} {version}"
        host = "http://169.254.169.254:1" if "foreign-urls" in trigger else base
        urls = {"get": f"{host}/v1/predictions/{pid}", "cancel": f"{host}/v1/predictions/{pid}/cancel",
                "web": f"https://replicate.com/p/{pid}"}
        if body.get("stream") and "no-stream" not in trigger:
            urls["stream"] = f"{host}/v1/streams/{pid}"
        prediction = {"id": pid, "model": model, "version": version, "input": body["input"], "logs": "",
                      "output": None, "data_removed": False, "error": None, "status": "starting",
                      "created_at": TIMESTAMP, "started_at": None, "completed_at": None, "urls": urls,
                      "_tokens": answer_tokens(body["input"]), "_polls": 0}
        with self._plock:
            self.predictions[pid] = prediction
        return self.public(prediction)

    def advance(self, prediction):
        """One poll: starting -> processing (partial output) -> succeeded / failed."""
        if isinstance(prediction, dict) and "_tokens" not in prediction:
            prediction = self.predictions[prediction["id"]]
        with self._plock:
            if prediction["status"] in ("starting", "processing"):
                prediction["_polls"] += 1
                tokens = prediction["_tokens"]
                if prediction["_polls"] >= POLLS_TO_FINISH:
                    if "fails" in prediction["model"] + prediction["version"]:
                        prediction.update(status="failed", error="CUDA out of memory. Tried to allocate 2.00 GiB",
                                          output=None)
                    else:
                        prediction.update(status="succeeded", output=list(tokens))
                    prediction["completed_at"] = TIMESTAMP
                    prediction["metrics"] = {"predict_time": 0.5, "input_token_count": len(
                        f"{prediction['input'].get('system_prompt') or ''} {prediction['input'].get('prompt') or ''}"
                        .split()), "output_token_count": len(tokens), "tokens_per_second": 50.0}
                else:
                    prediction.update(status="processing", started_at=TIMESTAMP,
                                      output=list(tokens[: max(1, len(tokens) // 2)]))
        return self.public(prediction)

    def cancel(self, prediction):
        with self._plock:
            if prediction["status"] in ("starting", "processing"):
                prediction.update(status="canceled", completed_at=TIMESTAMP)
        return self.public(prediction)

    @staticmethod
    def public(prediction):
        """The prediction as the API shows it (without the fake's bookkeeping)."""
        return {k: v for k, v in prediction.items() if not k.startswith("_")}
