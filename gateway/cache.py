"""Response caching: exact-match answers of chat, completions and embeddings, in-process or in Redis.

On with `litellm_settings.cache: true`; `cache_params` (LiteLLM's keys) pick the backend (`type:
local | redis`, `host`, `port`, `password`, or REDIS_HOST / REDIS_PORT / REDIS_PASSWORD), `ttl`,
`namespace` and `supported_call_types`. The key is a SHA-256 over the endpoint, the model group the
request resolves to, whether it streams, and every body parameter that can change the answer; it
also covers the caller's virtual key, so one tenant never gets (or probes) another's answers, unless
`cache_params.shared: true`. Per request: `caching: false` skips the cache, and `cache: {"no-cache":
true}` (do not read), `{"no-store": true}` (do not write), `{"ttl": 60}`, `{"s-maxage": 10}` (accept
only an entry at most this old), `{"namespace": "x"}`; each is checked (type, range, characters) and
a bad one is a 400 naming it.

A stream is stored as the chunks the upstream sent (usage included) and replayed as a stream. Redis
errors or slowness never fail a call: when Redis cannot be reached the cache steps aside for a few
seconds (said once in the log) and comes back by itself; a command Redis refuses only leaves that
call uncached.
"""

import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict

import orjson

from gateway import errors
from gateway.config.sections import CACHE_LOCAL_MAX_MB as LOCAL_MAX_MB
from gateway.config.sections import CACHE_MAX_SECONDS as MAX_SECONDS
from gateway.infra.redis import client as redis_client

log = logging.getLogger("gateway.cache")

LOCAL_MAX_ENTRIES = 10_000
REDIS_RETRY_SECONDS = 5.0
# A per-request namespace becomes part of a Redis key: short, and only characters safe in keys and logs.
_NAMESPACE = re.compile(r"[A-Za-z0-9._:/-]{0,128}")
# Body keys that never change the answer: gateway controls, routing, transport, tracking.
NOT_IN_KEY = frozenset({
    "stream", "stream_options", "caching", "cache", "metadata", "user", "request_timeout", "timeout",
    "num_retries", "fallbacks", "context_window_fallbacks", "api_key", "api_base", "base_url",
    "api_version", "extra_headers", "litellm_logging_obj", "proxy_server_request",
})  # `mock_response` changes the answer: a mock answer is never served to a call without it
HIT_HEADER = "x-cache"
KEY_HEADER = "x-litellm-cache-key"


class LocalCache:
    """Per-worker memory: least recently used entries dropped past `max_entries` or `max_bytes`."""

    name = "local"

    def __init__(self, max_entries=LOCAL_MAX_ENTRIES, max_bytes=LOCAL_MAX_MB * 1024 * 1024):
        self._data = OrderedDict()
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            found = self._data.get(key)
            if found is None:
                return None
            if found[0] <= time.time():
                self._drop(key)
                return None
            self._data.move_to_end(key)
            return found[1]

    def set(self, key, value, ttl):
        if len(value) > self._max_bytes:
            return
        with self._lock:
            if key in self._data:
                self._drop(key)
            self._data[key] = (time.time() + ttl, value)
            self._bytes += len(value)
            while len(self._data) > self._max or self._bytes > self._max_bytes:
                self._drop(next(iter(self._data)))

    def _drop(self, key):
        _expiry, value = self._data.pop(key)
        self._bytes -= len(value)


class RedisCache:
    """Redis with short timeouts; while it fails, calls go on uncached (said once) and it is tried
    again every few seconds."""

    name = "redis"

    def __init__(self, client):
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
        self.client = client
        # What says Redis cannot be reached (refused, timed out, auth, still loading): set the cache
        # aside for everyone. Anything else (ResponseError, DataError) is the one call's problem.
        self._outage = (RedisConnectionError, RedisTimeoutError, OSError)
        self._down_until = 0.0
        self._down = False
        self._refused_said = False

    def _run(self, fn):
        if time.monotonic() < self._down_until:
            return None
        try:
            result = fn()
        except self._outage as exc:
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            if not self._down:
                self._down = True
                log.warning("cache: Redis unreachable (%s); calls go on uncached until it is back",
                            type(exc).__name__)
            return None
        except Exception as exc:  # noqa: BLE001  (a refused command never fails a call)
            if not self._refused_said:
                self._refused_said = True
                log.warning("cache: Redis refused a command (%s: %.200s); that call goes on uncached",
                            type(exc).__name__, exc)
            return None
        if self._down:
            self._down = False
            log.warning("cache: Redis reachable again; caching resumed")
        return result

    def get(self, key):
        return self._run(lambda: self.client.get(key))

    def set(self, key, value, ttl):
        self._run(lambda: self.client.set(key, value, ex=min(MAX_SECONDS, max(1, int(round(ttl))))))


