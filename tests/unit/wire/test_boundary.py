"""wire/ is the one I/O error boundary (#12): the transport maps socket errors and hands error
answers back without calling into the provider; the callback sinks send through it; one upstream
call changes layer at most 6 times (it was 8, with the transport calling the provider's map_error)."""

import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest

from gateway import errors
from gateway import providers
from gateway.config.settings import DeploymentConfig
from gateway.providers.base import UpstreamRequest
from gateway.telemetry.sinks import GiveUp
from gateway.telemetry.sinks import HttpSink
from gateway.telemetry.sinks import Retry
from gateway.wire import sdk
from gateway.wire.transport import ErrorAnswer
from gateway.wire.transport import Transport
from gateway.wire.upstream import CallContext

ANSWER = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class Handler(BaseHTTPRequestHandler):
    """/v1/chat/completions answers; a model named `fail-<status>` gets that status and an error body."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        model = str(body.get("model", ""))
        status = int(model[5:]) if model.startswith("fail-") else 200
        data = json.dumps(ANSWER if status == 200 else {"error": {"message": f"no: {status}"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoCallbacks:
    """A deployment as the transport sees it; calling back into it fails the test."""

    basic_auth = None
    label = "g -> openai/m at http://127.0.0.1"

    def map_error(self, *args):
        raise AssertionError("the transport called back into the provider")


def deployment(base, model="m"):
    params = {"model": f"openai/{model}", "api_key": "k", "api_base": base + "/v1"}
    return providers.build(DeploymentConfig(model_name="g", params=params, model_info={}, index=0))


def post(base, model):
    return UpstreamRequest("POST", base + "/v1/chat/completions", {"Content-Type": "application/json"},
                           json.dumps({"model": model}).encode())


# --- the transport ------------------------------------------------------------------------------------

def test_an_error_answer_comes_back_raw_and_the_provider_is_not_called(server):
    with pytest.raises(ErrorAnswer) as info:
        Transport().send(NoCallbacks(), post(server, "fail-429"), timeout=5)
    assert info.value.status == 429 and b"no: 429" in info.value.raw
    assert info.value.headers["Content-Type"] == "application/json"


def test_the_shared_flow_maps_the_error_answer_with_the_providers_map_error(server):
    provider = deployment(server, "fail-429")
    with pytest.raises(errors.RateLimitError) as info:
        provider.execute(CallContext(Transport(), 5.0), "chat", {"messages": []}, False)
    assert "no: 429" in info.value.message and provider.label in info.value.message


def test_socket_errors_are_mapped_in_the_transport():
    base = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(errors.UpstreamConnectionError, match="connection refused or host unreachable"):
        Transport().send(NoCallbacks(), post(base, "m"), timeout=5)
    with pytest.raises(errors.UpstreamConnectionError) as info:
        Transport().request("POST", base + "/hook", b"[]", {}, timeout=5, label="webhook")
    assert type(info.value.__cause__).__name__ == "NewConnectionError"


def test_request_returns_any_status(server):
    resp = Transport().request("POST", server + "/v1/chat/completions", json.dumps({"model": "fail-503"}).encode(),
                               {"Content-Type": "application/json"}, timeout=5, label="webhook")
    assert resp.status == 503


# --- the callback sinks send through it ---------------------------------------------------------------

def test_http_sinks_retry_on_socket_errors_and_5xx_give_up_on_4xx(server):
    sink = HttpSink(spec=None)
    sink.label = "webhook"
    with pytest.raises(Retry, match="^NewConnectionError$"):
        sink.post(f"http://127.0.0.1:{closed_port()}/hook", b"[]", {}, 2)
    with pytest.raises(Retry, match="HTTP 503"):
        sink.post(server + "/v1/chat/completions", b'{"model": "fail-503"}', {}, 2)
    with pytest.raises(GiveUp, match="HTTP 400"):
        sink.post(server + "/v1/chat/completions", b'{"model": "fail-400"}', {}, 2)
    assert sink.post(server + "/v1/chat/completions", b'{"model": "m"}', {}, 2).status == 200
    assert isinstance(sink._transport, Transport) and sink._transport.connect_timeout == 3.0


# --- the AWS path: botocore's I/O errors mapped in wire.sdk ---------------------------------------------

def test_sdk_connect_timeout_names_the_connect_limit():
    from botocore.exceptions import ConnectTimeoutError

    provider = NoCallbacks()
    provider.name, provider.scrub = "bedrock", str
    err = sdk.map_exception(provider, ConnectTimeoutError(endpoint_url="https://x"), 30)
    assert isinstance(err, errors.UpstreamTimeoutError) and "within 10s" in err.message


# --- layer changes inside one upstream call --------------------------------------------------------------

def layers_of_one_call(provider, body):
    """The layers (providers, wire.upstream, wire.transport) control passes through, in order, from
    provider.execute() to its return; other modules count as their caller's layer."""
    seq, nested = [], []

    def layer(frame):
        while frame is not None:
            parts = frame.f_globals.get("__name__", "").split(".")
            if parts[0] == "gateway" and len(parts) > 1 and parts[1] in ("providers", "wire"):
                return parts[1] if parts[1] == "providers" else ".".join(parts[1:3])
            frame = frame.f_back
        return None

    def profile(frame, event, arg):
        if event not in ("call", "return"):
            return
        now = layer(frame if event == "call" else frame.f_back)
        if now is not None and (not seq or seq[-1] != now):
            seq.append(now)
        if event == "call" and now == "providers":
            above = frame.f_back
            while above is not None:  # the provider was called from inside the transport?
                if above.f_globals.get("__name__") == "gateway.wire.transport":
                    nested.append(frame.f_code.co_name)
                above = above.f_back

    ctx = CallContext(Transport(), 5.0)
    try:
        provider.execute(ctx, "chat", body, False)  # warm the connection pool
    except errors.GatewayError:
        pass
    sys.setprofile(profile)
    try:
        provider.execute(ctx, "chat", body, False)
    except errors.GatewayError:
        pass
    finally:
        sys.setprofile(None)
    return seq, nested


@pytest.mark.parametrize("model", ["m", "fail-500"])
def test_one_call_changes_layer_at_most_six_times_and_never_from_the_transport_up(server, model):
    seq, nested = layers_of_one_call(deployment(server, model), {"messages": [{"role": "user", "content": "x"}]})
    assert not nested, f"the transport called into the provider: {nested}"
    assert seq[0] == seq[-1] == "providers"
    assert len(seq) - 1 <= 6, " -> ".join(seq)
