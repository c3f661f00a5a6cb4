"""A cluster on loopback (#17): N gateway instances (2 gevent workers each) behind nginx, all on the
real PostgreSQL (a fresh schema) and one private Redis, in front of the fake OpenAI upstream.

One cluster for the tests of this folder, shared by all of them; a test that kills or restarts an instance
leaves the cluster whole again. Instances on one host share the spend spool directory, so a live
instance replays the journal of a dead one (README, Spend and budgets)."""

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml
from sqlalchemy import text

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port
from tests.integration.conftest import openai_config
from tests.integration.redis_server import RedisServer
from tests.debian import ensure
from tests.pg import schema

INSTANCES = int(os.environ.get("GATEWAY_CLUSTER_INSTANCES", "3"))
MASTER = "sk-cluster-master-0123456789"

NGINX_CONF = """
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream gateways {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 50m;
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 120s;
      # An instance that refuses connections (killed, restarting) is skipped for the call: nothing
      # was sent to it. A call already sent is never sent twice (non-idempotent POSTs).
      proxy_next_upstream error timeout;
    }}
  }}
}}
"""


NGINX = "/usr/sbin/nginx"


class Nginx:
    """nginx in front of the instances (a private config, pid and temp dirs; reloaded to drain one)."""

    def __init__(self, folder, ports):
        ensure(("nginx",), (NGINX,))
        self.exe = NGINX
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ports = list(ports)
        self.down = set()
        self.conf = folder / "nginx.conf"
        self._write()
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _await(lambda: _answers(self.url + "/health/liveliness"), 10, "nginx did not start")

    def _write(self):
        # max_fails=0: no "temporarily disabled" bookkeeping; a refused connect just moves the call on.
        servers = "\n".join(f"    server 127.0.0.1:{port} max_fails=0{' down' if i in self.down else ''};"
                            for i, port in enumerate(self.ports))
        # As root, nginx's workers would run as `nobody`, who cannot enter pytest's private temp dirs.
        user = "user root;" if os.geteuid() == 0 else ""
        self.conf.write_text(NGINX_CONF.format(user=user, tmp=self.folder, port=self.port, servers=servers))

    def set_down(self, index, down):
        """Take an instance out of rotation (or back), gracefully: nginx's reload. Only when that
        changes something: a reload closes the idle keep-alive connections of the old worker, and
        a client that just reused one sees "Server disconnected without sending a response"."""
        wanted = self.down | {index} if down else self.down - {index}
        if wanted != self.down:
            self.down = wanted
            self._reload()

    def restore(self):
        """Every instance back in rotation."""
        if self.down:
            self.down = set()
            self._reload()

    def _reload(self):
        self._write()
        subprocess.run([self.exe, "-c", str(self.conf), "-s", "reload"], check=True, capture_output=True)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _answers(url):
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _await(check, timeout, message="condition not met"):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{message} within {timeout}s"
        time.sleep(0.02)
    return value


class Cluster:
    """The instances, nginx in front of them, and the database they share."""

    def __init__(self, folder, fake, redis, db_url, admin, schema_name, count=INSTANCES):
        self.folder = folder
        self.fake = fake
        self.redis = redis
        self.admin = admin
        self.schema = schema_name
        self.spool = folder / "spool"
        config = openai_config(fake, master_key=MASTER, extra_models=[
            {"model_name": "limited", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": fake.url + "/v1",
                                                         "api_key": fake.api_key, "rpm": 40}},
        ])
        config["general_settings"].update({"database_url": db_url, "spend_spool_dir": str(self.spool),
                                           "store_model_in_db": True})
        config["router_settings"] = {"redis_url": redis.url}
        self.config_path = folder / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.ports = [free_port() for _ in range(count)]
        self.instances = [None] * count
        self._starts = [0] * count
        for index in range(count):
            self.start(index, wait=False)
        for gw in self.instances:
            gw.wait_ready(60)
        self.nginx = Nginx(folder, self.ports)
        self.url = self.nginx.url

    def start(self, index, wait=True):
        """Start instance `index` on its port (again, after a kill or a stop)."""
        self._starts[index] += 1
        log = self.folder / f"gw{index}-{self._starts[index]}.log"
        gw = GatewayProcess(["--config", str(self.config_path), "--num_workers", "2"], {}, log, self.ports[index])
        self.instances[index] = gw
        return gw.wait_ready(60) if wait else gw

    def kill(self, index):
        """SIGKILL the instance's whole process group (master and workers): a crash."""
        gw = self.instances[index]
        os.killpg(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait(10)
        gw._log.close()
        _await(lambda: not _group_alive(gw.proc.pid), 10, "the killed instance's workers did not exit")

    def terminate(self, index, timeout=60):
        """SIGTERM to the master: gunicorn's graceful stop (calls in flight finish); waits for it."""
        gw = self.instances[index]
        gw.proc.send_signal(signal.SIGTERM)
        gw.proc.wait(timeout)
        gw._log.close()

    def admin_call(self, method, path, base=None, **kwargs):
        resp = requests.request(method, (base or self.url) + path, timeout=30,
                                headers={"Authorization": f"Bearer {MASTER}"}, **kwargs)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def new_key(self, **fields):
        return self.admin_call("POST", "/key/generate", json=fields)["key"]

    def sql(self, statement, **params):
        with self.admin.connect() as connection:
            connection.execute(text(f'SET search_path TO "{self.schema}"'))
            return connection.execute(text(statement), params).fetchall()

    def rows_by_request(self, request_ids):
        """request id -> how many ledger rows it has, for the ids given."""
        found = {}
        ids = list(request_ids)
        for start in range(0, len(ids), 500):
            for request_id, count in self.sql("SELECT request_id, count(*) FROM gateway_spend WHERE request_id = "
                                              "ANY(:ids) GROUP BY request_id", ids=ids[start:start + 500]):
                found[request_id] = count
        return found

    def healthy(self):
        return all(gw.proc.poll() is None and _answers(gw.url + "/health/readiness") for gw in self.instances)

    def stop(self):
        self.nginx.stop()
        for gw in self.instances:
            if gw is not None and not gw._log.closed:
                gw.stop()


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """Started once for the tests here, stopped when they are done (its workers hold database
    connections that the rest of the suite's gateways need)."""
    folder = tmp_path_factory.mktemp("cluster")
    with FakeOpenAI() as fake, RedisServer() as redis, schema() as (url, admin, name):
        fake.slow_seconds = 1.0
        built = Cluster(folder, fake, redis, url, admin, name)
        try:
            yield built
        finally:
            built.stop()


@pytest.fixture
def whole(cluster):
    """The cluster, checked whole (every instance ready) before and after the test."""
    assert cluster.healthy()
    yield cluster
    for index, gw in enumerate(cluster.instances):
        if gw.proc.poll() is not None:
            cluster.start(index)
    cluster.nginx.restore()


def run_many(fn, items, concurrency=64):
    """fn(item) for every item from `concurrency` threads; the results in order."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(fn, items))
