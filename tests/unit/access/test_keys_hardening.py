"""Issue #11 on the key service, on SQLite and on the real PostgreSQL: changes reach every worker at
once (item 4), concurrent changes of one key tell the truth (item 12), stored values are bounded
(items 13, 14), a limit of 0 is kept as 0 (item 20)."""

import threading
import uuid

import orjson
import pytest
from sqlalchemy import insert

from gateway import errors
from gateway.access import keys
from gateway.storage.models import VirtualKey
from gateway.access.keys import KeyService
from gateway.access.keys import hash_key
from gateway.routing.state import LocalState
from gateway.routing.state import RedisState
from tests.unit.access.test_keys import count_statements
from tests.unit.access.test_keys import db  # noqa: F401  (fixtures shared with the key tests)
from tests.unit.access.test_keys import db_url  # noqa: F401
from tests.unit.access.test_keys import make_db  # noqa: F401
from tests.unit.access.test_keys import new_db_url  # noqa: F401
from tests.unit.access.test_keys import service  # noqa: F401
from tests.unit.access.test_keys import wait_until
from tests.unit.routing.test_state import prefix  # noqa: F401
from tests.unit.routing.test_state import redis_client  # noqa: F401
from tests.unit.routing.test_state import redis_state


@pytest.fixture
def long_cache(monkeypatch):
    """A lookup cache that outlives every test: only the change signal can explain a fresh answer."""
    monkeypatch.setattr(keys, "CACHE_SECONDS", 600.0)


# ---- item 4: a change reaches every worker at once -------------------------------------------------

