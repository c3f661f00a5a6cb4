"""#17 proof 1: limits and hard budgets admit exactly what they allow with 64 concurrent clients
spread over the instances (through nginx), per key, per team and per deployment."""

import time

import openai

from tests.cluster.conftest import MASTER
from tests.cluster.conftest import run_many

HELLO = [{"role": "user", "content": "hello there"}]


def _client(cluster, key):
    return openai.OpenAI(base_url=cluster.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _outcomes(cluster, key, count, model="gpt-3.5-turbo", **kwargs):
    """Make `count` calls with `key` from 64 threads: the list of ("ok", response) / ("429", error)."""
    client = _client(cluster, key)

    def one(_):
        try:
            raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, **kwargs)
            return "ok", raw
        except openai.RateLimitError as exc:
            return "429", exc
    return run_many(one, range(count))


def _ok(outcomes):
    return [r for kind, r in outcomes if kind == "ok"]


def test_a_key_rpm_limit_admits_exactly_its_limit_across_instances(whole):
    key = whole.new_key(rpm_limit=50)
    outcomes = _outcomes(whole, key, 150)
    assert len(_ok(outcomes)) == 50
    assert [kind for kind, _ in outcomes].count("429") == 100


def test_a_team_rpm_limit_holds_for_all_its_keys_together(whole):
    team = whole.admin_call("POST", "/team/new", json={"team_alias": "cluster-team", "rpm_limit": 30})["team_id"]
    keys = [whole.new_key(team_id=team) for _ in range(2)]
    outcomes = _outcomes(whole, keys[0], 60) + _outcomes(whole, keys[1], 60)
    assert len(_ok(outcomes)) == 30


def test_a_deployment_rpm_admits_exactly_its_limit_across_instances(whole):
    outcomes = _outcomes(whole, MASTER, 100, model="limited")
    assert len(_ok(outcomes)) == 40


def test_max_parallel_requests_is_exact_across_instances(whole):
    whole.fake.slow_seconds = 4.0  # every admitted call is still in flight when the last one arrives
    try:
        key = whole.new_key(max_parallel_requests=5)
        outcomes = _outcomes(whole, key, 64, model="slow")
    finally:
        whole.fake.slow_seconds = 1.0
    assert len(_ok(outcomes)) == 5


def test_a_tpm_limit_never_admits_more_tokens_than_it_allows(whole):
    limit = 600
    key = whole.new_key(tpm_limit=limit)
    outcomes = _outcomes(whole, key, 120, max_tokens=20)
    used = sum(raw.parse().usage.total_tokens for raw in _ok(outcomes))
    refused = [kind for kind, _ in outcomes].count("429")
    print(f"tpm {limit}: {len(_ok(outcomes))} admitted, {used} tokens used, {refused} refused")
    assert refused and used <= limit
    # Holds are settled to the real usage: the limit is used, not left idle by the holds' worst case.
    assert used >= limit // 2, used


def test_a_hard_budget_is_overshot_by_one_call_at_most_under_64_clients(whole):
    budget = 0.0005  # the default soft mode: at most one call past the budget, however many race
    key = whole.new_key(max_budget=budget)
    outcomes = _outcomes(whole, key, 300, max_tokens=30)
    costs = [float(raw.headers["x-litellm-response-cost"]) for raw in _ok(outcomes)]
    print(f"budget ${budget}: {len(costs)} admitted, ${sum(costs):.6f} spent")
    assert costs and len(costs) < 300
    assert sum(costs) <= budget + max(costs) + 1e-12
    # The key's spend (committed by every instance's ledger) is what the answers said, to the cent.
    deadline = time.monotonic() + 10
    while abs((spend := whole.admin_call("GET", "/key/info", params={"key": key})["info"]["spend"]) - sum(costs)) > 1e-9:
        assert time.monotonic() < deadline, (spend, sum(costs))
        time.sleep(0.05)
