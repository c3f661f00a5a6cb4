"""Observers hear of every call once, after its response, with what happened (gateway/telemetry/events.py)."""

import json
import logging

import pytest

from gateway.app import create_app
from gateway.config.settings import from_dict

MASTER = "sk-master-events-0123456789"


@pytest.fixture
def app():
    settings = from_dict({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x", "input_cost_per_token": 0.5,
                                                               "output_cost_per_token": 1.0}}],
        "general_settings": {"master_key": MASTER}})
    return create_app(settings)


@pytest.fixture
def heard(app):
    records = []
    app.extensions["gateway"].observers.calls.append(records.append)
    return records


def call(app, **body):
    client = app.test_client()
    resp = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                       json={"model": "m", "messages": [{"role": "user", "content": "hello there"}], **body})
    data = resp.get_data()
    resp.close()
    return resp, data


def test_a_call_is_told_once_with_its_usage_cost_and_attempt(app, heard):
    resp, _ = call(app, max_tokens=3)
    assert resp.status_code == 200
    (record,) = heard
    assert record.request_id == resp.headers["x-request-id"]
    assert (record.status, record.http_status, record.model_group, record.provider) == ("success", 200, "m", "demo")
    assert (record.prompt_tokens, record.completion_tokens) == (2, 3)
    assert record.cost == pytest.approx(2 * 0.5 + 3 * 1.0)
    assert [a["deployment_id"] for a in record.attempts] == [record.deployment_id]
    assert record.attempts[0]["started"] <= record.attempts[0]["ended"] <= record.ended
    assert record.latency >= 0 and record.first_token_seconds is None
    assert record.response_text is None  # message text only when an observer asks for it


def test_a_stream_is_told_with_its_first_token_time_and_text_when_asked(app, heard):
    app.extensions["gateway"].spend.keep_text = True
    resp, data = call(app, stream=True, max_tokens=4)
    (record,) = heard
    assert record.stream and record.status == "success"
    assert record.first_token_seconds is not None and record.first_token_seconds >= 0
    sent = [json.loads(line[6:]) for line in data.decode().splitlines()
             if line.startswith("data: {")]
    assert record.response_text == "".join(c["choices"][0]["delta"].get("content") or ""
                                           for c in sent if c["choices"])
    assert record.response_text
    assert record.completion_tokens == 4 and record.estimated is False


def test_failures_are_told_with_their_status(app, heard):
    resp, _ = call(app, model="nope")
    assert resp.status_code == 404
    (record,) = heard
    assert (record.status, record.http_status, record.error_type) == ("error", 404, "NotFoundError")
    assert record.model_group == "nope" and record.cost == 0


def test_a_failing_observer_is_logged_and_the_call_still_succeeds(app, heard, caplog):
    def broken(record):
        raise RuntimeError("observer bug")
    app.extensions["gateway"].observers.calls.insert(0, broken)
    with caplog.at_level(logging.ERROR, logger="gateway.telemetry.events"):
        resp, _ = call(app)
    assert resp.status_code == 200 and len(heard) == 1
    assert "observer" in caplog.text


def test_begin_hooks_run_when_the_call_starts_and_travel_in_the_record(app, heard):
    app.extensions["gateway"].observers.begins["marker"] = lambda: "captured"
    call(app)
    assert heard[0].context == {"marker": "captured"}


def test_an_observer_that_logs_text_declares_it_and_the_spend_tracker_asks():
    from gateway.spend.meter import SpendTracker
    from gateway.telemetry.events import Observers
    observers = Observers()
    tracker = SpendTracker(None, None, 60, observers)
    observers.add(lambda record: None)
    assert observers.wants_text is False and tracker.keep_text is False
    observers.add(lambda record: None, wants_text=True)
    observers.add(lambda record: None)  # a later observer without text does not turn it off
    assert len(observers.calls) == 3 and observers.wants_text is True and tracker.keep_text is True


@pytest.fixture
def ledger_app(tmp_path):
    settings = from_dict({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x", "input_cost_per_token": 0.5,
                                                               "output_cost_per_token": 1.0}}],
        "general_settings": {"master_key": MASTER, "database_url": f"sqlite:///{tmp_path / 'g.sqlite'}",
                             "spend_spool_dir": str(tmp_path / "spool")}})
    app = create_app(settings)
    yield app
    app.extensions["gateway"].store.get().engine.dispose()


def _rows(app):
    from gateway.storage.models import SpendRow
    with app.extensions["gateway"].store.get().session() as session:
        return [(r.request_id, r.cost, r.status) for r in session.query(SpendRow)]


def test_a_whole_answers_row_is_written_before_it_goes_out_and_observers_hear_after(ledger_app):
    records = []
    ledger_app.extensions["gateway"].observers.calls.append(records.append)
    resp = ledger_app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                                         json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    # The response exists but has not been sent (closed) yet: its row is there, with the header's cost.
    rows = _rows(ledger_app)
    assert rows == [(resp.headers["x-request-id"], float(resp.headers["x-litellm-response-cost"]), "success")]
    assert records == []
    resp.get_data()
    resp.close()
    assert [r.request_id for r in records] == [rows[0][0]] and records[0].cost == rows[0][1]


def test_a_row_that_cannot_be_written_is_logged_and_observers_still_hear(ledger_app, caplog):
    records = []
    gateway = ledger_app.extensions["gateway"]
    gateway.observers.calls.append(records.append)

    def broken(*args, **kwargs):
        raise OSError("disk gone")
    gateway.spend.ledger.write = broken
    client = ledger_app.test_client()
    with caplog.at_level(logging.ERROR, logger="gateway"):
        for stream in (False, True):
            resp = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                               json={"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            assert resp.status_code == 200 and resp.get_data()
            resp.close()
    assert [r.stream for r in records] == [False, True]
    assert caplog.text.count("could not record a call's spend row") == 2
