"""Spend end to end: a real gunicorn gateway (2 gevent workers, --debug) on SQLite and on the real
PostgreSQL, in front of the fake OpenAI and Anthropic upstreams, called with the openai SDK.

Every expected cost is computed here, independently of the gateway: the usage the fake upstream
reports for the request it received (the OpenAI fake is asked again, without streaming; the
Anthropic fake's own `plan`) times the price in `gateway/data/models.json` or the deployment's
`input_cost_per_token` / `output_cost_per_token`. Rows are written after the response has gone out,
so every check polls `/spend/logs` for its row first.

One gateway per database serves the module; each test makes its own keys, and the last test checks
every key's spend against its rows and the gateway log for key values.
"""

import contextlib
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import openai
import pytest
import requests
import yaml

from gateway import data as modeldata
from gateway.access.keys import hash_key
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.anthropic_server import plan as anthropic_plan
from tests.integration.conftest import GatewayProcess
from tests.integration.conftest import free_port
from tests.pg import schema_url as pg_schema

pytestmark = pytest.mark.integration

MASTER = "sk-1234"
ANTHROPIC_KEY = "sk-ant-fake-upstream-spend-0123456789"
# Far from gpt-4o-mini's list price, so a table price used instead of the override shows.
OVERRIDE = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
ROW_TIMEOUT = 10.0  # seconds a row may take to appear (written once the response has been sent)
CHAT_MODELS = ["gpt-4o", "gpt-4o-mini-custom", "claude"]


def model_list(fake_openai, fake_anthropic):
    """Table-priced OpenAI and Anthropic deployments, overridden prices, and the fake's triggers."""
    openai_up = {"api_base": fake_openai.url + "/v1", "api_key": fake_openai.api_key}

    def deployment(name, model, **params):
        return {"model_name": name, "litellm_params": {"model": model, **params}}

    priced = [deployment("gpt-4o", "openai/gpt-4o", **openai_up),
              deployment("gpt-4o-mini-custom", "openai/gpt-4o-mini", **openai_up, **OVERRIDE),
              deployment("text-embedding-3-small", "openai/text-embedding-3-small", **openai_up),
              deployment("claude", "anthropic/claude-3-5-sonnet-20241022", api_base=fake_anthropic.url,
                         api_key=ANTHROPIC_KEY)]
    # The triggers are priced too, so that "costs 0" and "costs more than 0" below mean something.
    triggers = [deployment(name, f"openai/{name}", **openai_up, **OVERRIDE)
                for name in ("slow-stream", "fail-400", "fail-500")]
    return priced + triggers


@dataclass
class Call:
    """One call through the gateway: its unique marker (in the prompt), id, headers and answer."""

    marker: str
    request_id: str
    headers: dict
    answer: object = None
    chunks: list = None


