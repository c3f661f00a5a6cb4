"""Prometheus metrics (gateway/metrics.py): the text format, histogram buckets, label escaping, and
one table shared by several processes whose totals add up exactly."""

import multiprocessing
import os
import time
import types

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry import metrics
from gateway.app import create_app
from gateway.telemetry.events import CallRecord
from gateway.telemetry.metrics import LATENCY_BUCKETS
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.metrics import MetricStore
from gateway.config.settings import from_dict

MASTER = "sk-master-metrics-0123456789"


def fake_router(*names, aliases=None, cooling=None, patterns=()):
    """`patterns`: wildcard names; a name serves under the first whose prefix (before `*`) it has."""
    cooling = {} if cooling is None else cooling
    groups = {n: types.SimpleNamespace(cooling=lambda n=n: cooling.get(n, {})) for n in names}

    def pattern_of(name):
        return next((p for p in patterns if name.startswith(p.split("*")[0])), None)
    return types.SimpleNamespace(groups=groups, aliases=aliases or {}, pattern_of=pattern_of)


def record(group="gpt", status="success", http_status=200, latency=0.2, stream=False, first=None, **extra):
    fields = dict(request_id="req_1", endpoint="chat", status=status, stream=stream, started=0.0,
                  ended=latency, model_group=group, deployment_id="dep1", provider="openai",
                  http_status=http_status, first_token_seconds=first)
    fields.update(extra)
    return CallRecord(**fields)


def parse(text):
    """{sample name: {frozenset(labels.items()): value}} and {family name: type}."""
    samples, types_ = {}, {}
    for family in text_string_to_metric_families(text):
        types_[family.name] = family.type
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples, types_


def value(samples, name, **labels):
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for k, v in samples.get(name, {}).items() if set(labels.items()) <= k)


@pytest.fixture
def store(tmp_path):
    return MetricStore(str(tmp_path / "state.sqlite.metrics"))


@pytest.fixture
def m(store):
    return Metrics(fake_router("gpt", "other"), store)


# -- rendering -------------------------------------------------------------------------------------

def test_every_family_is_declared_and_parses(m):
    m.observe(record(prompt_tokens=3, completion_tokens=5, cost=0.25, retries=2, fallbacks=1,
                     attempts=[{"group": "gpt", "deployment_id": "dep1", "provider": "openai",
                                "error": "UpstreamError"},
                               {"group": "other", "deployment_id": "dep2", "provider": "azure", "error": None}]))
    m.observe(record(status="error", http_status=500, cache_hit=True))
    samples, kinds = parse(m.render())
    assert kinds == {"gateway_requests": "counter", "gateway_request_duration_seconds": "histogram",
                     "gateway_time_to_first_token_seconds": "histogram", "gateway_prompt_tokens": "counter",
                     "gateway_completion_tokens": "counter", "gateway_spend_usd": "counter",
                     "gateway_upstream_errors": "counter", "gateway_retries": "counter",
                     "gateway_fallbacks": "counter", "gateway_cache_hits": "counter",
                     "gateway_cache_misses": "counter", "gateway_spend_rows_quarantined": "counter",
                     "gateway_deployments_cooling_down": "gauge"}
    assert samples["gateway_requests_total"] == {
        frozenset({"model_group": "gpt", "deployment": "dep1", "provider": "openai", "endpoint": "chat",
                   "status": "success", "code": "200"}.items()): 1.0,
        frozenset({"model_group": "gpt", "deployment": "dep1", "provider": "openai", "endpoint": "chat",
                   "status": "error", "code": "500"}.items()): 1.0}
    assert value(samples, "gateway_prompt_tokens_total", model_group="gpt") == 3
    assert value(samples, "gateway_completion_tokens_total", deployment="dep1") == 5
    assert value(samples, "gateway_spend_usd_total", model_group="gpt") == 0.25
    assert value(samples, "gateway_retries_total", model_group="gpt") == 2
    assert value(samples, "gateway_fallbacks_total", model_group="gpt") == 1
    assert samples["gateway_upstream_errors_total"] == {frozenset({
        "model_group": "gpt", "deployment": "dep1", "provider": "openai", "error_type": "UpstreamError"}.items()): 1}
    assert value(samples, "gateway_cache_hits_total", model_group="gpt") == 1
    assert value(samples, "gateway_cache_misses_total", model_group="gpt") == 1
    assert value(samples, "gateway_deployments_cooling_down", model_group="gpt") == 0
    assert value(samples, "gateway_deployments_cooling_down", model_group="other") == 0


