"""The one Redis client factory: the router's shared state and the response cache connect alike.

Both fall back on their own (local state; calls go on uncached) when Redis fails, so a command must
fail within a quarter second, never wait in a retry loop. redis-py is imported only when called.
"""

import os

# Timeouts for every command and connection; no background health-check PINGs.
OPTIONS = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25, "health_check_interval": 0}
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6379


def client(url=None, host=None, port=None, password=None, environ=os.environ):
    """A redis.Redis for `url`, else for host / port / password, which default to REDIS_HOST
    (127.0.0.1), REDIS_PORT (6379) and REDIS_PASSWORD."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # redis-py >= 6 retries a failed command 10 times with exponential backoff: seconds of stall
    # per call while Redis is down. Fail fast instead: the caller falls back.
    options = {**OPTIONS, "retry": Retry(NoBackoff(), 0)}
    if url:
        return redis.Redis.from_url(url, **options)
    return redis.Redis(host=host or environ.get("REDIS_HOST") or DEFAULT_HOST,
                       port=int(port or environ.get("REDIS_PORT") or DEFAULT_PORT),
                       password=password or environ.get("REDIS_PASSWORD") or None, **options)