class SpendGateway:
    """The running gateway, its upstreams and the keys generated on it."""

    def __init__(self, proc, kind, fake_openai, fake_anthropic, models):
        self.proc, self.url, self.kind = proc, proc.url, kind
        self.fake_openai, self.fake_anthropic = fake_openai, fake_anthropic
        self.params = {m["model_name"]: m["litellm_params"] for m in models}
        self.keys = []

    # -- admin routes ------------------------------------------------------------------------------

    def admin(self, method, path, token=MASTER, **kwargs):
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {token}"},
                                timeout=30, **kwargs)

    def generate(self, **body):
        resp = self.admin("POST", "/key/generate", json=body)
        assert resp.status_code == 200, resp.text
        self.keys.append(resp.json()["key"])
        return self.keys[-1]

    def key_spend(self, key):
        resp = self.admin("GET", "/key/info", params={"key": key})
        assert resp.status_code == 200, resp.text
        return resp.json()["info"]["spend"]

    def logs(self, **params):
        resp = self.admin("GET", "/spend/logs", params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def row(self, request_id, timeout=ROW_TIMEOUT):
        """The ledger row of one request, once it has been written."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.logs(request_id=request_id)
            assert len(rows) <= 1, rows
            if rows:
                return rows[0]
            assert time.monotonic() < deadline, f"no spend row for {request_id} after {timeout}s"
            time.sleep(0.1)

    # -- calls through the openai SDK --------------------------------------------------------------

    def client(self, key):
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=30)

    def chat(self, key, model, **extra):
        """A chat call (read to its end when streamed) with a prompt nobody else sends."""
        marker = new_marker()
        raw = self.client(key).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"write a short poem about {marker}"}], **extra)
        call = Call(marker, raw.headers["x-request-id"], dict(raw.headers))
        if extra.get("stream"):
            call.chunks = list(raw.parse())
        else:
            call.answer = raw.parse()
        return call

    def embed(self, key, model="text-embedding-3-small"):
        marker = new_marker()
        raw = self.client(key).embeddings.with_raw_response.create(model=model, input=f"embed {marker} please")
        return Call(marker, raw.headers["x-request-id"], dict(raw.headers), raw.parse())

    # -- what the upstream saw and what it costs ---------------------------------------------------

    def sent(self, marker):
        """The one upstream request that carried `marker`."""
        found = [r for fake in (self.fake_openai, self.fake_anthropic) for r in list(fake.requests)
                 if marker in json.dumps(r["json"])]
        assert len(found) == 1, found
        return found[0]

    def upstream_usage(self, marker):
        """(prompt, completion) tokens the fake upstream reports for the request with `marker`."""
        sent = self.sent(marker)
        if sent["path"] == "/v1/messages":
            *_, prompt, completion = anthropic_plan(sent["json"])
            return prompt, completion
        body = {k: v for k, v in sent["json"].items() if k not in ("stream", "stream_options")}
        resp = requests.post(self.fake_openai.url + sent["path"], json=body, timeout=10,
                             headers={"Authorization": f"Bearer {self.fake_openai.api_key}"})
        usage = resp.json()["usage"]
        return usage["prompt_tokens"], usage.get("completion_tokens", 0)

    def price(self, model_name):
        """(input, output) USD per token: the deployment's override, else the package's table."""
        params = self.params[model_name]
        if "input_cost_per_token" in params:
            found = params["input_cost_per_token"], params["output_cost_per_token"]
        else:
            facts = modeldata.table()[params["model"].split("/", 1)[1]]
            found = facts["input_cost_per_token"], facts["output_cost_per_token"]
        assert found[0] > 0, f"{model_name} has no price: the test would prove nothing"
        return found

    def expected_cost(self, model_name, prompt, completion):
        input_price, output_price = self.price(model_name)
        return prompt * input_price + completion * output_price

    def assert_billed(self, call, key, model_name, *, stream=False, call_type="chat"):
        """The call's row has the upstream's exact usage, its price, and says what was called."""
        row = self.row(call.request_id)
        prompt, completion = self.upstream_usage(call.marker)
        params = self.params[model_name]
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
            prompt, completion, prompt + completion), row
        assert row["spend"] == pytest.approx(self.expected_cost(model_name, prompt, completion), rel=1e-9)
        assert row["spend"] > 0
        assert (row["status"], row["estimated"], row["stream"], row["cache_hit"]) == ("success", False, stream, False)
        assert row["api_key"] == (hash_key(key) if key != MASTER else None)
        assert row["call_type"] == call_type and row["model_group"] == model_name
        assert row["custom_llm_provider"] + "/" + row["model"] == params["model"]
        assert row["model_id"] == call.headers["x-litellm-model-id"]
        assert parse_time(row["startTime"]) <= parse_time(row["endTime"])
        return row


def new_marker():
    return f"spend{uuid.uuid4().hex}"


def parse_time(value):
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, value
    return parsed


def assert_key_spend_is_sum_of_rows(gw, key):
    rows = gw.logs(api_key=key, limit=10_000)
    assert rows and all(r["api_key"] == hash_key(key) for r in rows)
    assert gw.key_spend(key) == pytest.approx(sum(r["spend"] for r in rows), rel=1e-9, abs=1e-15)
    return rows


@pytest.fixture(scope="module")
def fake_anthropic():
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(request, tmp_path_factory, fake_openai, fake_anthropic):
    tmp = tmp_path_factory.mktemp(f"spend-{request.param}")
    general = {"master_key": MASTER}
    env = {}
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            general["database_url"] = stack.enter_context(pg_schema())
        else:
            env["DATABASE_URL"] = f"sqlite:///{tmp / 'spend.sqlite'}"
        models = model_list(fake_openai, fake_anthropic)
        path = tmp / "config.yaml"
        # The trigger deployments fail on purpose: no retries, and no cooldown between tests.
        path.write_text(yaml.safe_dump({"model_list": models, "general_settings": general,
                                        "router_settings": {"num_retries": 0, "allowed_fails": 1000}}))
        proc = GatewayProcess(["--config", str(path), "--num_workers", "2", "--debug"], env,
                              tmp / "gateway.log", free_port())
        stack.callback(proc.stop)  # stopped before the schema is dropped
        proc.wait_ready()
        yield SpendGateway(proc, request.param, fake_openai, fake_anthropic, models)


# ---- 1. whole answers: header, row and key agree with usage x price ----------------------------

def test_non_stream_cost_header_row_and_key_spend_agree(gw):
    key = gw.generate(key_alias="non-stream")
    calls = [(gw.chat(key, model), model, "chat") for model in CHAT_MODELS]
    calls.append((gw.embed(key), "text-embedding-3-small", "embeddings"))
    total = 0.0
    for call, model, call_type in calls:
        row = gw.assert_billed(call, key, model, call_type=call_type)
        assert float(call.headers["x-litellm-response-cost"]) == pytest.approx(row["spend"], rel=1e-9)
        if call_type == "chat":  # what the client was told is what was billed
            usage = call.answer.usage
            assert (usage.prompt_tokens, usage.completion_tokens) == (row["prompt_tokens"], row["completion_tokens"])
        total += row["spend"]
    rows = assert_key_spend_is_sum_of_rows(gw, key)
    assert sorted(r["request_id"] for r in rows) == sorted(call.request_id for call, _, _ in calls)
    assert gw.key_spend(key) == pytest.approx(total, rel=1e-9)


# ---- 2-4. streams: billed from the upstream's usage, shown to the client only when asked --------

@pytest.mark.parametrize("client_asks", [False, True], ids=["no-usage-asked", "usage-asked"])
@pytest.mark.parametrize("model", CHAT_MODELS)
def test_stream_is_billed_from_upstream_usage(gw, model, client_asks):
    key = gw.generate()
    extra = {"stream_options": {"include_usage": True}} if client_asks else {}
    call = gw.chat(key, model, stream=True, **extra)
    sent = gw.sent(call.marker)["json"]
    if gw.params[model]["model"].startswith("openai/"):
        assert sent["stream_options"] == {"include_usage": True}  # asked for by the gateway if not the client
    else:
        assert "stream_options" not in sent  # Anthropic reports usage in message_start / message_delta

    content = [c for c in call.chunks if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in content).endswith(call.marker)
    usage_chunks = [c for c in call.chunks if not c.choices]
    row = gw.assert_billed(call, key, model, stream=True)
    if client_asks:
        assert len(usage_chunks) == 1 and call.chunks[-1] is usage_chunks[0]
        usage = usage_chunks[0].usage
        assert (usage.prompt_tokens, usage.completion_tokens) == (row["prompt_tokens"], row["completion_tokens"])
    else:
        assert usage_chunks == []
        assert not any("usage" in c.model_fields_set for c in call.chunks), "a usage field reached the client"
    assert gw.key_spend(key) == pytest.approx(row["spend"], rel=1e-9)


# ---- 5. a client that hangs up mid-stream ---------------------------------------------------------

def test_client_disconnect_mid_stream_is_billed_for_what_was_generated(gw, fake_openai, monkeypatch):
    monkeypatch.setattr(fake_openai, "stream_interval", 0.1)
    monkeypatch.setattr(fake_openai, "slow_stream_chunks", 100)  # 10 s of ticks, then the answer and usage
    key = gw.generate()
    content = f"count slowly {new_marker()}"
    body = {"model": "slow-stream", "messages": [{"role": "user", "content": content}], "stream": True}
    with requests.Session() as session:
        with session.post(gw.url + "/chat/completions", json=body, stream=True, timeout=30,
                          headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status_code == 200, resp.text
            request_id = resp.headers["x-request-id"]
            events = (line for line in resp.iter_lines() if line.startswith(b"data: "))
            received = [json.loads(next(events)[len(b"data: "):]) for _ in range(2)]
    hung_up = time.monotonic()
    assert all(chunk["choices"] for chunk in received)
    assert fake_openai.wait_for_disconnect(5), "the gateway kept reading the upstream stream"

    row = gw.row(request_id)
    assert time.monotonic() - hung_up < 5, "billed only when the stream would have ended"
    assert (row["status"], row["estimated"], row["stream"]) == ("client_disconnected", True, True)
    assert row["prompt_tokens"] == len(content) // 4  # the 4-characters-a-token estimate
    # Billed for a few ticks ("tickN ", ~2 tokens each), not for the 100 the stream would have had.
    assert 1 <= row["completion_tokens"] < 40, row
    assert row["spend"] > 0
    assert row["spend"] == pytest.approx(gw.expected_cost("slow-stream", row["prompt_tokens"],
                                                          row["completion_tokens"]), rel=1e-9)
    assert gw.key_spend(key) == pytest.approx(row["spend"], rel=1e-9)


# ---- 6. upstream errors cost nothing --------------------------------------------------------------

@pytest.mark.parametrize("model, status", [("fail-400", 400), ("fail-500", 500)])
def test_upstream_error_is_recorded_at_no_cost(gw, model, status):
    key = gw.generate()
    paid = gw.assert_billed(gw.chat(key, "gpt-4o"), key, "gpt-4o")
    with pytest.raises(openai.APIStatusError) as failed:
        gw.chat(key, model)
    assert failed.value.status_code == status
    row = gw.row(failed.value.response.headers["x-request-id"])
    assert (row["status"], row["spend"], row["model_group"]) == ("error", 0.0, model)
    assert row["api_key"] == hash_key(key)
    assert gw.key_spend(key) == pytest.approx(paid["spend"], rel=1e-9)
    assert_key_spend_is_sum_of_rows(gw, key)


# ---- 7. the master key ----------------------------------------------------------------------------

def test_master_key_call_has_a_row_without_a_key(gw):
    call = gw.chat(MASTER, "gpt-4o")
    row = gw.assert_billed(call, MASTER, "gpt-4o")
    assert row["api_key"] is None and row["key_alias"] is None
    assert float(call.headers["x-litellm-response-cost"]) == pytest.approx(row["spend"], rel=1e-9)


# ---- 8. /spend/logs filters -----------------------------------------------------------------------

def ids(rows):
    return [row["request_id"] for row in rows]


def calls_either_side(gw, before, after):
    """Make the `before` calls, note the time, make the `after` calls, each a (key, model); wait for
    every row. Returns (before calls, the moment, after calls)."""
    def make(jobs):
        calls = [gw.chat(key, model) for key, model in jobs]
        for call in calls:
            gw.row(call.request_id)
        return calls
    earlier = make(before)
    time.sleep(0.05)
    moment = datetime.now(timezone.utc)
    time.sleep(0.05)
    return earlier, moment, make(after)


def test_spend_logs_filters(gw):
    user = f"user-{uuid.uuid4().hex[:8]}"
    gw.admin("POST", "/team/new", json={"team_id": "team-a"})  # a key's team must exist (LiteLLM: 404 otherwise)
    alpha = gw.generate(key_alias="alpha", user_id=user, team_id="team-a")
    beta = gw.generate(key_alias="beta")
    (first,), middle, (claude, last, other) = calls_either_side(
        gw, [(alpha, "gpt-4o")], [(alpha, "claude"), (alpha, "gpt-4o"), (beta, "gpt-4o")])
    newest_first = [last.request_id, claude.request_id, first.request_id]

    rows = gw.logs(api_key=alpha)
    assert ids(rows) == newest_first
    assert {(r["key_alias"], r["user"], r["team_id"]) for r in rows} == {("alpha", user, "team-a")}
    assert ids(gw.logs(api_key=hash_key(alpha))) == newest_first
    assert ids(gw.logs(api_key=alpha, limit=1)) == newest_first[:1]
    assert ids(gw.logs(user_id=user)) == newest_first
    assert ids(gw.logs(api_key=alpha, model="claude")) == [claude.request_id]
    assert ids(gw.logs(api_key=alpha, model="claude-3-5-sonnet-20241022")) == [claude.request_id]
    assert ids(gw.logs(api_key=alpha, model="gpt-4o")) == [last.request_id, first.request_id]
    assert ids(gw.logs(api_key=beta)) == [other.request_id]
    assert ids(gw.logs(api_key="sk-" + "x" * 43)) == []
    only = gw.logs(request_id=other.request_id)
    assert ids(only) == [other.request_id] and only[0]["api_key"] == hash_key(beta)

    for moment in (middle.isoformat(), middle.isoformat().replace("+00:00", "Z")):
        assert ids(gw.logs(api_key=alpha, start_date=moment)) == newest_first[:2]
        assert ids(gw.logs(api_key=alpha, end_date=moment)) == newest_first[2:]
    today = middle.date()
    yesterday, tomorrow = (today - timedelta(days=1)).isoformat(), (today + timedelta(days=1)).isoformat()
    assert ids(gw.logs(api_key=alpha, start_date=yesterday, end_date=tomorrow)) == newest_first
    assert gw.logs(api_key=alpha, start_date=tomorrow) == []
    assert gw.logs(api_key=alpha, end_date=yesterday) == []

    for bad in ({"limit": 0}, {"limit": "all"}, {"start_date": "yesterday"}, {"end_date": "2024-13-01"}):
        assert gw.admin("GET", "/spend/logs", params=bad).status_code == 400, bad
    for token, status in ((beta, 403), (MASTER, 200)):  # beta: a key without a user
        assert gw.admin("GET", "/spend/logs", token=token, params={"api_key": alpha}).status_code == status
    # alpha's user (an internal user) reads the rows of its own keys, whatever it asks (issue #13).
    for params in ({"api_key": alpha}, {"api_key": beta}, {"user_id": "someone-else"}):
        own = gw.admin("GET", "/spend/logs", token=alpha, params=params)
        assert own.status_code == 200 and {r["user"] for r in own.json()} <= {user}, params
    assert ids(gw.admin("GET", "/spend/logs", token=alpha, params={}).json()) == newest_first


@pytest.mark.parametrize("hours", [2, -5])
def test_spend_logs_time_filters_honour_the_utc_offset(gw, hours):
    """A time names an instant whatever offset it is written with: 12:00+02:00 is 10:00 UTC."""
    key = gw.generate()
    (before,), middle, (after,) = calls_either_side(gw, [(key, "gpt-4o")], [(key, "gpt-4o")])
    moment = middle.astimezone(timezone(timedelta(hours=hours))).isoformat()
    assert ids(gw.logs(api_key=key, start_date=moment)) == [after.request_id]
    assert ids(gw.logs(api_key=key, end_date=moment)) == [before.request_id]


# ---- many calls at once, over both workers ----------------------------------------------------------

def test_concurrent_calls_are_each_billed_once(gw):
    key = gw.generate()
    plan = [(model, stream) for model in CHAT_MODELS for stream in (False, True)] * 3
    with ThreadPoolExecutor(len(plan)) as pool:
        calls = list(pool.map(lambda job: gw.chat(key, job[0], stream=job[1]), plan))
    expected = sum(gw.assert_billed(call, key, model, stream=stream)["spend"]
                   for call, (model, stream) in zip(calls, plan))
    rows = assert_key_spend_is_sum_of_rows(gw, key)
    assert sorted(ids(rows)) == sorted(call.request_id for call in calls)
    assert gw.key_spend(key) == pytest.approx(expected, rel=1e-9)


# ---- 9. last: every key's spend is the sum of its rows; no key in the log -------------------------

def test_every_key_spend_is_the_sum_of_its_rows_and_no_key_is_logged(gw):
    key = gw.generate()  # one key of its own, so the test checks something when run alone
    gw.assert_billed(gw.chat(key, "claude", stream=True), key, "claude", stream=True)
    for key in gw.keys:
        assert_key_spend_is_sum_of_rows(gw, key)
    log = gw.proc.log()
    assert "POST Request Sent from gateway" in log  # --debug: upstream calls are logged
    for secret in gw.keys + [MASTER, gw.fake_openai.api_key, ANTHROPIC_KEY]:
        assert secret not in log, f"a key ({secret[:6]}...) in the gateway log"