def test_an_empty_table_still_declares_every_family(m):
    text = m.render()
    assert text.endswith("\n")
    assert text.count("# TYPE ") == len(metrics.METRICS)
    samples, _ = parse(text)
    assert set(samples) == {"gateway_deployments_cooling_down"}


def test_histogram_buckets_are_cumulative_with_le_inclusive(m):
    for latency in (0.01, 0.0100001, 0.3, 5.0, 10_000.0):
        m.observe(record(latency=latency))
    samples, _ = parse(m.render())
    buckets = {dict(k)["le"]: v for k, v in samples["gateway_request_duration_seconds_bucket"].items()}
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets["0.01"] == 1  # le is inclusive
    assert buckets["0.025"] == 2
    assert buckets["0.25"] == 2 and buckets["0.5"] == 3
    assert buckets["5"] == 4 and buckets["600"] == 4
    assert buckets["+Inf"] == 5
    ordered = [buckets[metrics._number(b)] for b in LATENCY_BUCKETS] + [buckets["+Inf"]]
    assert ordered == sorted(ordered)
    assert value(samples, "gateway_request_duration_seconds_count") == 5
    assert value(samples, "gateway_request_duration_seconds_sum") == pytest.approx(0.01 + 0.0100001 + 0.3 + 5 + 10_000)


def test_time_to_first_token_is_for_streams_only(m):
    m.observe(record(stream=True, first=0.004))
    m.observe(record(stream=True, first=0.2))
    m.observe(record(stream=True, first=None))  # ended before its first chunk
    m.observe(record(stream=False))
    samples, _ = parse(m.render())
    assert value(samples, "gateway_time_to_first_token_seconds_count") == 2
    buckets = {dict(k)["le"]: v for k, v in samples["gateway_time_to_first_token_seconds_bucket"].items()}
    assert buckets["0.005"] == 1 and buckets["0.25"] == 2
    assert value(samples, "gateway_request_duration_seconds_count") == 4


def test_label_values_are_escaped(store):
    odd = 'we"ird\\name\nline2'
    m = Metrics(fake_router(odd), store)
    m.observe(record(group=odd))
    text = m.render()
    assert 'model_group="we\\"ird\\\\name\\nline2"' in text
    samples, _ = parse(text)
    assert value(samples, "gateway_requests_total", model_group=odd) == 1


def test_only_configured_groups_become_labels(store):
    m = Metrics(fake_router("gpt", aliases={"gpt-4": "gpt"}, patterns=("anthropic/*",)), store)
    m.observe(record(group="anthropic/claude-3-opus"))  # a name a wildcard serves: counted under it
    secret = "sk-" + "S" * 43
    m.observe(record(group=secret, status="error", http_status=404, deployment_id=None, provider=None))
    m.observe(record(group=None, status="error", http_status=400, deployment_id=None, provider=None))
    m.observe(record(group="gpt-4", status="error", http_status=403, deployment_id=None, provider=None,
                     key_hash="f" * 64, key_alias="team-a", user_id="u1"))
    text = m.render()
    assert secret not in text and "sk-" not in text and "f" * 16 not in text and "team-a" not in text
    samples, _ = parse(text)
    assert value(samples, "gateway_requests_total", model_group=metrics.UNKNOWN_GROUP) == 2
    assert value(samples, "gateway_requests_total", model_group="gpt", code="403", deployment="") == 1
    assert value(samples, "gateway_requests_total", model_group="anthropic/*") == 1
    assert "claude-3-opus" not in text


