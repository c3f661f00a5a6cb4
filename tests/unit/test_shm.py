"""The shared-memory gauge table: atomic across processes, expiring, bounded."""

import multiprocessing
import time

import pytest

from gateway import shm
from gateway.shm import SharedTable


def _bump(path, n):
    table = SharedTable(path)
    for _ in range(n):
        table.add("inflight:x", 1, 600)


def test_adds_from_two_processes_are_all_counted(tmp_path):
    path = str(tmp_path / "t.kv")
    procs = [multiprocessing.Process(target=_bump, args=(path, 2000)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert SharedTable(path).get_many(["inflight:x"]) == [4000.0]


def test_values_expire_and_gauges_never_go_negative(tmp_path):
    table = SharedTable(str(tmp_path / "t.kv"))
    table.set("cool:a", 123.5, ttl=0.05)
    assert table.get_many(["cool:a", "missing"]) == [123.5, None]
    time.sleep(0.1)
    assert table.get_many(["cool:a"]) == [None]
    assert table.add("inflight:a", -1, 600) == 0.0
    assert table.add("inflight:a", 2, 600) == 2.0
    assert table.add("inflight:a", 1, 600) == 3.0


def test_expired_slots_are_reused_and_a_full_table_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(shm, "SLOTS", 4)
    monkeypatch.setattr(shm, "_SIZE", 4 * shm._SLOT.size)
    table = SharedTable(str(tmp_path / "small.kv"))
    for i in range(4):
        table.set(f"k{i}", i, ttl=0.05)
    with pytest.raises(RuntimeError, match="full"):
        table.set("k-new", 1, ttl=60)
    time.sleep(0.1)
    table.set("k-new", 7, ttl=60)  # an expired slot takes it
    assert table.get_many(["k-new"]) == [7.0]


def test_stale_state_files_of_dead_instances_are_removed(tmp_path):
    import os
    import subprocess

    from gateway.state import remove_stale_files
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = os.getpid()
    for pid in (dead.pid, alive):
        for suffix in (".sqlite", ".sqlite-wal", ".sqlite.kv"):
            (tmp_path / f"gateway-state-{pid}{suffix}").write_text("x")
    (tmp_path / "unrelated.txt").write_text("x")
    remove_stale_files(str(tmp_path))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([f"gateway-state-{alive}.sqlite", f"gateway-state-{alive}.sqlite-wal",
                           f"gateway-state-{alive}.sqlite.kv", "unrelated.txt"])
