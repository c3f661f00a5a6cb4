#!/usr/bin/env python3
"""Measure what one gateway call costs: worker CPU, PostgreSQL commits and rows, Redis commands.

Starts one real gateway (gunicorn + gevent, 2 workers) on a PostgreSQL database of its own (CREATE
DATABASE on --pg-url's server, dropped at the end: its pg_stat_database counters are this gateway's
alone) and a private redis-server (router_settings.redis_url and the response cache), in front of
the static nginx upstream of scripts/bench. Per row it makes --warmup calls, then --calls calls at
--concurrency, and reads the deltas: worker CPU (/proc/<pid>/stat, user + system), xact_commit of
the database, n_tup_ins/upd/del per table, Redis INFO commandstats, and Redis round trips (a relay
in front of Redis counts each time a client speaks after it was answered: a pipeline is one trip).
The response cache is on (Redis); every row but the cache row sends `caching: false`. Prints
markdown tables and a projection for --project requests per second.

  python scripts/scaling.py
  python scripts/scaling.py --calls 500 --settle 11
"""

import argparse
import json
import math
import os
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import redis
import requests
from sqlalchemy import create_engine
from sqlalchemy import text
from sqlalchemy.engine import make_url

import bench  # scripts/bench.py: the nginx upstream, Server (process group, worker CPU), configs

sys.path.insert(0, bench.ROOT)
from tests.integration.redis_server import RedisServer  # noqa: E402

MASTER = bench.MASTER_KEY
TEAM = [("/team/new", {"team_id": "scale-team", "max_budget": 1e9}),
        ("/user/new", {"user_id": "scale-user", "teams": ["scale-team"], "max_budget": 1e9,
                       "auto_create_key": False})]
# name, the key's rules (None: the master key), make the team and user first, cached, streamed
ROWS = [("master key", None, False, False, False),
        ("virtual key", {}, False, False, False),
        ("key with rpm_limit + tpm_limit", {"rpm_limit": 10**7, "tpm_limit": 10**9}, False, False, False),
        ("key with max_budget", {"max_budget": 1e9}, False, False, False),
        ("key/user/team budgets", {"max_budget": 1e9, "team_id": "scale-team", "user_id": "scale-user"},
         True, False, False),
        ("cache hit (Redis), virtual key", {}, False, True, False),
        ("stream, key with max_budget", {"max_budget": 1e9}, False, False, True)]
REALISTIC = "key with max_budget"
EXTRA_CONF = """\
  database_url: {db}
  spend_spool_dir: {spool}
router_settings:
  redis_url: {redis}
litellm_settings:
  cache: true
  cache_params: {{type: redis, url: "{redis}", ttl: 3600}}
"""


class TripCounter:
    """A TCP relay to Redis counting round trips: a client's send after an answer (or its first) is one."""

    def __init__(self, port):
        self.port, self.trips, self.lock = port, 0, threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "redis://127.0.0.1:%d/0" % self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.sock.accept()
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client):
        upstream, answered = socket.create_connection(("127.0.0.1", self.port)), True
        with client, upstream:
            while True:
                for sock in select.select([client, upstream], [], [])[0]:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if answered:
                            with self.lock:
                                self.trips += 1
                        answered = False
                        upstream.sendall(data)
                    else:
                        answered = True
                        client.sendall(data)


