"""The one Redis client factory (gateway/infra/redis.py): short timeouts, no retries, env defaults."""

from gateway.infra import redis as factory


def _options(client):
    kwargs = client.connection_pool.connection_kwargs
    return kwargs, client.get_retry()


def test_host_port_and_password_default_to_the_environment():
    env = {"REDIS_HOST": "redis.internal", "REDIS_PORT": "6380", "REDIS_PASSWORD": "pw"}
    kwargs, retry = _options(factory.client(environ=env))
    assert (kwargs["host"], kwargs["port"], kwargs["password"]) == ("redis.internal", 6380, "pw")
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.25, 0.25)
    assert retry is not None and retry._retries == 0
    kwargs, _ = _options(factory.client(host="h", port=7000, environ=env))
    assert (kwargs["host"], kwargs["port"], kwargs["password"]) == ("h", 7000, "pw")
    kwargs, _ = _options(factory.client(environ={}))
    assert (kwargs["host"], kwargs["port"], kwargs["password"]) == ("127.0.0.1", 6379, None)


def test_a_url_wins_and_gets_the_same_options():
    kwargs, retry = _options(factory.client("redis://u:secret@cache.example:6390/2", host="ignored", environ={}))
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("cache.example", 6390, 2, "secret")
    assert kwargs["socket_timeout"] == 0.25 and retry._retries == 0


def test_the_router_state_and_the_cache_both_build_their_clients_here(tmp_path, monkeypatch):
    from gateway import cache
    from gateway.routing import state
    built = []
    monkeypatch.setattr(state, "redis_client", lambda *a, **kw: built.append(("state", a, kw)) or object())
    monkeypatch.setattr(cache, "redis_client", lambda *a, **kw: built.append(("cache", a, kw)) or object())
    monkeypatch.setattr(state, "RedisState", lambda client, local, **options: client)
    from gateway.config.sections import CacheSettings
    from gateway.config.sections import router_section
    state.build_state(router_section({"redis_host": "h", "redis_port": 1,
                                      "local_state_path": str(tmp_path / "s.sqlite")}, {}))
    cache._redis_client(CacheSettings(host="c", port=2), environ={})
    assert built == [("state", (None,), {"host": "h", "port": 1}), ("cache", (None, "c", 2, None, {}), {})]
