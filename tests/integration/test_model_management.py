"""Models stored in the database, through real gunicorn + gevent gateways on PostgreSQL
(general_settings.store_model_in_db): a model added by /model/new with a canary provider key is served
(the fake upstream checks the key), and the canary appears in no answer, no log line and no column of
any table; a virtual key may not manage models; a deleted model is a 404. Two instances (two workers
each) on one database follow each other's changes within 5 s, with Redis and without it (polling)."""

import contextlib
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests
import yaml
from sqlalchemy import MetaData
from sqlalchemy import Text
from sqlalchemy import cast
from sqlalchemy import create_engine
from sqlalchemy import select

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port
from tests.integration.redis_server import RedisServer
from tests.pg import schema_url as pg_schema

pytestmark = pytest.mark.integration

MASTER = "sk-master-" + secrets.token_hex(8)
ADMIN = {"Authorization": f"Bearer {MASTER}"}
HELLO = [{"role": "user", "content": "hello"}]
WINDOW = 5.0  # the documented propagation window


def _start(stack, tmp_path, name, db_url, redis_url=None, salt="salt-" + "h14c"):
    """One gateway instance with two workers on the shared database (and Redis, if given)."""
    folder = tmp_path / name
    folder.mkdir()
    config = {"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
              "general_settings": {"master_key": MASTER, "database_url": db_url, "store_model_in_db": True}}
    if redis_url:
        config["router_settings"] = {"redis_url": redis_url}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    proc = GatewayProcess(["--config", str(folder / "config.yaml"), "--num_workers", "2"],
                          {"GATEWAY_SALT_KEY": salt}, folder / "gateway.log", free_port())
    stack.callback(proc.stop)
    return proc.wait_ready()


def _chat(gw, model):
    return requests.post(gw.url + "/chat/completions", headers=ADMIN, timeout=10,
                         json={"model": model, "messages": HELLO}).status_code


def _database_dump(db_url):
    """Every column of every table of the schema, as text."""
    engine = create_engine(db_url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        texts = []
        with engine.connect() as connection:
            for table in meta.sorted_tables:
                for row in connection.execute(select(*[cast(c, Text) for c in table.columns])):
                    texts.extend(str(v) for v in row)
        return "\n".join(texts)
    finally:
        engine.dispose()


def test_a_database_model_is_served_and_its_key_appears_nowhere(tmp_path):
    canary = "sk-canary-" + secrets.token_hex(16)
    with contextlib.ExitStack() as stack, FakeOpenAI(api_key=canary) as fake:
        db_url = stack.enter_context(pg_schema())
        gw = _start(stack, tmp_path, "a", db_url)
        answers = []
        added = requests.post(gw.url + "/model/new", headers=ADMIN, timeout=10, json={
            "model_name": "db-gpt", "litellm_params": {"model": "openai/gpt-3.5-turbo", "api_base": fake.url + "/v1",
                                                       "api_key": canary}})
        assert added.status_code == 200, added.text
        answers.append(added.text)
        model_id = added.json()["model_info"]["id"]
        client = openai.OpenAI(base_url=gw.url, api_key=MASTER, max_retries=0)
        reply = client.chat.completions.create(model="db-gpt", messages=HELLO)
        assert reply.choices[0].message.content and fake.requests  # the fake accepted the canary key
        for path in ("/models", "/v1/models", "/model/info", "/health/readiness"):
            answers.append(requests.get(gw.url + path, headers=ADMIN, timeout=10).text)

        key = requests.post(gw.url + "/key/generate", headers=ADMIN, timeout=10, json={}).json()["key"]
        other = {"Authorization": f"Bearer {key}"}
        for path, body in (("/model/new", {"model_name": "x", "litellm_params": {"model": "demo/echo"}}),
                           ("/model/delete", {"id": model_id})):
            refused = requests.post(gw.url + path, headers=other, timeout=10, json=body)
            assert refused.status_code == 403, refused.text
        answers.append(requests.post(gw.url + "/model/update", headers=ADMIN, timeout=10, json={
            "model_info": {"id": model_id}, "litellm_params": {"rpm": 100}}).text)
        stored = _database_dump(db_url)  # with the model in it
        deleted = requests.post(gw.url + "/model/delete", headers=ADMIN, timeout=10, json={"id": model_id})
        assert deleted.status_code == 200 and deleted.json() == {"message": f"Model: {model_id} deleted successfully"}
        answers.append(deleted.text)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="db-gpt", messages=HELLO)
        dump = stored + "\n" + _database_dump(db_url)
        gw.stop()
        log = gw.log()
    assert "db-gpt" in stored and "gateway-enc:v1:" in stored  # the row was there, its key sealed
    for where, text in [("answers", "\n".join(answers)), ("log", log), ("database", dump)]:
        for piece in {canary[i:i + 12] for i in range(len(canary) - 11)}:
            assert piece not in text, f"a piece of the canary key is in the {where}"


def _rounds_until(gw, model, status, deadline, rounds=3, calls=8):
    """Seconds until `rounds` back-to-back rounds of `calls` concurrent calls (new connections, so both
    workers get some) all answer `status`, measured from now to the start of the first of them."""
    started, good, first, answers = time.monotonic(), 0, None, []
    with ThreadPoolExecutor(calls) as pool:
        while time.monotonic() < deadline:
            began = time.monotonic()
            answers = list(pool.map(lambda _i: _chat(gw, model), range(calls)))
            if set(answers) == {status}:
                first = began if good == 0 else first
                good += 1
                if good == rounds:
                    return first - started
            else:
                good = 0
            time.sleep(0.05)
    raise AssertionError(f"`{model}` did not answer {status} on every call in time (last round: {answers})")


def _workers_serving(gw, count):
    """The worker pids whose log says they serve `count` database models."""
    return set(re.findall(rf"worker (\d+) serves {count} database model", gw.log()))


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "database-poll"])
def test_a_change_on_one_instance_reaches_every_worker_of_another_within_5s(tmp_path, with_redis):
    with contextlib.ExitStack() as stack:
        db_url = stack.enter_context(pg_schema())
        redis_url = stack.enter_context(RedisServer()).url if with_redis else None
        first = _start(stack, tmp_path, "a", db_url, redis_url)
        second = _start(stack, tmp_path, "b", db_url, redis_url)
        assert _chat(second, "db-demo") == 404
        added = requests.post(first.url + "/model/new", headers=ADMIN, timeout=10, json={
            "model_name": "db-demo", "litellm_params": {"model": "demo/echo"}, "model_info": {"id": "m1"}})
        assert added.status_code == 200, added.text
        try:
            took = _rounds_until(second, "db-demo", 200, time.monotonic() + 15)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ninstance B's log ends with:\n{second.log()[-6000:]}") from None
        assert took <= WINDOW, f"instance B served the new model after {took:.2f} s"
        assert len(_workers_serving(second, 1)) == 2, second.log()

        deleted = requests.post(first.url + "/model/delete", headers=ADMIN, timeout=10, json={"id": "m1"})
        assert deleted.status_code == 200, deleted.text
        took = _rounds_until(second, "db-demo", 404, time.monotonic() + 15)
        assert took <= WINDOW, f"instance B still served the deleted model after {took:.2f} s"
