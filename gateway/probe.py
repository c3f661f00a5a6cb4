"""Client side of `gateway --test` and `gateway --health`: talk to a running gateway."""

import sys
import time

import orjson
import requests

from gateway.sse import SSEDecoder

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
    """Report liveliness and readiness as a small table; non-zero unless both are fine."""
    ok = True
    rows = []
    for path in ("/health/liveliness", "/health/readiness"):
        try:
            resp = requests.get(base + path, headers=_headers(key), timeout=TIMEOUT)
            status = resp.status_code
            detail = resp.text.strip()[:200]
        except requests.RequestException as exc:
            status, detail = "-", f"unreachable ({type(exc).__name__})"
        ok = ok and status == 200
        rows.append((path, str(status), detail))
    width = max(len(r[0]) for r in rows)
    print(f"{'check'.ljust(width)}  status  detail", file=out)
    for path, status, detail in rows:
        print(f"{path.ljust(width)}  {status.ljust(6)}  {detail}", file=out)
    return 0 if ok else 1
