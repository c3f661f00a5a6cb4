"""Pooled HTTP sending to upstreams and callback sinks: timeouts, I/O error mapping, debug curl log.

The one place socket/urllib3 errors of a request become GatewayErrors (io_error). An answer outside
2xx is not mapped here: `send` raises ErrorAnswer with its status, body and headers, and the shared
flow (wire.upstream) hands those to the provider's pure `map_error`, so the transport never calls
back into a provider.

Calls go through requests' own connection layer (urllib3 pools, verified against requests' CA
bundle) without `Session.request`: its per-call preparation (settings merging, cookie jars, hooks,
URL re-parsing) cost 687 us of a 225 us upstream round trip on the benchmark machine.
"""

import base64
import dataclasses
import logging
import os
import shlex
import time
from urllib.parse import unquote
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.exceptions import ConnectTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from gateway import errors
from gateway.infra.redact import display_url

log = logging.getLogger("gateway.wire.transport")

CONNECT_TIMEOUT = 10.0
# gevent serves up to 1000 connections per worker; requests' default pool of 10 per host would
# make most of them open and close a fresh upstream connection.
POOL_SIZE = 256
# Header names that carry secrets; custom ones from `litellm_params.headers` too (X-Portkey-Api-Key...).
_SECRET_WORDS = ("auth", "key", "token", "secret", "cookie", "signature", "password", "credential")


class ErrorAnswer(Exception):
    """An upstream answered outside 2xx: its status, raw body and headers, for the provider's
    map_error (applied by the shared flow, wire.upstream); never leaves wire/."""

    def __init__(self, status, raw, headers):
        super().__init__(status)
        self.status = status
        self.raw = raw
        self.headers = headers


def io_error(exc, label, timeout, connect_timeout=CONNECT_TIMEOUT):
    """The GatewayError for a socket/urllib3 failure of one request to `label` (a deployment, or a
    callback sink) with a `timeout` s read limit."""
    connect = min(connect_timeout, timeout)
    if isinstance(exc, NewConnectionError):  # urllib3 files "refused" under connect timeouts; it is not one
        return errors.UpstreamConnectionError(
            f"Could not connect to upstream (deployment: {label}): connection refused or host unreachable")
    if isinstance(exc, ConnectTimeoutError):
        return errors.UpstreamTimeoutError(
            f"Upstream did not accept a connection within {connect:g}s (deployment: {label})")
    if isinstance(exc, Urllib3Timeout):
        return errors.UpstreamTimeoutError(f"Upstream timed out after {timeout:g}s (deployment: {label})")
    return errors.UpstreamConnectionError(
        f"Could not connect to upstream (deployment: {label}): {type(exc).__name__}")


def release(resp, finished):
    """Give a streamed response's connection back to the pool when its body was read to the end
    (drained: keeps TLS connections warm), else cut it."""
    if finished:
        try:
            resp.drain_conn()
            resp.release_conn()
            return
        except (Urllib3Error, OSError):
            pass
    resp.close()