def _redis_client(params, environ=os.environ):
    """The cache's Redis: CacheSettings (cache_params) url, else host / port / password (or REDIS_*)."""
    return redis_client(params.url, params.host, params.port, params.password, environ)


class ResponseCache:
    """The cache as serve() uses it: keys, per-request controls, lookups and stores."""

    def __init__(self, backend, ttl, namespace, call_types, shared):
        self.backend = backend
        self.ttl = ttl
        self.namespace = namespace
        self.call_types = call_types
        self.shared = shared

    def plan(self, endpoint, body, group, stream, rules):
        """What this call may do with the cache: a CachePlan, or None when it is not cached."""
        caching = body.get("caching")
        if caching is not None and not isinstance(caching, bool):
            raise errors.BadRequestError("`caching` must be true or false.", param="caching")
        if endpoint not in self.call_types or caching is False:
            return None
        controls = body.get("cache")
        if controls is None:
            controls = {}
        if not isinstance(controls, dict):
            raise errors.BadRequestError("`cache` must be an object such as {\"no-cache\": true, \"ttl\": 60}.",
                                         param="cache")
        ttl = _seconds(controls, "ttl", self.ttl)
        max_age = _seconds(controls, "s-maxage", None)
        namespace = controls.get("namespace")
        if namespace is None:
            namespace = self.namespace
        elif not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise errors.BadRequestError("`cache.namespace` must be a string of at most 128 letters, digits "
                                         "and . _ : / -", param="cache.namespace")
        read, write = _flag(controls, "no-cache"), _flag(controls, "no-store")
        scope = "shared" if self.shared or rules is None else rules.hash
        material = {k: v for k, v in body.items() if k not in NOT_IN_KEY}
        material["model"] = group
        digest = hashlib.sha256(orjson.dumps([endpoint, stream, scope, material],
                                             option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()
        key = f"{namespace}:{digest}" if namespace else digest
        return CachePlan(self, "gateway:cache:" + key, digest, ttl, max_age, read=not read, write=not write)


def _seconds(controls, name, default):
    """A per-request number of seconds in [0, MAX_SECONDS] (a 400 naming it otherwise); None = unset."""
    value = controls.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_SECONDS:
        raise errors.BadRequestError(f"`cache.{name}` must be a number of seconds from 0 to {MAX_SECONDS}.",
                                     param=f"cache.{name}")
    return float(value)


def _flag(controls, name):
    """A per-request switch: true, false, or unset (false)."""
    value = controls.get(name)
    if value is not None and not isinstance(value, bool):
        raise errors.BadRequestError(f"`cache.{name}` must be true or false.", param=f"cache.{name}")
    return value is True


class CachePlan:
    """One call's cache key and what it may read and write."""

    __slots__ = ("cache", "key", "digest", "ttl", "max_age", "read", "write")

    def __init__(self, cache, key, digest, ttl, max_age, read, write):
        self.cache, self.key, self.digest = cache, key, digest
        self.ttl, self.max_age, self.read, self.write = ttl, max_age, read, write

    def lookup(self):
        """The stored answer (a dict, or a list of chunks for a stream), or None."""
        if not self.read:
            return None
        raw = self.cache.backend.get(self.key)
        if raw is None:
            return None
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if self.max_age is not None and time.time() - entry.get("at", 0) > self.max_age:
            return None
        return entry.get("answer")

    def store(self, answer):
        """Keep a successful answer (dict or list of chunks) for ttl seconds."""
        if self.write and self.ttl:
            self.cache.backend.set(self.key, orjson.dumps({"at": time.time(), "answer": answer}), self.ttl)

    def tap(self, stream):
        """The stream, its chunks kept as they pass and stored once it has run to its end."""
        if not (self.write and self.ttl):
            return stream
        kept = []

        def record(chunk):
            kept.append(orjson.loads(orjson.dumps(chunk)))  # a copy: later taps edit chunks
            return chunk

        def ended(error):
            if error is None:
                self.store(kept)
        return stream.tap(record).at_end(ended)


def replay(chunks):
    """A cached stream as a ChunkStream (no upstream behind it)."""
    from gateway.wire.stream import ChunkStream
    return ChunkStream(None, None, map(dict, chunks))


def build_cache(settings, environ=os.environ):
    """The configured ResponseCache (from settings.litellm.cache, checked at load), or None when off."""
    params = settings.litellm.cache
    if params is None:
        return None
    kind = params.type or ("redis" if (params.host or environ.get("REDIS_HOST")) else "local")
    backend = (RedisCache(_redis_client(params, environ)) if kind == "redis"
               else LocalCache(max_bytes=int(params.max_size_mb * 1024 * 1024)))
    return ResponseCache(backend, float(params.ttl), params.namespace, params.call_types, params.shared)