class Probe:
    """Snapshots of the private database's and the private Redis's counters."""

    def __init__(self, admin, private, dbname, redis_server):
        self.admin, self.private, self.dbname = admin, private, dbname
        self.redis = redis.Redis(port=redis_server.port)
        self.redis_pid = redis_server.proc.pid
        self.tables()  # the engine's first connect runs the dialect's set-up queries: not in a window

    def commits(self):
        with self.admin.connect() as c:  # on --pg-url's database, so not counted in the private one
            return c.execute(text("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = :d"),
                             {"d": self.dbname}).one()

    def tables(self):
        """Rows inserted/updated/deleted per table of ours, and autovacuum/autoanalyze runs on any table
        (their transactions count in xact_commit too); one commit of our own in the private database."""
        with self.private.connect() as c:
            found = c.execute(text("SELECT schemaname = 'public', relname, n_tup_ins, n_tup_upd, n_tup_del, "
                                   "autovacuum_count + autoanalyze_count FROM pg_stat_all_tables")).all()
        return {r[1]: r[2:5] for r in found if r[0]}, sum(r[5] for r in found)

    def redis_cpu(self):
        """CPU seconds (user + system) redis-server has used: what a single Redis spends per call."""
        with open("/proc/%d/stat" % self.redis_pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def commandstats(self):
        return {k[8:]: v["calls"] for k, v in self.redis.info("commandstats").items()}


def minus(after, before):
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def call(session, base, key, body, stream):
    resp = session.post(base + "/v1/chat/completions", data=body, timeout=30, stream=stream,
                        headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    with resp:
        text_ = resp.text
        ok = resp.status_code == 200 and (text_.rstrip().endswith("data: [DONE]") if stream else "choices" in text_)
    return None if ok else "%d %s" % (resp.status_code, text_[:200])


def load(base, key, body, stream, calls, concurrency):
    """`calls` calls from `concurrency` threads; (seconds, errors)."""
    local = threading.local()

    def one(_):
        if not hasattr(local, "s"):
            local.s = requests.Session()
            local.s.trust_env = False
        return call(local.s, base, key, body, stream)

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        errors = [e for e in pool.map(one, range(calls)) if e]
    return time.monotonic() - started, errors


def wrk_load(args, base, key, body):
    """--wrk SECONDS of wrk at --concurrency connections; (seconds, calls, errors)."""
    lua = os.path.join(tempfile.gettempdir(), "scaling-%s.lua" % uuid.uuid4().hex)
    with open(lua, "w") as f:
        f.write(bench.WRK_LUA.format(body=bench.lua_string(body), key=key))
    try:
        res = bench.run_wrk(shutil.which("wrk"), base + "/v1/chat/completions", lua, args.concurrency, args.wrk, 5)
    finally:
        os.remove(lua)
    return args.wrk, res["requests"] or 0, res["errors"]


def make_key(base, rules, team):
    http = requests.Session()
    for path, payload in (TEAM if team else []):
        resp = http.post(base + path, json=payload, headers={"Authorization": "Bearer " + MASTER}, timeout=10)
        assert resp.status_code == 200, (path, resp.text)
    resp = http.post(base + "/key/generate", json=dict(rules, duration="never"), timeout=10,
                     headers={"Authorization": "Bearer " + MASTER})
    assert resp.status_code == 200, resp.text
    return resp.json()["key"]


def measure(args, probe, trips, gw, base, row, key):
    name, _, _, cached, stream = row
    body = {"model": "bench-stream" if stream else "bench", "messages": [{"role": "user", "content": "Say hello"}]}
    body.update({} if cached else {"caching": False})
    if stream:
        body["stream"] = True
    body = json.dumps(body)
    _, errors = load(base, key, body, stream, args.warmup, args.concurrency)
    assert not errors, errors[:3]
    time.sleep(args.settle)  # PostgreSQL publishes an idle backend's counters within 10 s
    c0, t0, r0, trip0, cpu0 = probe.commits(), probe.tables(), probe.commandstats(), trips.trips, gw.cpu_seconds()
    redis_cpu0 = probe.redis_cpu()
    if args.wrk:
        seconds, n, errors = wrk_load(args, base, key, body)
    else:
        seconds, errors = load(base, key, body, stream, args.calls, args.concurrency)
        n = args.calls
    cpu, r1, trip1 = gw.cpu_seconds() - cpu0, probe.commandstats(), trips.trips
    redis_cpu = probe.redis_cpu() - redis_cpu0
    time.sleep(args.settle)
    c1, t1 = probe.commits(), probe.tables()
    (t0, vacuums0), (t1, vacuums1) = t0, t1
    rows = {t: [(a - b) / n for a, b in zip(t1[t], t0.get(t, (0, 0, 0)))] for t in t1}
    rows = {t: v for t, v in rows.items() if any(v)}
    redis = {k: v / n for k, v in minus(r1, r0).items() if k != "info"}
    commits = c1[0] - c0[0] - 1  # one: our own pg_stat_user_tables read in between
    result = {"row": name, "rps": n / seconds, "errors": len(errors), "cpu_ms": cpu * 1000 / n,
              "per_core_s": n / cpu if cpu else float("nan"), "commits": commits / n, "commits_s": commits / seconds,
              "rows": sum(sum(v) for v in rows.values()), "tables": rows, "vacuums": vacuums1 - vacuums0,
              "redis": sum(redis.values()), "commands": redis, "trips": (trip1 - trip0) / n,
              "redis_us": redis_cpu * 1e6 / n}
    bench.log("%s: %.0f calls/s, %.2f CPU ms/call, %.2f commits/call, %.2f rows/call, %.2f Redis cmds/call"
              % (name, result["rps"], result["cpu_ms"], result["commits"], result["rows"], result["redis"]))
    if errors:
        bench.log("  %d errors, first: %s" % (len(errors), errors[0]))
    return result


def report(args, results):
    what = ("wrk for %g s" % args.wrk) if args.wrk else ("%d calls" % args.calls)
    print("\n%s per row after %d warm-up calls, %d concurrent clients (%s), one gateway of 2 gevent "
          "workers, own PostgreSQL database, private Redis; %s\n"
          % (what, args.warmup, args.concurrency, "wrk" if args.wrk else "requests", bench.machine_info()["date"]))
    print("| row | calls/s | worker CPU ms/call | calls per core-second | PG commits/call | PG commits/s "
          "| PG rows written/call | Redis commands/call | Redis round trips/call | Redis CPU us/call | autovacuum runs "
          "| errors |")
    print("|---|" + "---:|" * 11)
    for r in results:
        print("| %s | %.0f | %.2f | %.0f | %.2f | %.0f | %.2f | %.2f | %.2f | %.0f | %d | %d |" % (
            r["row"], r["rps"], r["cpu_ms"], r["per_core_s"], r["commits"], r["commits_s"], r["rows"], r["redis"],
            r["trips"], r["redis_us"], r["vacuums"], r["errors"]))
    print("\n| row | PG rows per call (table: inserted/updated/deleted) | Redis commands per call |")
    print("|---|---|---|")
    for r in results:
        tables = ", ".join("%s %s" % (t.replace("gateway_", ""), "/".join("%.2g" % x for x in v))
                           for t, v in sorted(r["tables"].items()))
        cmds = ", ".join("%s %.2g" % kv for kv in sorted(r["commands"].items(), key=lambda kv: -kv[1]))
        print("| %s | %s | %s |" % (r["row"], tables or "-", cmds or "-"))
    print("\nIdle gateway over %g s (the noise floor of each row's window): %d PostgreSQL commits, %d Redis "
          "commands, %d Redis round trips, %.0f ms of Redis CPU" % ((args.settle,) + args.idle))
    real = next(r for r in results if r["row"] == REALISTIC)
    print("\nProjection from the '%s' row (a projection, not a measurement): cores = R / %.0f calls per "
          "core-second; instances = cores / 2 workers; commits/s = R x %.2f; rows/s = R x %.2f; Redis "
          "commands/s = R x %.2f, round trips/s = R x %.2f; Redis CPU = R x %.0f us\n" % (
              REALISTIC, real["per_core_s"], real["commits"], real["rows"], real["redis"], real["trips"],
              real["redis_us"]))
    print("| requests/s | worker cores | instances (2 workers) | PG commits/s | PG rows/s | Redis commands/s "
          "| Redis round trips/s | Redis CPU (share of its one thread) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rate in args.project:
        cores = rate / real["per_core_s"]
        print("| {:,} | {:,.0f} | {:,} | {:,.0f} | {:,.0f} | {:,.0f} | {:,.0f} | {:.2f} |".format(
            rate, cores, math.ceil(cores / 2), rate * real["commits"], rate * real["rows"], rate * real["redis"],
            rate * real["trips"], rate * real["redis_us"] / 1e6))


def run(args, servers, dbname, db_url, admin):
    with RedisServer() as redis_server:
        trips = TripCounter(redis_server.port)
        conf = os.path.join(servers.tmp, "config.yaml")
        with open(conf, "w") as f:
            f.write(bench.GATEWAY_CONF.format(upstream=servers.upstream, upstream_key=bench.UPSTREAM_KEY,
                                              master_key=MASTER)
                    + EXTRA_CONF.format(db=db_url, spool=os.path.join(servers.tmp, "spool"), redis=trips.url))
        port = bench.free_port()
        exe = shutil.which("gateway")
        argv = ([exe] if exe else [sys.executable, "-m", "gateway.cli"]) + [
            "--config", conf, "--host", "127.0.0.1", "--port", str(port), "--num_workers", "2"]
        gw = servers.start("gateway", argv, cwd=bench.ROOT)
        base = "http://127.0.0.1:%d" % port
        gw.wait_ready(lambda: requests.get(base + "/health/readiness", timeout=2).status_code == 200, 60)
        bench.log("gateway ready, workers %s" % gw.worker_pids())
        keys = [MASTER if row[1] is None else make_key(base, row[1], row[2]) for row in ROWS]
        private = create_engine(db_url, isolation_level="AUTOCOMMIT")
        probe = Probe(admin, private, dbname, redis_server)
        try:
            time.sleep(args.settle)  # the keys' set-up published; then the gateway idle for --settle s
            c0, trips0, r0, _ = probe.commits()[0], trips.trips, probe.commandstats(), probe.tables()
            cpu0 = probe.redis_cpu()
            time.sleep(args.settle)
            args.idle = (probe.commits()[0] - c0 - 1, sum(v for k, v in minus(probe.commandstats(), r0).items()
                                                          if k != "info"), trips.trips - trips0,
                         (probe.redis_cpu() - cpu0) * 1000)
            return [measure(args, probe, trips, gw, base, row, key) for row, key in zip(ROWS, keys)]
        finally:
            private.dispose()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per row (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured calls per row first (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    parser.add_argument("--wrk", type=float, metavar="SECONDS",
                        help="load each row with wrk for SECONDS instead of --calls from Python threads "
                             "(wrk checks the status only; `scripts/bench` installs wrk)")
    parser.add_argument("--settle", type=float, default=11.0,
                        help="seconds to wait before reading PostgreSQL's counters: an idle backend publishes "
                             "its statistics within 10 s (default 11)")
    parser.add_argument("--project", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10000, 50000],
                        help="requests/s to project to (default 1000,10000,50000)")
    parser.add_argument("--pg-url", default=os.environ.get("GATEWAY_TEST_PG_URL",
                                                           "postgresql+psycopg2://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args(argv)
    dbname = "gw_scaling_%s" % uuid.uuid4().hex[:12]  # generated here: hex only, safe in DDL
    db_url = make_url(args.pg_url).set(database=dbname).render_as_string(hide_password=False)
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql('CREATE DATABASE "%s"' % dbname)
    tmp = tempfile.mkdtemp(prefix="gateway-scaling-")
    servers = bench.Bench(argparse.Namespace(ready_timeout=60), tmp)  # its nginx upstream, its Server
    try:
        servers.start_nginx()
        results = run(args, servers, dbname, db_url, admin)
    finally:
        servers.stop_all()
        with admin.connect() as c:
            c.exec_driver_sql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % dbname)
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, results)
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
