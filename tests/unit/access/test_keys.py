"""KeyService and Database on SQLite (a temporary file) and on the real PostgreSQL.

Every test that stores something runs on both. PostgreSQL tests use a schema of their own
(`?options=-csearch_path=<schema>`), dropped afterwards, so they run in parallel and leave nothing
behind. The server is required when CI=true; elsewhere its tests are skipped with the reason.
"""

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import re
import time
import uuid
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from sqlalchemy import event
from sqlalchemy import inspect
from sqlalchemy import text

from gateway import errors
from gateway.access import keys
from gateway.access.auth import Authenticator
from gateway.access.auth import LazyKeys
from gateway.access.auth import check_rules
from gateway.storage import Database
from gateway.access.keys import KeyService
from gateway.access.keys import hash_key
from gateway.access.keys import looks_like_key

from tests.pg import schema_url as pg_schema

# Authorization values an attacker might send; none may cost a database round trip.
HOSTILE_TOKENS = [
    "x' OR (SELECT pg_sleep(8)) IS NOT NULL --",
    "sk-' OR 1=1 --",
    "sk-x'); DROP TABLE gateway_keys; --",
    "a" * 8192,
    "clé-ünïcode",
    "sk-clé-ünïcode-ünïcode-ünïcode-ünïcode",
    "sk-" + "a" * 200,
    "sk-",
    "sk-" + "a" * 19,
    "sk-" + "a" * 30 + " " + "b" * 12,
    "sk-" + "a" * 30 + "\x00" + "b" * 12,
    "SK-" + "a" * 43,
    "",
    None,
    12345,
]


# ---- databases -------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql"])
def new_db_url(request, tmp_path):
    """Make URLs of empty databases nobody else uses: SQLite files in tmp_path, or PostgreSQL
    schemas of their own (dropped after the test)."""
    with contextlib.ExitStack() as stack:
        def make():
            if request.param == "sqlite":
                return f"sqlite:///{tmp_path / f'keys-{uuid.uuid4().hex[:8]}.sqlite'}"
            return stack.enter_context(pg_schema())
        yield make


@pytest.fixture
def db_url(new_db_url):
    return new_db_url()


@pytest.fixture
def make_db(db_url):
    """Open more Database objects on the same database (one per simulated worker); disposed after."""
    opened = []

    def make(migrate=True):
        db = Database(db_url)
        opened.append(db)
        if migrate:
            db.migrate()
        return db

    yield make
    for db in opened:
        db.engine.dispose()


@pytest.fixture
def db(make_db):
    return make_db()


@pytest.fixture
def service(db):
    return KeyService(db)


def count_statements(db):
    """A list that grows by one for each SQL statement the database's engine executes."""
    statements = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement))
    return statements


def head_revisions():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from gateway.storage import MIGRATIONS
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    return set(script.get_heads()), len(list(script.walk_revisions()))


def version_rows(db):
    with db.engine.connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT version_num FROM gateway_alembic_version"))]


def parse_time(value):
    """An ISO 8601 answer as an aware datetime (a naive one is a bug: its zone is unknown)."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"{value!r} has no UTC offset"
    return parsed


# ---- migrations -------------------------------------------------------------------------------

class _Upgrades(logging.Handler):
    """Counts alembic's "Running upgrade" lines: one per revision actually applied."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record):
        if record.getMessage().startswith("Running upgrade"):
            self.count += 1


@contextlib.contextmanager
def counting_upgrades():
    handler = _Upgrades()
    logger = logging.getLogger("alembic.runtime.migration")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_migrate_twice_is_a_no_op(make_db):
    heads, revisions = head_revisions()
    first = make_db(migrate=False)
    with counting_upgrades() as upgrades:
        first.migrate()
    assert upgrades.count == revisions
    assert set(version_rows(first)) == heads
    key = KeyService(first).generate({"models": ["gpt-4"]})["key"]

    # The same process again, and another process's Database (a second worker starting later).
    for db in (first, make_db(migrate=False)):
        with counting_upgrades() as upgrades:
            db.migrate()
        assert upgrades.count == 0
        assert set(version_rows(db)) == heads and len(version_rows(db)) == len(heads)
        assert KeyService(db).info(key)["models"] == ["gpt-4"]  # data untouched
    assert {"gateway_keys", "gateway_alembic_version"} <= set(inspect(first.engine).get_table_names())


