"""A small base for fake upstreams: a threaded HTTP/1.1 server on loopback that records requests."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs
from urllib.parse import urlsplit

CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class FakeHandler(BaseHTTPRequestHandler):
    """Subclass and implement `route(method, path, query, headers, body)`; use the reply helpers."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        self.server.fake.record({"method": method, "path": split.path, "query": query, "headers": headers,
                                 "json": body, "raw": raw})
        try:
            self.route(method, split.path, query, headers, body if body is not None else raw)
        except CLIENT_GONE:
            self.close_connection = True

    def route(self, method, path, query, headers, body):
        """Answer one request."""
        raise NotImplementedError

    def send_json(self, status, obj, headers=None, content_type="application/json"):
        """A whole JSON answer with Content-Length."""
        data = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, content_type, status=200, headers=None):
        """Begin a chunked streaming answer."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def write_chunk(self, data):
        """One HTTP chunk, flushed at once (raises CLIENT_GONE errors when the client left)."""
        if isinstance(data, str):
            data = data.encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self):
        """The terminating zero-length chunk."""
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def write_sse(self, data, event=None):
        """One SSE event (data is JSON-encoded unless already str/bytes) as one chunk."""
        if not isinstance(data, (str, bytes)):
            data = json.dumps(data)
        if isinstance(data, bytes):
            data = data.decode()
        self.write_chunk((f"event: {event}\n" if event else "") + f"data: {data}\n\n")


class FakeServer:
    """Start/stop a FakeHandler subclass on 127.0.0.1; keeps every request in `requests`."""

    handler = FakeHandler

    def __init__(self, host="127.0.0.1", port=0):
        self.requests = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self.handler)
        self._server.daemon_threads = True
        self._server.fake = self
        self.host, self.port = self._server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = None

    def record(self, entry):
        """Keep one request (thread-safe)."""
        entry["time"] = time.monotonic()
        with self._lock:
            self.requests.append(entry)

    def reset(self):
        """Forget recorded requests."""
        with self._lock:
            self.requests.clear()

    def start(self):
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