def test_numbers_are_rendered_exactly():
    assert metrics._number(3.0) == "3"
    assert metrics._number(0.1 + 0.2) == repr(0.1 + 0.2)
    assert metrics._number(float("inf")) == "+Inf"
    assert metrics._number(1e300) == repr(1e300)


def test_the_cooldown_gauge_is_read_at_scrape_time(store):
    cooling = {}
    m = Metrics(fake_router("pair", "solo", cooling=cooling), store)
    assert value(parse(m.render())[0], "gateway_deployments_cooling_down", model_group="pair") == 0
    cooling["pair"] = {"a": time.time() + 60}
    samples, _ = parse(m.render())
    assert value(samples, "gateway_deployments_cooling_down", model_group="pair") == 1
    assert value(samples, "gateway_deployments_cooling_down", model_group="solo") == 0


def test_the_cooldown_gauge_follows_a_real_group(tmp_path):
    app = create_app(from_dict({
        "model_list": [{"model_name": "pair", "litellm_params": {"model": "demo/a"}},
                       {"model_name": "pair", "litellm_params": {"model": "demo/b"}}],
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")}}))
    router = app.extensions["gateway"].router
    group = router.groups["pair"]
    group.cool_down(group.deployments[0], "test")
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert value(parse(text)[0], "gateway_deployments_cooling_down", model_group="pair") == 1


# -- the shared table ------------------------------------------------------------------------------

def test_two_stores_on_one_file_share_their_counts(tmp_path):
    path = str(tmp_path / "x.metrics")
    a, b = Metrics(fake_router("gpt"), MetricStore(path)), Metrics(fake_router("gpt"), MetricStore(path))
    a.observe(record())
    b.observe(record())
    b.observe(record(status="error", http_status=502))
    for m in (a, b):
        samples, _ = parse(m.render())
        assert value(samples, "gateway_requests_total") == 3
        assert value(samples, "gateway_request_duration_seconds_count") == 3


def _hammer(path, worker, calls):
    m = Metrics(fake_router("gpt", "other"), MetricStore(path))
    for i in range(calls):
        # shared series, and series every process creates for itself at the same time
        m.observe(record(prompt_tokens=1, cost=0.5, latency=(i % 7) / 10))
        m.observe(record(group="other", deployment_id=f"w{worker}-{i % 25}", status="error", http_status=500,
                         attempts=[{"group": "other", "deployment_id": f"w{worker}-{i % 25}", "provider": "x",
                                    "error": "UpstreamError"}]))


def test_processes_updating_one_table_add_up_exactly(tmp_path):
    path = str(tmp_path / "shared.metrics")
    parent = Metrics(fake_router("gpt", "other"), MetricStore(path))
    parent.observe(record())  # the parent has it mapped before the fork: children map it anew
    ctx = multiprocessing.get_context("fork")
    calls = 1500
    procs = [ctx.Process(target=_hammer, args=(path, w, calls)) for w in range(2)]
    for p in procs:
        p.start()
    _hammer(path, 9, calls)  # the parent too, at the same time
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    samples, _ = parse(parent.render())
    total = 3 * calls
    assert value(samples, "gateway_requests_total", model_group="gpt") == total + 1
    assert value(samples, "gateway_requests_total", model_group="other", code="500") == total
    assert value(samples, "gateway_prompt_tokens_total") == total
    assert value(samples, "gateway_spend_usd_total") == total * 0.5
    assert value(samples, "gateway_request_duration_seconds_count", model_group="gpt") == total + 1
    assert value(samples, "gateway_upstream_errors_total", error_type="UpstreamError") == total
    # each label set is one series, however many processes created it at once
    assert len(samples["gateway_upstream_errors_total"]) == 3 * 25
    assert len([k for k in samples["gateway_requests_total"] if dict(k)["model_group"] == "gpt"]) == 1
    raw = MetricStore(path).snapshot()
    assert len(raw) == len({k for k in raw})


def test_a_full_table_counts_new_label_sets_as_overflow_and_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(metrics, "MAX_SERIES", 3)
    m = Metrics(fake_router("gpt"), MetricStore(str(tmp_path / "full.metrics")))
    for i in range(5):
        m.observe(record(deployment_id=f"d{i}"))  # 3 new series per call: only the first call's fit
    assert sum(1 for r in caplog.records if "is full" in r.getMessage()) == 1
    samples, _ = parse(m.render())
    assert value(samples, "gateway_requests_total") == 5  # totals still add up
    assert value(samples, "gateway_requests_total", deployment="d0") == 1
    assert value(samples, "gateway_requests_total", deployment=metrics.OVERFLOW) == 4
    assert value(samples, "gateway_request_duration_seconds_count", model_group=metrics.OVERFLOW) == 4
    assert value(samples, "gateway_cache_misses_total", model_group="gpt") == 5


def test_a_stale_file_with_another_owner_starts_over(tmp_path, monkeypatch):
    path = str(tmp_path / "stale.metrics")
    old = MetricStore(path)
    old._stamp = 111
    Metrics(fake_router("gpt"), old).observe(record())
    monkeypatch.setattr(metrics, "_MAPPINGS", {})  # as a new process would
    new = MetricStore(path)
    new._stamp = 222  # the pid came back with another process
    assert new.snapshot() == {}
    monkeypatch.setattr(metrics, "_MAPPINGS", {})
    again = MetricStore(path)
    again._stamp = 222  # a second worker of that instance keeps what the first counted
    Metrics(fake_router("gpt"), new).observe(record())
    assert sum(v[0] for (n, _), v in again.snapshot().items() if n == "gateway_requests_total") == 1


def test_the_default_file_sits_beside_the_router_state_and_is_removed_when_stale(tmp_path, monkeypatch):
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    from gateway.routing.state import default_local_path
    from gateway.routing.state import remove_stale_files
    assert MetricStore().path == default_local_path() + ".metrics"
    dead = 2 ** 22 + 12345
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    (tmp_path / f"gateway-state-{dead}.sqlite.metrics").write_bytes(b"x")
    (tmp_path / f"gateway-state-{os.getppid()}.sqlite.metrics").write_bytes(b"x")
    remove_stale_files(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"gateway-state-{os.getppid()}.sqlite.metrics"]


# -- the route -------------------------------------------------------------------------------------

def app_with(tmp_path, monkeypatch, **general):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'keys.sqlite'}")
    return create_app(from_dict({
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}],
        "router_settings": {"local_state_path": str(tmp_path / "state.sqlite")},
        "general_settings": general}))


def test_the_route_needs_the_master_key(tmp_path, monkeypatch):
    client = app_with(tmp_path, monkeypatch, master_key=MASTER).test_client()
    key = client.post("/key/generate", json={}, headers={"Authorization": f"Bearer {MASTER}"}).get_json()["key"]
    resp = client.post("/v1/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "x"}]},
                       headers={"Authorization": f"Bearer {key}"})
    resp.close()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 403
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = resp.get_data(as_text=True)
    assert value(parse(text)[0], "gateway_requests_total", model_group="demo") == 1
    assert key not in text and MASTER not in text and key[-20:] not in text


@pytest.mark.parametrize("flag, status", [(True, 200), ("true", 401), (False, 401)])
def test_metrics_public_true_opens_the_route_and_only_it(tmp_path, monkeypatch, flag, status):
    client = app_with(tmp_path, monkeypatch, master_key=MASTER, metrics_public=flag).test_client()
    assert client.get("/metrics").status_code == status
    assert client.get("/v1/models").status_code == 401
    assert client.get("/key/list").status_code == 401


def test_without_a_master_key_the_route_is_open(tmp_path, monkeypatch):
    assert app_with(tmp_path, monkeypatch).test_client().get("/metrics").status_code == 200
