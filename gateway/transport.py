"""Pooled HTTP sending to upstreams: timeouts, upstream error mapping, debug curl log."""

import logging
import shlex
import time

import requests
from requests.adapters import HTTPAdapter

from gateway import errors

log = logging.getLogger("gateway.transport")

CONNECT_TIMEOUT = 10.0
# gevent serves up to 1000 connections per worker; requests' default pool of 10 per host would
# make most of them open and close a fresh upstream connection.
POOL_SIZE = 256
SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key", "proxy-authorization",
                            "ocp-apim-subscription-key", "cookie"})


def curl_command(req):
    """The request as a runnable curl command with every secret header masked."""
    parts = ["curl", "-X", req.method, req.url]
    for name, value in req.headers.items():
        shown = "****" if name.lower() in SECRET_HEADERS else value
        parts += ["-H", f"{name}: {shown}"]
    if req.body is not None:
        parts += ["-d", req.body.decode("utf-8", "replace")]
    return " ".join(shlex.quote(p) for p in parts)


class Transport:
    """One pooled requests.Session per worker; the single place upstream I/O errors are mapped."""

    def __init__(self, debug=False):
        self.debug = debug
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=16, pool_maxsize=POOL_SIZE, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Upstreams are named by config, never by proxy environment variables of the client.
        self.session.trust_env = False

    def send(self, provider, req, *, timeout, stream=False):
        """Send one request; return the response on 2xx, raise the mapped GatewayError otherwise."""
        if self.debug:
            log.debug("POST Request Sent from gateway to %s:\n%s", provider.label, curl_command(req))
        started = time.monotonic()
        try:
            resp = self.session.request(req.method, req.url, data=req.body, headers=req.headers,
                                        timeout=(min(CONNECT_TIMEOUT, timeout), timeout), stream=stream,
                                        allow_redirects=False)
        except requests.Timeout as exc:
            raise errors.UpstreamTimeoutError(
                f"Upstream timed out after {timeout:g}s (deployment: {provider.label})") from exc
        except requests.RequestException as exc:
            raise errors.UpstreamConnectionError(
                f"Could not connect to upstream (deployment: {provider.label}): {type(exc).__name__}") from exc
        if self.debug:
            log.debug("Upstream %s answered %s in %.1f ms", provider.label, resp.status_code,
                      (time.monotonic() - started) * 1000)
        if not 200 <= resp.status_code < 300:
            try:
                raw = resp.content
            except requests.RequestException:
                raw = b""
            finally:
                resp.close()
            raise provider.map_error(resp.status_code, raw, resp.headers)
        return resp
