"""Fake OpenTelemetry collectors for tracing tests: OTLP/HTTP (protobuf) and OTLP/gRPC on loopback.

Both decode `ExportTraceServiceRequest` (opentelemetry-proto) and keep every span as a plain dict:
trace_id / span_id / parent_span_id (hex), name, kind (the proto's enum name, e.g. SPAN_KIND_SERVER),
start / end (unix nanoseconds), attributes (decoded values), status code (STATUS_CODE_*) and message,
events, and the resource's attributes. `raw` keeps every request body as received, so a test can
check that no secret is anywhere in what was exported.

`Blackhole` is a collector that is there and never answers: a listening socket that never accepts,
so a client's connection completes (the kernel's backlog) and its request waits forever.
"""
from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status


def any_value(value):
    """An OTLP AnyValue as a Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(key_values):
    return {kv.key: any_value(kv.value) for kv in key_values}


def decode_spans(request):
    """Every span of an ExportTraceServiceRequest as a dict."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append({
                    "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex() or None, "name": span.name,
                    "kind": Span.SpanKind.Name(span.kind), "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano, "attributes": attributes(span.attributes),
                    "status": Status.StatusCode.Name(span.status.code), "status_message": span.status.message,
                    "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in span.events],
                    "resource": resource, "scope": scope_spans.scope.name})
    return spans


class _Collected:
    """What a collector received, safe to read from the test's thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._spans = []
        self.raw = []
        self.headers = []

    def add(self, body, headers, request):
        with self._lock:
            self.raw.append(body)
            self.headers.append(headers)
            self._spans.extend(decode_spans(request))

    @property
    def spans(self):
        with self._lock:
            return list(self._spans)

    def wait_for(self, predicate, timeout=15.0):
        """The spans once predicate(spans) holds; AssertionError with what arrived when it never does."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"spans never matched; got {len(spans)}: "
                                     + "; ".join(f"{s['name']} {s['attributes'].get('gateway.request_id')}"
                                                 for s in spans))
            time.sleep(0.05)


class OTLPHTTPReceiver(_Collected):
    """POST /v1/traces with application/x-protobuf (gzip/deflate accepted); 200 with an empty answer."""

    def __init__(self):
        super().__init__()
        collected = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces":
                    return self._answer(404, b"")
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                data = gzip.decompress(body) if encoding == "gzip" else (
                    zlib.decompress(body) if encoding == "deflate" else body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(data)
                collected.add(data, dict(self.headers), request)
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status, payload):
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


class OTLPGRPCReceiver(_Collected):
    """The OTLP TraceService over gRPC (plaintext) on loopback."""

    def __init__(self):
        super().__init__()
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
        collected = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802
                collected.add(request.SerializeToString(), dict(context.invocation_metadata()), request)
                return ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self._server.start()
        return self

    def __exit__(self, *exc):
        self._server.stop(grace=None)


class Blackhole:
    """A TCP port that takes connections into its backlog and never answers."""

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._sock.close()