def is_secret_header(name):
    """Whether a header's value must never be shown."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def split_credentials(url):
    """(url without `user:password@`, its `Authorization: Basic` value or None, the secrets to scrub).

    Done once per deployment, at start-up: urllib3 ignores the user part of a URL, so credentials
    there would otherwise never be sent (and the address would show them)."""
    if not url or not isinstance(url, str) or "@" not in url:
        return url, None, ()
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None, ()
    if "@" not in parts.netloc:
        return url, None, ()
    userinfo, _, host = parts.netloc.rpartition("@")
    raw_user, _, raw_password = userinfo.partition(":")
    user, password = unquote(raw_user), unquote(raw_password)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    # A very short password is not scrubbed from upstream text: it would mangle every message.
    secrets = tuple(dict.fromkeys(s for s in (password, raw_password, token) if len(s) >= 4))
    return clean, f"Basic {token}", secrets


def with_basic_auth(req, basic_auth):
    """The request as sent for a deployment whose api_base carried `user:password@`: that user part
    stripped from the URL, and the Basic credentials as its Authorization header (replacing any
    other, as requests and httpx -- so LiteLLM -- do with credentials in a URL)."""
    url = split_credentials(req.url)[0]
    headers = {k: v for k, v in req.headers.items() if k.lower() != "authorization"}
    headers["Authorization"] = basic_auth
    return dataclasses.replace(req, url=url, headers=headers)


def curl_command(req):
    """The request as a runnable curl command with every secret header (and URL secret) masked."""
    parts = ["curl", "-X", req.method, display_url(req.url)]
    for name, value in req.headers.items():
        shown = "****" if is_secret_header(name) else value
        parts += ["-H", f"{name}: {shown}"]
    if req.body is not None:
        parts += ["-d", req.body.decode("utf-8", "replace")]
    return " ".join(shlex.quote(p) for p in parts)


class Transport:
    """One pool manager per worker (per callback sink: a small one of its own); the one place
    upstream I/O errors are mapped."""

    def __init__(self, debug=False, *, num_pools=64, pool_size=POOL_SIZE,
                 connect_timeout=CONNECT_TIMEOUT):
        self.debug = debug
        self.connect_timeout = connect_timeout
        # Upstreams are named by config only: no proxy environment variables, no redirects.
        # A private CA (corporate proxies, self-hosted servers) comes in the usual env vars.
        ca_certs = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE") or DEFAULT_CA_BUNDLE_PATH
        self.pools = urllib3.PoolManager(num_pools=num_pools, maxsize=pool_size, block=False,
                                         cert_reqs="CERT_REQUIRED", ca_certs=ca_certs, retries=False)
        self._timeouts = {}

    def _timeout(self, seconds):
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = urllib3.Timeout(connect=min(self.connect_timeout, seconds),
                                                                read=seconds)
        return timeout

    def send(self, provider, req, *, timeout, stream=False):
        """Send one request to a deployment; return the urllib3 response on 2xx, raise ErrorAnswer
        (status, body, headers) otherwise and the mapped GatewayError when the I/O fails.

        A streamed response must be closed (or drained) by the caller.
        """
        if provider.basic_auth is not None:
            req = with_basic_auth(req, provider.basic_auth)
        if self.debug:
            log.debug("POST Request Sent from gateway to %s:\n%s", provider.label, curl_command(req))
        started = time.monotonic()
        try:
            resp = self.pools.urlopen(req.method, req.url, body=req.body, headers=req.headers,
                                      timeout=self._timeout(timeout), preload_content=not stream,
                                      redirect=False, retries=False)
        except (Urllib3Error, OSError) as exc:
            raise io_error(exc, provider.label, timeout, self.connect_timeout) from exc
        if self.debug:
            log.debug("Upstream %s answered %s in %.1f ms", provider.label, resp.status,
                      (time.monotonic() - started) * 1000)
        if not 200 <= resp.status < 300:
            try:
                raw = resp.data if not stream else resp.read()
            except (Urllib3Error, OSError):
                raw = b""
            finally:
                resp.release_conn() if not stream else resp.close()
            raise ErrorAnswer(resp.status, raw, resp.headers)
        return resp

    def request(self, method, url, body, headers, *, timeout, label):
        """Send one request (a callback sink's POST) and return the response whatever its status;
        the mapped GatewayError (its cause the urllib3/socket error) when the I/O fails."""
        # A fresh Timeout, not the cached ones: a sink's timeouts shrink to a deadline at exit.
        limits = urllib3.Timeout(connect=min(self.connect_timeout, timeout), read=timeout)
        try:
            return self.pools.urlopen(method, url, body=body, headers=headers, timeout=limits,
                                      redirect=False, retries=False)
        except (Urllib3Error, OSError) as exc:
            raise io_error(exc, label, timeout, self.connect_timeout) from exc
