"""#17 proof 3: one instance SIGKILLed in the middle of 2,000 calls (streams among them). Every call
a client saw succeed has exactly one ledger row within seconds with no further traffic (the dead
instance's journal is replayed by a live instance: they share the spool directory, as instances on
one host do); the other instances' clients see no errors beyond the calls in flight on the dead one."""

import threading
import time

import openai

from tests.cluster.conftest import run_many

HELLO = [{"role": "user", "content": "count to three"}]
CALLS = 2000
CONCURRENCY = 32
KILL_AFTER = 600


def test_an_instance_killed_mid_load_loses_no_successful_call(whole):
    key = whole.new_key()
    client = openai.OpenAI(base_url=whole.url + "/v1", api_key=key, max_retries=0, timeout=60)
    done = []
    lock = threading.Lock()
    killed = threading.Event()
    victim = 1

    def one(index):
        stream = index % 5 == 0
        started = time.monotonic()
        try:
            raw = client.chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=HELLO,
                                                                   stream=stream)
            answer = raw.parse()
            if stream:
                chunks = list(answer)
                assert chunks and chunks[-1].choices[0].finish_reason == "stop"
            outcome = ("ok", raw.headers["x-request-id"], started)
        except (openai.APIError, AssertionError) as exc:
            detail = getattr(getattr(exc, "response", None), "text", "")[:200]
            outcome = ("error", f"{type(exc).__name__} {getattr(exc, 'status_code', '')} {time.strftime('%H:%M:%S')} "
                                f"stream={stream} {detail}", started)
        with lock:
            done.append(outcome)
            if len(done) == KILL_AFTER and not killed.is_set():
                killed.set()
                whole.kill(victim)
                killed.at = time.monotonic()
        return outcome

    run_many(one, range(CALLS), CONCURRENCY)
    finished = time.monotonic()
    assert killed.is_set()
    ok = [rid for kind, rid, _ in done if kind == "ok"]
    errors = [(name, started) for kind, name, started in done if kind == "error"]
    # Only calls in flight on the dead instance failed: at most the concurrency, all started before the kill.
    assert len(errors) <= CONCURRENCY, errors
    late = [(round(started - killed.at, 3), name[:80]) for name, started in errors if started > killed.at]
    assert not late, late
    # Every success has exactly one row, within seconds, with no further traffic.
    deadline = finished + 15
    while True:
        rows = whole.rows_by_request(ok)
        if len(rows) == len(ok) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = [rid for rid in ok if rid not in rows]
    assert not missing, f"{len(missing)} successful calls have no ledger row: {missing[:5]}"
    assert set(rows.values()) == {1}
    took = time.monotonic() - finished
    # The calls that died with the instance are billed too, as worker_died, once each.
    died = whole.sql("SELECT count(*) FROM gateway_spend WHERE status = 'worker_died'")
    print(f"{CALLS} calls, instance {victim} killed after {KILL_AFTER}: {len(ok)} ok, {len(errors)} errors, "
          f"all {len(ok)} rows present {took:.2f} s after the last call, worker_died rows: {died[0][0]}")
