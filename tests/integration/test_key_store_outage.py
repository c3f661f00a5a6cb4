"""Key management while the database is down: a 503 the client can retry, never a 500 (issue #11).

A private PostgreSQL server (tests/integration/pg_server.py) is stopped under a running gateway
whose key store is already open; every management route then answers 503 `key_store_unavailable`,
and works again once the server is back."""

import pytest
import requests

from tests.integration.test_spend_durability import MASTER
from tests.integration.test_spend_durability import gateway_config
from tests.integration.test_spend_durability import private_pg  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration


def test_key_management_answers_503_while_the_database_is_down(private_pg, start_gateway,  # noqa: F811
                                                               fake_openai, tmp_path):
    gw = start_gateway(gateway_config(fake_openai, private_pg.url, tmp_path / "spool"), args=["--num_workers", "1"])
    master = {"Authorization": f"Bearer {MASTER}"}
    made = requests.post(gw.url + "/key/generate", headers=master, json={}, timeout=30)
    assert made.status_code == 200, made.text
    token = made.json()["token"]
    private_pg.stop(mode="fast")
    calls = [("POST", "/key/generate", {"json": {}}),
             ("POST", "/key/update", {"json": {"key": token, "key_alias": "x"}}),
             ("POST", "/key/block", {"json": {"key": token}}),
             ("POST", "/key/regenerate", {"json": {"key": token}}),
             ("GET", "/key/list", {}),
             ("GET", "/key/info", {"params": {"key": token}}),
             ("POST", "/key/delete", {"json": {"keys": [token]}})]
    for method, path, kwargs in calls:
        resp = requests.request(method, gw.url + path, headers=master, timeout=30, **kwargs)
        assert resp.status_code == 503, (path, resp.status_code, resp.text)
        assert resp.json()["error"]["code"] == "key_store_unavailable", (path, resp.text)
        assert "Traceback" not in resp.text
    private_pg.start()
    back = requests.get(gw.url + "/key/info", headers=master, params={"key": token}, timeout=30)
    assert back.status_code == 200, back.text
