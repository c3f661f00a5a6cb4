"""#17 proof 7: instances restarted one by one under load, as a rolling deploy does it (taken out of
the load balancer, SIGTERM: gunicorn's graceful stop lets the calls in flight finish, started again,
ready, put back), lose no call that had started. The clients retry as the SDK does by default (an
nginx reload closes connections it accepted but had not read yet); a call that had reached a
gateway and was lost would leave a ledger row of its own (an error, `worker_died`) beside its
retry's, so the proof is: no client error, and the key's ledger rows are exactly the successes.
(Migrations run once before any worker serves: tests/integration/test_warm_start.py.)"""

import threading
import time

import openai

HELLO = [{"role": "user", "content": "hello"}]
CLIENTS = 8


def test_a_rolling_restart_under_load_loses_no_call(whole):
    key = whole.new_key()
    client = openai.OpenAI(base_url=whole.url + "/v1", api_key=key, max_retries=2, timeout=60)
    stop = threading.Event()
    results = []

    def load(worker):
        count = 0
        while not stop.is_set():
            count += 1
            stream = count % 4 == 0
            model = "slow" if count % 25 == 0 else "gpt-3.5-turbo"  # some calls in flight for a second
            try:
                raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, stream=stream)
                answer = raw.parse()
                if stream:
                    assert list(answer)[-1].choices[0].finish_reason == "stop"
                results.append(("ok", raw.headers["x-request-id"]))
            except (openai.APIError, AssertionError) as exc:
                results.append(("error", f"{type(exc).__name__} {getattr(exc, 'status_code', '')} "
                                          f"{getattr(getattr(exc, 'response', None), 'text', '')[:120]}"))

    threads = [threading.Thread(target=load, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        restarts, phases = [], []
        for index in range(len(whole.instances)):
            before = len(results)
            started = time.monotonic()
            whole.nginx.set_down(index, True)
            whole.terminate(index)
            stopped = time.monotonic()
            whole.start(index)
            phases.append((round(stopped - started, 2), round(time.monotonic() - stopped, 2)))
            whole.nginx.set_down(index, False)
            restarts.append((round(time.monotonic() - started, 2), len(results) - before))
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    errors = [detail for kind, detail in results if kind == "error"]
    ok = [rid for kind, rid in results if kind == "ok"]
    assert not errors, errors[:5]
    deadline = time.monotonic() + 15
    while len(rows := whole.rows_by_request(ok)) < len(ok) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(rows) == len(ok) and set(rows.values()) == {1}
    hashed = whole.admin_call("GET", "/key/info", params={"key": key})["key"]
    statuses = whole.sql("SELECT status, count(*) FROM gateway_spend WHERE key_hash = :k GROUP BY status", k=hashed)
    assert dict(statuses) == {"success": len(ok)}, statuses
    print(f"rolling restart of {len(whole.instances)} instances (seconds, calls during each): {restarts}; "
          f"{len(ok)} calls, 0 errors, {len(rows)} rows, all the key's; (stop, start) seconds: {phases}")
