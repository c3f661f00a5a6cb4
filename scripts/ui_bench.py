#!/usr/bin/env python3
"""Time the admin UI's Logs and Usage pages on a large spend ledger.

Fills gateway_spend with --rows rows (default 1,000,000) spread over --days days (200 keys in 20
teams, 50 users, 1,000 end users, 10 models, 2% errors) on SQLite and/or PostgreSQL, with the
daily roll-ups summed from them and written by the ledger's own upsert, starts a real gateway (gunicorn + gevent) on that
database, signs in to /ui as the admin, and requests each page --repeat times: p50 and p95 in ms.

  python scripts/ui_bench.py                       # both databases, 1,000,000 rows
  python scripts/ui_bench.py --db sqlite --rows 100000

PostgreSQL: --pg-url (default postgresql+psycopg2://postgres@127.0.0.1:5432/test); the rows go to a
schema of their own, dropped at the end.
"""

import argparse
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MASTER = "sk-ui-bench-master-0123456789"
BATCH = 20_000


def rows(count, days, seed=7):
    """`count` ledger rows, newest `days` days, as dicts for an executemany."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    teams = [f"team-{i}" for i in range(20)]
    keys = [(1000 + i, f"{i:064x}", f"key-{i}", f"user-{i % 50}", teams[i % 20]) for i in range(200)]
    models = [f"model-{i}" for i in range(10)]
    for i in range(count):
        key_id, key_hash, alias, user, team = keys[rng.randrange(200)]
        start = now - timedelta(seconds=rng.randrange(days * 86400))
        prompt, completion = rng.randrange(10, 2000), rng.randrange(1, 800)
        model = models[rng.randrange(10)]
        yield {"request_id": f"req_{i:032x}", "key_id": key_id, "key_hash": key_hash, "key_alias": alias,
               "user_id": user, "team_id": team, "organization_id": f"org-{int(team[5:]) % 3}",
               "end_user": f"customer-{rng.randrange(1000)}", "call_type": "acompletion", "model_group": model,
               "deployment_id": f"dep-{model}", "provider": "openai", "model": model, "prompt_tokens": prompt,
               "completion_tokens": completion, "total_tokens": prompt + completion,
               "cost": prompt * 1e-6 + completion * 3e-6, "estimated": False, "cache_hit": False, "stream": False,
               "status": "error" if rng.random() < 0.02 else "success", "start_time": start,
               "end_time": start + timedelta(milliseconds=rng.randrange(50, 5000))}


def fill(url, count, days):
    """The schema at its newest revision, then `count` rows and their daily roll-up."""
    from sqlalchemy import insert

    from gateway.spend import rollup
    from gateway.storage import Database
    from gateway.storage.models import SpendRow
    db = Database(url)
    db.migrate()
    started = time.monotonic()
    batch = []
    totals = {name: {} for name in rollup.ROLLUPS}  # the roll-ups' increments, summed over every batch
    with db.engine.begin() as connection:
        for row in rows(count, days):
            batch.append(row)
            if len(batch) == BATCH:
                connection.execute(insert(SpendRow.__table__), batch)
                for name, dimensions in rollup.ROLLUPS.items():
                    rollup.entries(batch, dimensions, totals[name])
                batch = []
        if batch:
            connection.execute(insert(SpendRow.__table__), batch)
            for name, dimensions in rollup.ROLLUPS.items():
                rollup.entries(batch, dimensions, totals[name])
        for name, found in totals.items():  # the ledger's own upsert, once per roll-up row
            rollup.put(connection, name, list(found.values()))
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            connection.commit()
    db.engine.dispose()
    return time.monotonic() - started


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gateway(folder, url):
    config = folder / "config.yaml"
    config.write_text("model_list:\n  - model_name: demo\n    litellm_params: {model: demo/echo}\n"
                      f"general_settings:\n  master_key: {MASTER}\n")
    port = free_port()
    exe = shutil.which("gateway") or sys.executable
    argv = ([exe] if exe != sys.executable else [exe, "-m", "gateway.cli"]) + [
        "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "2"]
    log = open(folder / "gateway.log", "wb")
    proc = subprocess.Popen(argv, env={**os.environ, "DATABASE_URL": url}, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/health/readiness", timeout=1).status_code == 200:
                return proc, base
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit("gateway did not start:\n" + (folder / "gateway.log").read_text())


def sign_in(base):
    session = requests.Session()
    page = session.get(base + "/ui/login")
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    answer = session.post(base + "/ui/login", data={"csrf": csrf, "key": MASTER}, allow_redirects=False)
    assert answer.status_code == 302, answer.text
    return session


def pages(days):
    today = datetime.now(timezone.utc).date()
    week, month = str(today - timedelta(days=6)), str(today - timedelta(days=days - 1))
    return [
        ("logs: newest 50", "/ui/logs"),
        ("logs: one key", "/ui/logs?api_key=" + f"{7:064x}"),
        ("logs: one team", "/ui/logs?team_id=team-3"),
        ("logs: one model", "/ui/logs?model=model-4"),
        ("logs: errors", "/ui/logs?status=error"),
        ("logs: one end user", "/ui/logs?end_user=customer-42"),
        ("logs: one day", f"/ui/logs?start_date={week}&end_date={week}"),
        ("logs: a row's details", "/ui/logs/req_" + f"{12345:032x}"),
        ("usage: 7 days by team", f"/ui/usage?start_date={week}&end_date={today}&by=team"),
        ("usage: 7 days by key", f"/ui/usage?start_date={week}&end_date={today}&by=key"),
        (f"usage: {days} days by user", f"/ui/usage?start_date={month}&end_date={today}&by=user"),
        (f"usage: {days} days by model", f"/ui/usage?start_date={month}&end_date={today}&by=model"),
        (f"usage: {days} days by end user", f"/ui/usage?start_date={month}&end_date={today}&by=end_user"),
        (f"usage: {days} days CSV by team", f"/ui/usage.csv?start_date={month}&end_date={today}&by=team"),
    ]


def measure(session, base, path, repeat):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = session.get(base + path)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    times.sort()
    return statistics.median(times), times[max(0, int(round(0.95 * len(times))) - 1)]


def run(kind, url, args, folder):
    print(f"[ui-bench] {kind}: filling {args.rows:,} rows over {args.days} days ...", file=sys.stderr, flush=True)
    seconds = fill(url, args.rows, args.days)
    print(f"[ui-bench] {kind}: filled in {seconds:.0f} s; starting the gateway", file=sys.stderr, flush=True)
    proc, base = start_gateway(folder, url)
    try:
        session = sign_in(base)
        results = []
        for name, path in pages(args.days):
            session.get(base + path)  # warm: the worker's first query plans, the page cache
            p50, p95 = measure(session, base, path, args.repeat)
            results.append((name, p50, p95))
            print(f"[ui-bench] {kind}: {name}: p50 {p50:.0f} ms, p95 {p95:.0f} ms", file=sys.stderr, flush=True)
        return results
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=10)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--pg-url", default=os.environ.get("GATEWAY_TEST_PG_URL",
                                                           "postgresql+psycopg2://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args(argv)
    table = {}
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        if args.db in ("sqlite", "both"):
            folder = Path(tmp) / "sqlite"
            folder.mkdir()
            table["SQLite"] = run("sqlite", f"sqlite:///{folder / 'gateway.sqlite'}", args, folder)
        if args.db in ("postgresql", "both"):
            from sqlalchemy import create_engine
            schema = f"ui_bench_{uuid.uuid4().hex[:12]}"  # generated here: hex only, safe in DDL
            admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            folder = Path(tmp) / "postgresql"
            folder.mkdir()
            try:
                sep = "&" if "?" in args.pg_url else "?"
                table["PostgreSQL"] = run("postgresql", f"{args.pg_url}{sep}options=-csearch_path%3D{schema}",
                                          args, folder)
            finally:
                with admin.connect() as connection:
                    connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                admin.dispose()
    stores = list(table)
    print(f"\n{args.rows:,} ledger rows over {args.days} days; {args.repeat} requests per page "
          "(signed in as the admin, 2 gevent workers)\n")
    print("| page | " + " | ".join(f"{s} p50 ms | {s} p95 ms" for s in stores) + " |")
    print("|---|" + "---:|---:|" * len(stores))
    for i, (name, _, _) in enumerate(next(iter(table.values()))):
        print(f"| {name} | " + " | ".join(f"{table[s][i][1]:.0f} | {table[s][i][2]:.0f}" for s in stores) + " |")


if __name__ == "__main__":
    main()
