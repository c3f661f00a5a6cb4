"""The key change counter across instances (gateway/access/keychanges.py): a call that arrives while
another greenlet's check of the Redis count is in flight asks too, instead of going on with the count
from before (which served a blocked end user 0.75 s after it was unblocked on another instance); and
a Redis outage and restart (the count back to nothing) still counts as a change everywhere."""

import gevent
from gevent.event import Event

from gateway.access.keychanges import KeyChanges
from gateway.routing.state import LocalState


class SlowRemote:
    """A shared state whose GET of the count takes a while (a round trip under gevent)."""

    def __init__(self, fallback):
        self.fallback = fallback
        self.value = 1.0
        self.gets = 0
        self.release = Event()

    def get_many(self, names):
        self.gets += 1
        value = self.value
        self.release.wait(timeout=5)  # yields to the other greenlets while "on the wire"
        return [value]


def test_a_call_during_an_in_flight_check_does_not_use_the_count_from_before(tmp_path):
    remote = SlowRemote(LocalState(str(tmp_path / "state.sqlite")))
    changes = KeyChanges(remote, remote_seconds=0.5)
    remote.release.set()
    before = changes.count(now=0.0)  # first check: the count as it is
    remote.release.clear()
    remote.value = 2.0  # another instance announced a change
    first = gevent.spawn(changes.count, 1.0)  # due: checks, and waits for Redis
    gevent.sleep(0)
    second = gevent.spawn(changes.count, 1.01)  # arrives while the first check is in flight
    gevent.sleep(0)
    remote.release.set()
    gevent.joinall([first, second], timeout=5)
    assert first.value != before and second.value == first.value
    assert changes.count(1.02) == first.value and remote.gets == 3  # no further GET inside the window


class FlakyRemote:
    """A shared state whose Redis can go down and come back empty (a RedisState's `reachable`)."""

    def __init__(self, fallback):
        self.fallback = fallback
        self.value = None  # the Redis count; None: unset (a fresh or restarted Redis)
        self.reachable = True

    def get_many(self, names):
        return [self.value] if self.reachable else [5.0]  # down: the instance's own local count

    def add(self, name, delta, ttl):
        if self.reachable:
            self.value = (self.value or 0.0) + delta


def test_redis_back_empty_after_an_outage_counts_as_a_change(tmp_path):
    remote = FlakyRemote(LocalState(str(tmp_path / "state.sqlite")))
    changes = KeyChanges(remote, remote_seconds=1.0)
    before = changes.count(now=0.0)
    remote.reachable = False
    during = changes.count(now=1.0)
    assert changes.remote_down
    assert changes.count(now=2.0) == during  # down is down: no change per check
    remote.reachable = True  # restarted empty: the same None as before the outage
    after = changes.count(now=3.0)
    assert after != during and after != before and not changes.remote_down
    assert changes.count(now=4.0) == after


def test_a_change_announced_while_redis_was_down_is_counted_there_once_it_answers(tmp_path):
    remote = FlakyRemote(LocalState(str(tmp_path / "state.sqlite")))
    changes = KeyChanges(remote, remote_seconds=1.0)
    changes.count(now=0.0)
    remote.reachable = False
    changes.count(now=1.0)
    changes.announce()
    assert remote.value is None  # Redis could not count it
    remote.reachable = True
    changes.count(now=2.0)
    assert remote.value == 1.0  # counted there now: instances that never saw the outage hear of it
    changes.count(now=3.0)
    assert remote.value == 1.0  # once
