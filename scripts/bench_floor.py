"""The floor of this stack: the least a Flask + gevent + requests proxy can cost.

`scripts/bench` runs this next to the gateway, under the same server the
gateway uses::

    BENCH_UPSTREAM=http://127.0.0.1:PORT \\
        gunicorn -k gevent -w 2 --worker-connections 1000 \\
        --chdir scripts bench_floor:app

It does only what any pass-through must do: parse the JSON body (to pick
the upstream by ``model``), forward it with one pooled ``requests.Session``
and hand back the upstream's status, body and content type (streamed
chunk by chunk for ``stream``). No auth, routing table, validation,
logging or accounting: whatever the gateway spends beyond this is the
gateway's own overhead.

Upstreams (the static nginx of ``scripts/bench``):
    model ``bench``        -> ``$BENCH_UPSTREAM/v1/chat/completions``
    model ``bench-stream`` -> ``$BENCH_UPSTREAM/stream/v1/chat/completions``
"""

import os

import requests
from flask import Flask, Response, jsonify, request
from requests.adapters import HTTPAdapter

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8080").rstrip("/")
UPSTREAM_KEY = os.environ.get("BENCH_UPSTREAM_KEY", "sk-bench-upstream")
PATHS = {
    "bench": UPSTREAM + "/v1/chat/completions",
    "bench-stream": UPSTREAM + "/stream/v1/chat/completions",
}

session = requests.Session()
# Loopback upstream: skip the per-request proxy lookups in the environment.
session.trust_env = False
_adapter = HTTPAdapter(pool_connections=4, pool_maxsize=256)
session.mount("http://", _adapter)
session.mount("https://", _adapter)
_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer " + UPSTREAM_KEY}

app = Flask(__name__)


@app.post("/v1/chat/completions")
def chat_completions():
    raw = request.get_data()
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return jsonify(error={"message": "body must be a JSON object"}), 400
    url = PATHS.get(body.get("model"))
    if url is None:
        return jsonify(error={"message": "unknown model"}), 404
    stream = bool(body.get("stream"))
    upstream = session.post(url, data=raw, headers=_HEADERS, stream=stream, timeout=60)
    content_type = upstream.headers.get("Content-Type", "application/json")
    if not stream:
        return Response(upstream.content, status=upstream.status_code, content_type=content_type)

    def relay():
        try:
            for chunk in upstream.iter_content(None):
                if chunk:
                    yield chunk
        finally:
            upstream.close()

    return Response(relay(), status=upstream.status_code, content_type=content_type)
