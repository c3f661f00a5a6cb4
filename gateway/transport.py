"""Pooled HTTP sending to upstreams: timeouts, upstream error mapping, debug curl log.

Calls go through requests' own connection layer (urllib3 pools, verified against requests' CA
bundle) without `Session.request`: its per-call preparation (settings merging, cookie jars, hooks,
URL re-parsing) cost 687 us of a 225 us upstream round trip on the benchmark machine.
"""

import logging
import os
import shlex
import time

import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.exceptions import ConnectTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from gateway import errors

log = logging.getLogger("gateway.transport")

CONNECT_TIMEOUT = 10.0
# gevent serves up to 1000 connections per worker; requests' default pool of 10 per host would
# make most of them open and close a fresh upstream connection.
POOL_SIZE = 256
# Header names that carry secrets; custom ones from `litellm_params.headers` too (X-Portkey-Api-Key...).
_SECRET_WORDS = ("auth", "key", "token", "secret", "cookie", "signature", "password", "credential")


def is_secret_header(name):
    """Whether a header's value must never be shown."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def curl_command(req):
    """The request as a runnable curl command with every secret header masked."""
    parts = ["curl", "-X", req.method, req.url]
    for name, value in req.headers.items():
        shown = "****" if is_secret_header(name) else value
        parts += ["-H", f"{name}: {shown}"]
    if req.body is not None:
        parts += ["-d", req.body.decode("utf-8", "replace")]
    return " ".join(shlex.quote(p) for p in parts)


class Transport:
    """One pool manager per worker; the single place upstream I/O errors are mapped."""

    def __init__(self, debug=False):
        self.debug = debug
        # Upstreams are named by config only: no proxy environment variables, no redirects.
        # A private CA (corporate proxies, self-hosted servers) comes in the usual env vars.
        ca_certs = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE") or DEFAULT_CA_BUNDLE_PATH
        self.pools = urllib3.PoolManager(num_pools=64, maxsize=POOL_SIZE, block=False,
                                         cert_reqs="CERT_REQUIRED", ca_certs=ca_certs, retries=False)
        self._timeouts = {}

    def _timeout(self, seconds):
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = urllib3.Timeout(connect=min(CONNECT_TIMEOUT, seconds),
                                                                read=seconds)
        return timeout

    def send(self, provider, req, *, timeout, stream=False):
        """Send one request; return the urllib3 response on 2xx, raise the mapped GatewayError otherwise.

        A streamed response must be closed (or drained) by the caller.
        """
        if self.debug:
            log.debug("POST Request Sent from gateway to %s:\n%s", provider.label, curl_command(req))
        started = time.monotonic()
        try:
            resp = self.pools.urlopen(req.method, req.url, body=req.body, headers=req.headers,
                                      timeout=self._timeout(timeout), preload_content=not stream,
                                      redirect=False, retries=False)
        except NewConnectionError as exc:  # urllib3 files "refused" under connect timeouts; it is not one
            raise errors.UpstreamConnectionError(
                f"Could not connect to upstream (deployment: {provider.label}): connection refused "
                "or host unreachable") from exc
        except ConnectTimeoutError as exc:
            raise errors.UpstreamTimeoutError(
                f"Upstream did not accept a connection within {min(CONNECT_TIMEOUT, timeout):g}s "
                f"(deployment: {provider.label})") from exc
        except Urllib3Timeout as exc:
            raise errors.UpstreamTimeoutError(
                f"Upstream timed out after {timeout:g}s (deployment: {provider.label})") from exc
        except (Urllib3Error, OSError) as exc:
            raise errors.UpstreamConnectionError(
                f"Could not connect to upstream (deployment: {provider.label}): {type(exc).__name__}") from exc
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
            raise provider.map_error(resp.status, raw, resp.headers)
        return resp
