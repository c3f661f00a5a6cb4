"""The shared-memory gauge table: atomic across processes, expiring, bounded."""

import multiprocessing
import time

import pytest

from gateway.infra import shm
from gateway.infra.shm import SharedTable


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

    from gateway.routing.state import remove_stale_files
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


# ---- files on /dev/shm are private (#11 item 18) ------------------------------------------------

def _use_every_file(path):
    """Open the router state (SQLite, its WAL and shared-memory files, the gauge table) and the
    metrics table at `path`, as a worker does on its first calls."""
    from gateway.telemetry.metrics import MetricStore
    from gateway.routing.state import LocalState
    state = LocalState(str(path))
    state.admit("rpm:x", 10)
    state.add("inflight:x", 1)
    MetricStore(str(path) + ".metrics").add([(("gateway_requests_total", ("m",)), 1, 0, 1.0)])
    return state


def test_every_state_file_is_private_from_its_creation(tmp_path):
    import os
    import stat
    old = os.umask(0)  # what a file gets when created open to all and tightened later: 0666 / 0644
    try:
        _use_every_file(tmp_path / "gateway-state-1.sqlite")
    finally:
        os.umask(old)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert {"gateway-state-1.sqlite", "gateway-state-1.sqlite-wal", "gateway-state-1.sqlite-shm",
            "gateway-state-1.sqlite.kv", "gateway-state-1.sqlite.metrics"} <= set(names)
    modes = {name: stat.S_IMODE(os.lstat(tmp_path / name).st_mode) for name in names}
    assert modes == {name: 0o600 for name in names}


def test_the_default_files_live_in_a_directory_only_this_user_can_enter(monkeypatch):
    import os
    import stat

    from gateway.routing.state import default_local_path
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    directory = os.path.dirname(default_local_path())
    info = os.lstat(directory)
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700
    assert os.path.basename(directory) == f"gateway-{os.geteuid()}"
    assert os.path.dirname(directory) in ("/dev/shm", __import__("tempfile").gettempdir())


@pytest.mark.parametrize("planted", ["gateway-state-1.sqlite", "gateway-state-1.sqlite.kv",
                                     "gateway-state-1.sqlite.metrics"])
@pytest.mark.parametrize("kind", ["symlink", "hard link", "dangling symlink"])
def test_a_planted_link_is_never_followed(tmp_path, planted, kind):
    import os
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / planted
    if kind == "symlink":
        target.symlink_to(victim)
    elif kind == "hard link":
        os.link(victim, target)
    else:
        target.symlink_to(tmp_path / "created-through-the-link")
    with pytest.raises(PermissionError, match="refus"):
        _use_every_file(tmp_path / "gateway-state-1.sqlite")
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "created-through-the-link").exists()


def test_a_file_or_directory_of_another_user_is_refused(tmp_path):
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    planted = tmp_path / "gateway-state-1.sqlite.kv"
    planted.write_bytes(b"")
    os.chown(planted, 65534, 65534)
    with pytest.raises(PermissionError, match="refus"):
        _use_every_file(tmp_path / "gateway-state-1.sqlite")
    theirs = tmp_path / "base"
    (theirs / f"gateway-{os.geteuid()}").mkdir(parents=True)
    os.chown(theirs / f"gateway-{os.geteuid()}", 65534, 65534)
    with pytest.raises(PermissionError, match="refus"):
        shm.private_dir(str(theirs))


def test_the_private_directory_is_made_tight_and_a_planted_symlink_refused(tmp_path):
    import os
    import stat
    made = shm.private_dir(str(tmp_path))
    assert stat.S_IMODE(os.lstat(made).st_mode) == 0o700 and shm.private_dir(str(tmp_path)) == made
    os.chmod(made, 0o777)  # ours but loose (made by hand): tightened
    assert shm.private_dir(str(tmp_path)) == made and stat.S_IMODE(os.lstat(made).st_mode) == 0o700
    other = tmp_path / "other"
    (other / "elsewhere").mkdir(parents=True)
    (other / f"gateway-{os.geteuid()}").symlink_to(other / "elsewhere")
    with pytest.raises(PermissionError, match="refus"):
        shm.private_dir(str(other))


def test_an_own_file_left_open_to_others_is_tightened(tmp_path):
    import os
    import stat
    path = tmp_path / "gateway-state-1.sqlite.kv"
    path.write_bytes(b"")
    os.chmod(path, 0o644)  # as versions before this one left it
    _use_every_file(tmp_path / "gateway-state-1.sqlite")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600


# ---- the one shared-memory type (#12) ----------------------------------------------------------

def _count_in_child(path, n):
    import struct
    shared = shm.shared_file(path, 8)
    for _ in range(n):
        with shared as table:
            struct.pack_into("<q", table, 0, struct.unpack_from("<q", table)[0] + 1)


def test_one_shared_file_per_path_and_process_and_a_forked_child_maps_its_own(tmp_path):
    import os
    import struct
    path = str(tmp_path / "counter")
    parent = shm.shared_file(path, 8)
    assert shm.shared_file(path, 8) is parent and parent.pid == os.getpid()
    procs = [multiprocessing.get_context("fork").Process(target=_count_in_child, args=(path, 500))
             for _ in range(2)]
    for p in procs:
        p.start()
    _count_in_child(path, 500)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert shm.shared_file(path, 8) is parent  # the parent's mapping and lock are untouched
    with parent as table:
        assert struct.unpack_from("<q", table)[0] == 1500


def test_the_gauge_table_the_metrics_and_the_key_changes_all_use_it(tmp_path):
    from gateway.access.keychanges import KeyChanges
    from gateway.routing.state import LocalState
    from gateway.telemetry.metrics import MetricStore
    state = LocalState(str(tmp_path / "gateway-state-1.sqlite"))
    state.add("inflight:x", 1)
    MetricStore(state.path + ".metrics").add([(("gateway_requests_total", ("m",)), 1, 0, 1.0)])
    changes = KeyChanges(state, 60)
    changes.announce()
    assert changes.count(0.0) == 1
    for suffix in (".kv", ".metrics", ".keys"):
        assert isinstance(shm._FILES.get(state.path + suffix), shm.SharedFile), suffix