def _migrate_in_child(url, barrier, results):
    """Run in a child process: wait for the others, migrate, report how many upgrades ran here."""
    try:
        with counting_upgrades() as upgrades:
            db = Database(url)
            barrier.wait(timeout=30)
            db.migrate()
        db.engine.dispose()
        results.put(("ok", upgrades.count))
    except BaseException as exc:  # noqa: BLE001  (report anything to the parent)
        results.put(("error", f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_migrations_from_several_processes_apply_once(new_db_url, processes):
    """Workers starting together on an empty database: every one succeeds, each revision runs once.
    A few rounds, each on a fresh database, since a race does not show every time."""
    import alembic.command  # noqa: F401  (imported before the fork, so every child starts at once)
    heads, revisions = head_revisions()
    context = multiprocessing.get_context("fork")
    for _ in range(5):
        url = new_db_url()
        barrier = context.Barrier(processes)
        results = context.Queue()
        children = [context.Process(target=_migrate_in_child, args=(url, barrier, results))
                    for _ in range(processes)]
        for child in children:
            child.start()
        answers = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(30)
            assert child.exitcode == 0
        assert all(status == "ok" for status, _ in answers), answers
        assert sum(count for _, count in answers) == revisions, answers  # each revision applied once
        db = Database(url)
        try:
            assert sorted(version_rows(db)) == sorted(heads)
            assert KeyService(db).generate({})["key"].startswith("sk-")  # the schema works
        finally:
            db.engine.dispose()


# ---- generate ---------------------------------------------------------------------------------

def test_generated_keys_are_long_random_and_well_formed(service):
    generated = {service.generate({})["key"] for _ in range(20)}
    assert len(generated) == 20
    for key in generated:
        assert key.startswith("sk-")
        assert len(key) - len("sk-") >= 43  # 256 random bits, url-safe base64
        assert re.fullmatch(r"sk-[A-Za-z0-9_-]+", key)
        assert looks_like_key(key)
        assert service.lookup(key) is not None


@pytest.mark.parametrize("duration, seconds", [
    ("20m", 20 * 60), ("30min", 30 * 60), ("2h", 2 * 3600), ("7d", 7 * 86400), ("30s", 30),
    ("never", None), ("absent", 3600),
    (None, None),  # LiteLLM's meaning of "duration": null: the key never expires (issue #11)
])
def test_generate_expires_after_the_duration(service, duration, seconds):
    body = {} if duration == "absent" else {"duration": duration}
    before = datetime.now(timezone.utc)
    answer = service.generate(body)
    after = datetime.now(timezone.utc)
    rules = service.lookup(answer["key"])
    if seconds is None:
        assert answer["expires"] is None and rules.expires is None
        assert service.info(answer["key"])["expires"] is None
        return
    expires = parse_time(answer["expires"])
    assert before + timedelta(seconds=seconds) <= expires <= after + timedelta(seconds=seconds)
    assert abs((rules.expires - expires).total_seconds()) < 0.001  # what the hot path enforces


def test_default_duration_is_configurable(db):
    answer = KeyService(db, default_duration="2d").generate({})
    expected = datetime.now(timezone.utc) + timedelta(days=2)
    assert abs((parse_time(answer["expires"]) - expected).total_seconds()) < 5
    assert KeyService(db, default_duration="never").generate({})["expires"] is None


def test_default_key_duration_setting_reaches_the_key_service(db_url):
    from gateway.app import open_key_service
    from gateway.config.settings import from_dict
    settings = from_dict({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
                          "general_settings": {"master_key": "sk-1234", "database_url": db_url,
                                               "default_key_duration": "30m"}}, source="test")
    service = open_key_service(settings)
    try:
        assert service.db.url == db_url  # general_settings.database_url wins over DATABASE_URL
        expected = datetime.now(timezone.utc) + timedelta(minutes=30)
        assert abs((parse_time(service.generate({})["expires"]) - expected).total_seconds()) < 5
    finally:
        service.db.engine.dispose()


def test_info_reports_the_same_expiry_as_generate_with_its_utc_offset(service):
    """/key/info's `expires` must name the same instant /key/generate answered, with its zone:
    a naive timestamp is read as local time by clients."""
    answer = service.generate({"duration": "20m"})
    info = service.info(answer["key"])
    assert parse_time(info["expires"]) == parse_time(answer["expires"])
    assert parse_time(info["created_at"]) <= parse_time(answer["expires"])


def test_generate_stores_every_field(service):
    from gateway.access.hierarchy import Hierarchy
    Hierarchy(service).new_team({"team_id": "t1"})  # a key's team must exist (LiteLLM: 404 otherwise)
    body = {"models": ["gpt-3.5-turbo", "gpt-4", "claude-2"], "aliases": {"gpt-3.5-turbo": "gpt-4"},
            "config": {"temperature": 0.2}, "metadata": {"user": "ishaan@berri.ai"}, "max_budget": 10.5,
            "budget_duration": "30d", "tpm_limit": 1000, "rpm_limit": 10, "max_parallel_requests": 2,
            "key_alias": "ci", "user_id": "u1", "team_id": "t1", "duration": "20m"}
    answer = service.generate(body)
    info = service.info(answer["key"])
    for name, value in body.items():
        if name != "duration":
            assert info[name] == value, name
            assert answer[name] == value, name
    assert info["spend"] == 0.0 and info["blocked"] is False
    rules = service.lookup(answer["key"])
    assert rules.models == ("gpt-3.5-turbo", "gpt-4", "claude-2")
    assert rules.aliases == {"gpt-3.5-turbo": "gpt-4"}
    assert (rules.rpm_limit, rules.max_parallel_requests, rules.max_budget) == (10, 2, 10.5)


def test_models_null_means_every_model(service):
    assert service.lookup(service.generate({"models": None})["key"]).models is None
    assert service.lookup(service.generate({})["key"]).models is None


# ---- the key is never stored -------------------------------------------------------------------

def test_database_holds_only_the_hash_of_the_key(service, db, db_url):
    answer = service.generate({"models": ["gpt-4"], "metadata": {"note": "x"}, "key_alias": "alias"})
    key = answer["key"]
    secret = key[len("sk-"):]
    with db.engine.connect() as connection:
        result = connection.execute(text("SELECT * FROM gateway_keys"))
        columns = list(result.keys())
        rows = [dict(zip(columns, row)) for row in result]
    assert len(rows) == 1
    row = rows[0]
    assert set(columns) >= {"key_hash", "key_hint", "models", "aliases", "config", "metadata"}
    for column, value in row.items():
        shown = value if isinstance(value, str) else repr(value)
        assert secret not in shown and secret[:16] not in shown and secret[-16:] not in shown, column
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest() == hash_key(key)
    assert row["key_hint"] == "sk-..." + key[-4:]
    assert answer["token"] == row["key_hash"] and answer["key_name"] == row["key_hint"]
    if db_url.startswith("sqlite"):  # not in the file either, nor in its write-ahead log
        path = db.engine.url.database
        for suffix in ("", "-wal", "-journal"):
            if os.path.exists(path + suffix):
                data = open(path + suffix, "rb").read()
                assert secret.encode() not in data and secret[:16].encode() not in data, suffix


def test_info_list_update_block_never_show_the_key(service):
    key = service.generate({})["key"]
    outputs = [service.info(key), service.list(), service.update({"key": key, "rpm_limit": 5}),
               service.set_blocked(key, True), service.set_blocked(key, False)]
    for output in outputs:
        dumped = json.dumps(output)
        assert key not in dumped and key[len("sk-"):][:16] not in dumped


# ---- info / update / delete / list / regenerate / block, by key and by hash ----------------------

@pytest.fixture(params=["key", "hash"])
def ref(request):
    """How a key is named in management calls: the key itself, or its hash (the `token`)."""
    return (lambda answer: answer["key"]) if request.param == "key" else (lambda answer: answer["token"])


def test_info_by_key_and_by_hash(service, ref):
    answer = service.generate({"models": ["gpt-4"], "duration": "2h"})
    info = service.info(ref(answer))
    assert info["token"] == hash_key(answer["key"])
    assert info["models"] == ["gpt-4"]


def test_update_changes_models_aliases_limits_duration_and_metadata(service, ref):
    answer = service.generate({"models": ["gpt-4"], "duration": "20m", "metadata": {"a": 1}, "key_alias": "k"})
    key = answer["key"]
    assert service.lookup(key).rpm_limit is None  # cached now: update must forget it
    before = datetime.now(timezone.utc)
    updated = service.update({"key": ref(answer), "models": ["gpt-4", "claude-2"],
                              "aliases": {"gpt-3.5-turbo": "gpt-4"}, "rpm_limit": 7, "tpm_limit": 700,
                              "max_parallel_requests": 3, "max_budget": 2.5, "duration": "7d",
                              "metadata": {"team": "core"}})
    info = service.info(key)
    for source in (updated, info):
        assert source["models"] == ["gpt-4", "claude-2"]
        assert source["aliases"] == {"gpt-3.5-turbo": "gpt-4"}
        assert (source["rpm_limit"], source["tpm_limit"], source["max_parallel_requests"]) == (7, 700, 3)
        assert source["max_budget"] == 2.5
        assert source["metadata"] == {"team": "core"}
        assert source["key_alias"] == "k"  # not sent: kept
    rules = service.lookup(key)  # same instance: the change is visible at once
    assert before + timedelta(days=7) <= rules.expires <= datetime.now(timezone.utc) + timedelta(days=7)
    assert rules.models == ("gpt-4", "claude-2") and rules.rpm_limit == 7 and rules.max_parallel_requests == 3
    assert rules.aliases == {"gpt-3.5-turbo": "gpt-4"}

    service.update({"key": ref(answer), "models": None, "duration": "never"})
    rules = service.lookup(key)
    assert rules.models is None and rules.expires is None
    assert rules.rpm_limit == 7  # fields not sent stay


def test_block_and_unblock(service, ref):
    answer = service.generate({})
    key = answer["key"]
    check_rules(service.lookup(key))
    assert service.set_blocked(ref(answer), True)["blocked"] is True
    assert service.info(key)["blocked"] is True
    with pytest.raises(errors.PermissionDeniedError) as refused:
        check_rules(service.lookup(key))
    assert refused.value.code == "key_blocked" and refused.value.status == 403
    assert service.set_blocked(ref(answer), False)["blocked"] is False
    check_rules(service.lookup(key))


def test_delete(service, ref):
    keep, gone = service.generate({}), service.generate({})
    assert service.lookup(gone["key"]) is not None
    assert service.delete([ref(gone)]) == [gone["token"]]
    assert service.lookup(gone["key"]) is None
    for name in (gone["key"], gone["token"]):
        with pytest.raises(errors.NotFoundError) as missing:
            service.info(name)
        assert missing.value.code == "key_not_found" and missing.value.status == 404
    assert [item["token"] for item in service.list()] == [keep["token"]]
    with pytest.raises(errors.NotFoundError):
        service.delete([ref(gone)])


def test_list_has_every_key_without_the_key(service):
    answers = [service.generate({"key_alias": f"k{i}"}) for i in range(3)]
    listed = service.list()
    assert [item["token"] for item in listed] == [a["token"] for a in answers]
    assert [item["key_alias"] for item in listed] == ["k0", "k1", "k2"]
    assert all("key" not in item for item in listed)


def test_regenerate_keeps_the_rules_and_retires_the_old_key(service, ref):
    answer = service.generate({"models": ["gpt-4"], "aliases": {"a": "gpt-4"}, "rpm_limit": 4,
                               "max_parallel_requests": 1, "duration": "2h", "metadata": {"m": 1}})
    old = answer["key"]
    assert service.lookup(old) is not None  # cached: regenerate must forget it
    fresh = service.regenerate(ref(answer))
    new = fresh["key"]
    assert new != old and new.startswith("sk-") and len(new) >= 46
    assert fresh["token"] == hash_key(new) and fresh["key_name"] == "sk-..." + new[-4:]
    assert service.lookup(old) is None
    rules = service.lookup(new)
    assert rules.models == ("gpt-4",) and rules.aliases == {"a": "gpt-4"}
    assert (rules.rpm_limit, rules.max_parallel_requests) == (4, 1)
    assert rules.expires == parse_time(answer["expires"]) and fresh["metadata"] == {"m": 1}
    with pytest.raises(errors.NotFoundError):
        service.info(answer["token"])
    assert [item["token"] for item in service.list()] == [fresh["token"]]


def test_unknown_or_missing_key_in_management_calls(service):
    unknown = "sk-" + "A" * 43
    for call in (lambda: service.info(unknown), lambda: service.info("0" * 64),
                 lambda: service.update({"key": unknown, "rpm_limit": 1}),
                 lambda: service.regenerate(unknown), lambda: service.set_blocked(unknown, True),
                 lambda: service.delete([unknown])):
        with pytest.raises(errors.NotFoundError):
            call()
    for call in (lambda: service.info(None), lambda: service.info(""), lambda: service.update({"rpm_limit": 1}),
                 lambda: service.regenerate(None), lambda: service.set_blocked(None, True)):
        with pytest.raises(errors.BadRequestError) as bad:
            call()
        assert bad.value.param == "key"
    for value in (None, [], "sk-abc", {"k": 1}):
        with pytest.raises(errors.BadRequestError) as bad:
            service.delete(value)
        assert bad.value.param == "keys"


# ---- rules the hot path checks ----------------------------------------------------------------

def test_spent_budget_expired_and_blocked_keys_are_refused(service):
    with pytest.raises(errors.BudgetExceededError) as spent:
        check_rules(service.lookup(service.generate({"max_budget": 0})["key"]))
    assert spent.value.status == 429
    rules = service.lookup(service.generate({"duration": "20m"})["key"])
    check_rules(rules)
    with pytest.raises(errors.AuthenticationError) as expired:
        check_rules(rules, now=datetime.now(timezone.utc) + timedelta(minutes=21))
    assert expired.value.code == "key_expired" and expired.value.status == 401
    check_rules(service.lookup(service.generate({"max_budget": 5})["key"]))


# ---- the lookup cache ------------------------------------------------------------------------

@pytest.fixture
def short_cache(monkeypatch):
    monkeypatch.setattr(keys, "CACHE_SECONDS", 1.0)
    monkeypatch.setattr(keys, "NEGATIVE_CACHE_SECONDS", 0.3)
    return 1.0


def wait_until(predicate, timeout):
    """Seconds until predicate() held (polling), or None after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.02)
    return None


def test_cached_lookups_do_not_touch_the_database(make_db, short_cache):
    worker = KeyService(make_db())
    key = KeyService(make_db()).generate({})["key"]
    statements = count_statements(worker.db)
    assert worker.lookup(key) is not None
    assert len(statements) == 1
    for _ in range(50):
        assert worker.lookup(key) is not None
    assert len(statements) == 1
    time.sleep(short_cache + 0.05)
    assert worker.lookup(key) is not None
    assert len(statements) == 2  # looked up again once the entry expired


@pytest.mark.parametrize("change", ["block", "delete"])
def test_another_worker_notices_a_block_or_delete_within_the_cache_window(make_db, short_cache, change):
    admin, other = KeyService(make_db()), KeyService(make_db())  # two workers, two engines
    key = admin.generate({})["key"]
    assert admin.lookup(key) is not None and other.lookup(key) is not None  # both cached
    changed_at = time.monotonic()
    if change == "block":
        admin.set_blocked(key, True)
        refused = lambda service: service.lookup(key).blocked  # noqa: E731
    else:
        admin.delete([key])
        refused = lambda service: service.lookup(key) is None  # noqa: E731
    assert refused(admin)  # the worker that made the change forgot the key at once
    assert not refused(other)  # the other still serves its cached copy...
    waited = wait_until(lambda: refused(other), short_cache + 1.0)
    assert waited is not None, "the other worker never noticed"
    assert time.monotonic() - changed_at <= short_cache + 0.5  # ...for at most CACHE_SECONDS
    for _ in range(5):
        assert refused(other)
    if change == "block":
        admin.set_blocked(key, False)
        assert not refused(admin)
        assert wait_until(lambda: not refused(other), short_cache + 1.0) is not None


def test_forget_is_immediate_in_the_same_instance(make_db, short_cache, monkeypatch):
    monkeypatch.setattr(keys, "CACHE_SECONDS", 60.0)
    admin, worker = KeyService(make_db()), KeyService(make_db())
    answer = admin.generate({"rpm_limit": 1})
    assert worker.lookup(answer["key"]).rpm_limit == 1
    admin.update({"key": answer["key"], "rpm_limit": 9})
    assert worker.lookup(answer["key"]).rpm_limit == 1  # cached for a minute
    worker.forget(answer["token"])
    assert worker.lookup(answer["key"]).rpm_limit == 9


def test_unknown_keys_are_cached_briefly(service, short_cache):
    unknown = "sk-" + "Z" * 43
    statements = count_statements(service.db)
    assert service.lookup(unknown) is None and service.lookup(unknown) is None
    assert len(statements) == 1
    time.sleep(keys.NEGATIVE_CACHE_SECONDS + 0.05)
    assert service.lookup(unknown) is None
    assert len(statements) == 2


# ---- malformed tokens never reach the database ---------------------------------------------------

@pytest.mark.parametrize("token", HOSTILE_TOKENS, ids=lambda t: repr(t)[:30])
def test_malformed_tokens_never_touch_the_database(service, token):
    assert not looks_like_key(token)
    statements = count_statements(service.db)
    assert service.lookup(token) is None
    assert statements == []


def test_a_well_formed_unknown_key_is_looked_up(service):
    """The counter above does see lookups: a well-formed key costs exactly one query."""
    statements = count_statements(service.db)
    assert service.lookup("sk-" + "q" * 43) is None
    assert len(statements) == 1
    assert "gateway_keys" in statements[0] and "sk-" not in statements[0]  # bound, not inlined


def test_malformed_tokens_do_not_even_open_the_key_store():
    def factory():
        raise AssertionError("the key store was opened for a malformed token")

    lazy = LazyKeys(factory)
    auth = Authenticator("sk-1234", lazy)
    for token in HOSTILE_TOKENS:
        assert lazy.lookup(token) is None
        if isinstance(token, str):
            with pytest.raises(errors.AuthenticationError):
                auth.authorize("chat.chat_completions", {"Authorization": f"Bearer {token}"})


# ---- invalid bodies ------------------------------------------------------------------------------

INVALID_BODIES = [
    ({"models": "gpt-4"}, "models"),
    ({"models": [1, 2]}, "models"),
    ({"max_budget": -1}, "max_budget"),
    ({"max_budget": "lots"}, "max_budget"),
    ({"duration": "5y"}, "duration"),
    ({"duration": "soon"}, "duration"),
    ({"duration": 30}, "duration"),
    ({"duration": "999999999d"}, "duration"),  # past datetime.max: a 400, not a 500
    ({"rpm_limit": "x"}, "rpm_limit"),
    ({"rpm_limit": -1}, "rpm_limit"),
    ({"tpm_limit": 1.5}, "tpm_limit"),
    ({"max_parallel_requests": "2"}, "max_parallel_requests"),
    ({"aliases": ["gpt-4"]}, "aliases"),
    ({"aliases": {"a": 1}}, "aliases"),
    ({"metadata": "m"}, "metadata"),
    ({"key_alias": "a" * 300}, "key_alias"),
    # issue #11 item 14: every number bounded (PostgreSQL's integer is 32 bits), no NUL in any
    # stored string (PostgreSQL text refuses it), no field longer than its column
    ({"rpm_limit": 2**31}, "rpm_limit"),
    ({"tpm_limit": 2**31}, "tpm_limit"),
    ({"max_parallel_requests": 2**63}, "max_parallel_requests"),
    ({"max_budget": float("inf")}, "max_budget"),
    ({"max_budget": float("nan")}, "max_budget"),
    ({"key_alias": "a\x00b"}, "key_alias"),
    ({"user_id": "u\x00"}, "user_id"),
    ({"team_id": "\x00"}, "team_id"),
    ({"models": ["gpt-4", "gpt\x00"]}, "models"),
    ({"aliases": {"a\x00": "gpt-4"}}, "aliases"),
    ({"aliases": {"a": "gpt-4\x00"}}, "aliases"),
    ({"metadata": {"user": "x\x00y"}}, "metadata"),
    ({"metadata": {"k\x00": 1}}, "metadata"),
    ({"config": {"a": ["\x00"]}}, "config"),
    ({"duration": "20m\x00"}, "duration"),
    ({"budget_duration": "30d\x00"}, "budget_duration"),
    ({"budget_duration": "999999999 seconds"}, "budget_duration"),  # longer than its column
    ({"budget_duration": "30" + " " * 40 + "d"}, "budget_duration"),
]


@pytest.mark.parametrize("body, field", INVALID_BODIES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID_BODIES)])
def test_invalid_generate_bodies_name_the_field(service, body, field):
    with pytest.raises(errors.BadRequestError) as bad:
        service.generate(body)
    assert bad.value.param in (field, f"{field}[0]")  # the field (an item of a list may be named)
    assert field in bad.value.message
    assert service.list() == []  # nothing stored


@pytest.mark.parametrize("body, field", INVALID_BODIES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(INVALID_BODIES)])
def test_invalid_update_bodies_name_the_field_and_change_nothing(service, body, field):
    answer = service.generate({"models": ["gpt-4"], "rpm_limit": 1, "duration": "20m"})
    before = service.info(answer["key"])
    with pytest.raises(errors.BadRequestError) as bad:
        service.update({"key": answer["key"], **body})
    assert bad.value.param in (field, f"{field}[0]")
    assert service.info(answer["key"]) == before


@pytest.mark.parametrize("body", [None, [], "models", 42])
def test_generate_body_must_be_an_object(service, body):
    with pytest.raises(errors.BadRequestError):
        service.generate(body)
