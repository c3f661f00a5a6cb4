"""Client side of `gateway --test` and `gateway --health`: talk to a running gateway."""

import sys
import time

import orjson
import requests

from gateway.wire.sse import SSEDecoder

TEST_PROMPT = "this is a test request, write a short poem"
TIMEOUT = 60


def _headers(key):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _error_text(resp):
    """The error message of an OpenAI-style error answer, or the raw text."""
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:500]


def run_test(base, key, out=sys.stdout):
    """Ask /models for a model, then send one chat request and one streaming request."""
    session = requests.Session()
    try:
        resp = session.get(f"{base}/models", headers=_headers(key), timeout=TIMEOUT)
        if resp.status_code != 200:
            print(f"FAIL GET {base}/models -> {resp.status_code}: {_error_text(resp)}", file=out)
            return 1
        names = [m["id"] for m in resp.json().get("data", [])]
        if not names:
            print(f"FAIL {base} serves no models", file=out)
            return 1
        model = names[0]
        body = {"model": model, "messages": [{"role": "user", "content": TEST_PROMPT}]}
        print(f"gateway at {base}, model {model!r}", file=out)

        started = time.monotonic()
        resp = session.post(f"{base}/chat/completions", data=orjson.dumps(body), headers=_headers(key),
                            timeout=TIMEOUT)
        elapsed = (time.monotonic() - started) * 1000
        if resp.status_code != 200:
            print(f"FAIL chat -> {resp.status_code}: {_error_text(resp)}", file=out)
            return 1
        reply = resp.json()["choices"][0]["message"].get("content")
        print(f"chat ({elapsed:.1f} ms): {reply}", file=out)

        started = time.monotonic()
        first = None
        parts = []
        with session.post(f"{base}/chat/completions", data=orjson.dumps({**body, "stream": True}),
                          headers=_headers(key), timeout=TIMEOUT, stream=True) as resp:
            if resp.status_code != 200:
                print(f"FAIL stream -> {resp.status_code}: {_error_text(resp)}", file=out)
                return 1
            decoder = SSEDecoder()
            for raw in resp.iter_content(chunk_size=None):
                for event in decoder.feed(raw):
                    if event.data == b"[DONE]":
                        continue
                    chunk = orjson.loads(event.data)
                    if "error" in chunk:
                        print(f"FAIL stream error: {chunk['error'].get('message')}", file=out)
                        return 1
                    if first is None:
                        first = (time.monotonic() - started) * 1000
                    for choice in chunk.get("choices") or []:
                        parts.append((choice.get("delta") or {}).get("content") or "")
        total = (time.monotonic() - started) * 1000
        print(f"stream (first chunk {first or 0:.1f} ms, done {total:.1f} ms): {''.join(parts)}", file=out)
        return 0
    except requests.RequestException as exc:
        print(f"FAIL cannot reach the gateway at {base}: {type(exc).__name__}", file=out)
        return 1


def run_health(base, key, out=sys.stdout):
    """Call /health (every deployment) and print a table; non-zero if any deployment is unhealthy."""
    try:
        resp = requests.get(base + "/health", headers=_headers(key), timeout=TIMEOUT)
    except requests.RequestException as exc:
        print(f"FAIL gateway at {base} unreachable ({type(exc).__name__})", file=out)
        return 1
    if resp.status_code != 200:
        print(f"FAIL GET {base}/health -> {resp.status_code}: {_error_text(resp)}", file=out)
        return 1
    data = resp.json()
    rows = [("healthy", e) for e in data.get("healthy_endpoints", [])]
    rows += [("UNHEALTHY", e) for e in data.get("unhealthy_endpoints", [])]
    table = [("status", "model_name", "model", "api_base", "detail")]
    for status, entry in rows:
        detail = entry.get("error") or f"{entry.get('latency_ms', '')} ms"
        table.append((status, entry.get("model_name") or "", entry.get("model") or "",
                      entry.get("api_base") or "-", str(detail)[:160]))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4], file=out)
    print(f"{data.get('healthy_count', 0)} healthy, {data.get('unhealthy_count', 0)} unhealthy", file=out)
    return 0 if data.get("unhealthy_count", 0) == 0 else 1
