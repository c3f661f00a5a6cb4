"""Warm before serving (#17): migrations run once before any worker serves, and every worker opens
its database before it takes a connection, so no first call pays for it inside the event loop."""

import sys
import time
import uuid

import pytest
from sqlalchemy import text

from gateway.storage import HEAD_REVISION
from gateway.storage import VERSION_TABLE
from tests.integration.conftest import openai_config
from tests.pg import schema

MASTER = "sk-warm-master-0123456789"


def _connections(admin, app_name):
    with admin.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                                  {"a": app_name}).scalar()


def _schema_version(admin, name):
    with admin.connect() as connection:
        found = connection.execute(text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s "
                                        "AND table_name = :t"), {"s": name, "t": VERSION_TABLE}).scalar()
        if not found:
            return None
        return connection.execute(text(f'SELECT version_num FROM "{name}".{VERSION_TABLE}')).scalar()


def _await(check, timeout=10):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


@pytest.mark.parametrize("how", ["cli", "gunicorn_conf"])
def test_a_fresh_database_is_migrated_and_opened_by_every_worker_before_the_first_call(
        start_gateway, fake_openai, tmp_path, how):
    with schema() as (url, admin, name):
        app_name = f"gw-warm-{uuid.uuid4().hex[:12]}"
        db_url = f"{url}&application_name={app_name}"
        config = openai_config(fake_openai, master_key=MASTER)
        config["general_settings"]["database_url"] = db_url
        if how == "cli":
            gw = start_gateway(config, args=["--num_workers", "2"])
        else:
            import yaml
            path = tmp_path / "config.yaml"
            path.write_text(yaml.safe_dump(config))
            gw = start_gateway(command=[sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "conf/gunicorn.conf.py",
                                        "--bind", "127.0.0.1:{port}", "--workers", "2"],
                               env={"GATEWAY_CONFIG": str(path)})
        # Ready, and not one call made: the schema is at the head, and both workers hold a connection.
        assert _schema_version(admin, name) == HEAD_REVISION
        _await(lambda: _connections(admin, app_name) >= 2)
        _await(lambda: gw.log().count("warm in") >= 2)
        assert gw.log().count("(database") >= 2, gw.log()