CHANGES = {
    "regenerate": (lambda admin, key: admin.regenerate(key),
                   lambda worker, key: worker.lookup(key) is None),
    "delete": (lambda admin, key: admin.delete([key]),
               lambda worker, key: worker.lookup(key) is None),
    "block": (lambda admin, key: admin.set_blocked(key, True),
              lambda worker, key: worker.lookup(key).blocked),
    "update": (lambda admin, key: admin.update({"key": key, "models": ["other"]}),
               lambda worker, key: worker.lookup(key).models == ("other",)),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_reaches_every_worker_of_the_instance_at_once(make_db, tmp_path, long_cache, change):
    path = str(tmp_path / "state.sqlite")  # the instance's shared state: one file, one view per worker
    admin, *workers = [KeyService(make_db(), state=LocalState(path)) for _ in range(3)]
    key = admin.generate({})["key"]
    for worker in workers:
        assert worker.lookup(key) is not None  # cached, for ten minutes
    make, changed = CHANGES[change]
    make(admin, key)
    for worker in (admin, *workers):
        assert changed(worker, key), f"a worker still serves the key as it was before the {change}"


def test_regenerate_new_key_works_and_the_old_stops_on_every_worker(make_db, tmp_path, long_cache):
    path = str(tmp_path / "state.sqlite")
    admin, worker = (KeyService(make_db(), state=LocalState(path)) for _ in range(2))
    old = admin.generate({"rpm_limit": 7})["key"]
    assert worker.lookup(old).rpm_limit == 7
    new = admin.regenerate(old)["key"]
    assert worker.lookup(old) is None and worker.lookup(new).rpm_limit == 7
    unblocked = admin.set_blocked(new, True)["token"]
    assert worker.lookup(new).blocked
    admin.set_blocked(unblocked, False)
    assert not worker.lookup(new).blocked  # an unblock is a change too


def test_cache_hits_stay_off_the_database_with_the_change_signal(make_db, tmp_path, long_cache):
    path = str(tmp_path / "state.sqlite")
    admin, worker = (KeyService(make_db(), state=LocalState(path)) for _ in range(2))
    key, other = admin.generate({})["key"], admin.generate({})["key"]
    statements = count_statements(worker.db)
    assert worker.lookup(key) is not None and worker.lookup(other) is not None
    for _ in range(200):
        assert worker.lookup(key) is not None
    assert len(statements) == 2
    admin.update({"key": other, "rpm_limit": 3})  # any change: each cached key is read once more
    assert worker.lookup(key) is not None and worker.lookup(other).rpm_limit == 3
    for _ in range(200):
        worker.lookup(key)
    assert len(statements) == 4


def test_a_change_reaches_other_instances_through_redis(make_db, redis_client, prefix, tmp_path,  # noqa: F811
                                                        long_cache):
    # Two instances: separate local state (one file each), one Redis.
    admin = KeyService(make_db(), state=redis_state(prefix, tmp_path, "a"))
    other = KeyService(make_db(), state=redis_state(prefix, tmp_path, "b"))
    key = admin.generate({})["key"]
    assert other.lookup(key) is not None
    admin.delete([key])
    assert wait_until(lambda: other.lookup(key) is None, keys.REMOTE_CHECK_SECONDS + 5.0) is not None


def test_a_change_still_reaches_the_instance_while_redis_is_down(make_db, tmp_path, long_cache):
    import redis
    path = str(tmp_path / "state.sqlite")

    def instance_worker():
        client = redis.Redis(host="127.0.0.1", port=1, socket_timeout=0.2, socket_connect_timeout=0.2)
        return KeyService(make_db(), state=RedisState(client, LocalState(path), prefix="unused:"))
    admin, worker = instance_worker(), instance_worker()
    key = admin.generate({})["key"]
    assert worker.lookup(key) is not None
    admin.regenerate(key)
    assert worker.lookup(key) is None


# ---- item 12: concurrent changes of one key ------------------------------------------------------

def _race(calls):
    """Run the calls at once (one thread each); each result or the GatewayError it raised."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(i, call):
        barrier.wait(timeout=30)
        try:
            results[i] = call()
        except errors.GatewayError as exc:
            results[i] = exc
        except Exception as exc:  # noqa: BLE001  (what a 500 would be)
            results[i] = ("unexpected", f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def _lost(result):
    """A refusal that tells the truth: the key's hash is gone (regenerated or deleted before)."""
    return isinstance(result, errors.NotFoundError) and result.code == "key_not_found"


@pytest.mark.parametrize("by", ["key", "token"])
def test_concurrent_regenerates_one_wins_and_its_key_works(make_db, by):
    services = [KeyService(make_db()) for _ in range(6)]
    for _ in range(3):
        answer = services[0].generate({"rpm_limit": 5})
        results = _race([lambda s=s: s.regenerate(answer[by]) for s in services])
        won = [r for r in results if isinstance(r, dict)]
        assert len(won) == 1, results
        assert all(_lost(r) for r in results if not isinstance(r, dict)), results
        rules = services[1].lookup(won[0]["key"])
        assert rules is not None and rules.rpm_limit == 5
        assert services[2].lookup(answer["key"]) is None
        assert services[0].info(won[0]["token"])["token"] == hash_key(won[0]["key"])


def test_concurrent_regenerate_update_block_delete_never_500_and_answers_are_true(make_db):
    services = [KeyService(make_db()) for _ in range(5)]
    for _ in range(4):
        answer = services[0].generate({})
        token = answer["token"]
        results = _race([lambda: services[0].regenerate(token),
                         lambda: services[1].update({"key": token, "rpm_limit": 9}),
                         lambda: services[2].set_blocked(token, True),
                         lambda: services[3].delete([token]),
                         lambda: services[4].regenerate(answer["key"])])
        assert all(isinstance(r, dict) or isinstance(r, list) or _lost(r) for r in results), results
        regenerated = [r for r in (results[0], results[4]) if isinstance(r, dict)]
        deleted = isinstance(results[3], list)
        assert len(regenerated) + deleted <= 1, results  # both name the old hash: one can win
        remaining = services[0].list()
        if deleted:
            assert remaining == []
        elif regenerated:
            [row] = remaining
            assert row["token"] == regenerated[0]["token"]
            assert services[1].lookup(regenerated[0]["key"]) is not None
            if isinstance(results[1], dict):  # an update that answered 200 was applied
                assert row["rpm_limit"] == 9
            if isinstance(results[2], dict):
                assert row["blocked"] is True
        else:
            [row] = remaining
            assert row["token"] == token
        if remaining:
            services[0].delete([row["token"] for row in remaining])


def test_concurrent_deletes_of_one_key_one_answers_200(make_db):
    services = [KeyService(make_db()) for _ in range(4)]
    answer = services[0].generate({})
    results = _race([lambda s=s: s.delete([answer["token"]]) for s in services])
    assert sum(isinstance(r, list) for r in results) == 1, results
    assert all(isinstance(r, list) or _lost(r) for r in results), results


def test_deleting_several_keys_in_opposite_orders_at_once(make_db):
    a, b = KeyService(make_db()), KeyService(make_db())
    for _ in range(3):
        one, two = a.generate({})["token"], a.generate({})["token"]
        results = _race([lambda: a.delete([one, two]), lambda: b.delete([two, one])])
        assert sum(isinstance(r, list) for r in results) == 1, results
        assert all(isinstance(r, list) or _lost(r) for r in results), results
        assert a.list() == []


# ---- item 13: nested and large values --------------------------------------------------------------

def _nested(depth, leaf="x"):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("field, value", [
    ("metadata", _nested(300)),
    ("metadata", _nested(keys.MAX_JSON_DEPTH + 1)),
    ("config", _nested(300)),
    ("metadata", {"list": _nested(keys.MAX_JSON_DEPTH, leaf=["deep"])}),
    ("metadata", {"big": "x" * (keys.MAX_JSON_BYTES + 1)}),
    ("config", {str(i): i for i in range(keys.MAX_JSON_BYTES // 4)}),
    ("aliases", {f"name-{i}": "gpt-4" for i in range(keys.MAX_JSON_BYTES // 10)}),
    ("models", [f"model-{i}" for i in range(keys.MAX_JSON_BYTES // 8)]),
])
def test_deep_or_large_values_are_refused_naming_the_field(service, field, value):
    with pytest.raises(errors.BadRequestError) as bad:
        service.generate({field: value})
    assert bad.value.param == field and field in bad.value.message
    assert service.list() == []
    answer = service.generate({})
    with pytest.raises(errors.BadRequestError) as bad:
        service.update({"key": answer["key"], field: value})
    assert bad.value.param == field


def test_values_within_the_bounds_are_kept(service):
    metadata = {"deep": _nested(keys.MAX_JSON_DEPTH - 1), "tags": ["a", "b"], "n": 1.5, "ok": True}
    answer = service.generate({"metadata": metadata, "config": {"x": [1, 2, {"y": None}]}})
    assert service.info(answer["key"])["metadata"] == metadata


def test_a_bad_stored_row_does_not_break_list_or_info(service, db):
    good = service.generate({"key_alias": "good"})
    # A row written before values were checked: metadata 300 deep, config and aliases of the wrong
    # shape, models not a list of names.
    digest = hash_key("sk-" + uuid.uuid4().hex * 2)
    with db.engine.begin() as connection:
        connection.execute(insert(VirtualKey).values(
            key_hash=digest, key_hint="sk-...bad0", meta=_nested(300), config=_nested(300),
            aliases={"a": {"b": 1}}, models={"not": "a list"}, spend=0.0, reserved=0.0, blocked=False))
    listed = service.list()
    assert [item["token"] for item in listed] == [good["token"], digest]
    orjson.dumps(listed)  # what /key/list renders: no recursion error
    bad = service.info(digest)
    orjson.dumps(bad)
    assert bad["metadata"] == {} and bad["config"] == {} and bad["aliases"] == {}
    assert "metadata" in bad["unreadable"] and "aliases" in bad["unreadable"]
    assert service.info(good["token"])["key_alias"] == "good"
    # the update that repairs it works, and so does delete
    repaired = service.update({"key": digest, "metadata": {"fixed": True}, "config": {}, "aliases": {},
                               "models": ["gpt-4"]})
    assert repaired["metadata"] == {"fixed": True} and "unreadable" not in repaired
    assert service.delete([digest]) == [digest]


def test_a_bad_stored_row_is_served_closed(service, db):
    """The hot path reads the same row: models of the wrong shape allow nothing, bad aliases none."""
    key = "sk-" + uuid.uuid4().hex * 2
    with db.engine.begin() as connection:
        connection.execute(insert(VirtualKey).values(
            key_hash=hash_key(key), key_hint="sk-...bad1", meta={}, config={},
            aliases={"a": {"b": 1}}, models={"gpt-4": 1}, spend=0.0, reserved=0.0, blocked=False))
    rules = service.lookup(key)
    assert rules.models == () and rules.aliases == {}


# ---- item 20: a limit of 0 is 0 --------------------------------------------------------------------

def test_a_limit_of_zero_is_stored_and_shown_as_zero(service):
    limits = {"rpm_limit": 0, "tpm_limit": 0, "max_parallel_requests": 0, "max_budget": 0}
    answer = service.generate(limits)
    assert {name: answer[name] for name in limits} == limits
    assert {name: service.info(answer["key"])[name] for name in limits} == limits
    rules = service.lookup(answer["key"])
    assert (rules.rpm_limit, rules.tpm_limit, rules.max_parallel_requests, rules.max_budget) == (0, 0, 0, 0)
    other = service.generate({"rpm_limit": 5, "tpm_limit": 5, "max_parallel_requests": 5})
    updated = service.update({"key": other["key"], **limits})
    assert {name: updated[name] for name in limits} == limits
    cleared = service.update({"key": other["key"], "rpm_limit": None})
    assert cleared["rpm_limit"] is None and cleared["tpm_limit"] == 0  # null: no limit
