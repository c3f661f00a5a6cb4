"""One log line per call, text or JSON, never a key."""

import json
import logging
import time

from gateway.app import create_app
from gateway.telemetry.requestlog import JsonFormatter
from gateway.telemetry.requestlog import TextFormatter
from gateway.config.settings import from_dict

MASTER = "sk-master-requestlog-0123456789"


def run_calls(json_logs=False):
    settings = from_dict({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x", "input_cost_per_token": 0.5,
                                                               "output_cost_per_token": 1.0}}],
        "litellm_settings": {"json_logs": json_logs},
        "general_settings": {"master_key": MASTER}})
    app = create_app(settings)
    client = app.test_client()
    key = client.post("/key/generate", json={"key_alias": "team-a"},
                      headers={"Authorization": f"Bearer {MASTER}"}).get_json()["key"]
    ids = []
    for body in ({"max_tokens": 3}, {"max_tokens": 3, "stream": True}, {"model": "nope"}):
        resp = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                           json={"model": "m", "messages": [{"role": "user", "content": "hello there"}], **body})
        resp.get_data()
        resp.close()
        ids.append(resp.headers["x-request-id"])
    return key, ids


def test_one_line_per_call_with_what_happened(caplog):
    with caplog.at_level(logging.INFO, logger="gateway.request"):
        key, ids = run_calls()
    lines = [r for r in caplog.records if r.name == "gateway.request"]
    assert [r.fields["request_id"] for r in lines] == ids
    ok, streamed, failed = (r.fields for r in lines)
    assert ok["key_alias"] == "team-a" and ok["status"] == "success" and ok["cost"] == 2 * 0.5 + 3 * 1.0
    assert (ok["prompt_tokens"], ok["completion_tokens"], ok["cache_hit"]) == (2, 3, False)
    assert streamed["stream"] is True and streamed["completion_tokens"] == 3
    assert (failed["status"], failed["http_status"], failed["error"]) == ("error", 404, "NotFoundError")
    text = "\n".join(r.getMessage() for r in lines)
    assert ids[0] in text and "team-a" in text and "tokens=2+3" in text
    assert key not in text and key[3:11] not in text and MASTER not in text


def test_json_lines_carry_every_field():
    record = logging.LogRecord("gateway.request", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.fields = {"request_id": "req_1", "cost": 0.5}
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert "\n" not in line
    assert data["message"] == "hello world" and data["request_id"] == "req_1" and data["cost"] == 0.5
    assert data["level"] == "INFO" and data["logger"] == "gateway.request" and data["time"].endswith("Z")


def test_json_logs_setting_formats_the_gateways_handler(monkeypatch):
    from gateway import app as app_module
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    try:
        app_module.configure_logging(False, json_logs=True)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers.clear()


def test_text_lines_match_loggings_default_time_format():
    """The time stamp is made once per second; every line must still read as logging's own."""
    default = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = TextFormatter()
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25, 1_800_000_059.0):
        record = logging.LogRecord("gateway", logging.WARNING, __file__, 1, "m %d", (1,), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == default.format(record)
        data = json.loads(JsonFormatter().format(record))
        assert data["time"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + \
            f".{int(record.msecs):03d}Z"


# ---- client text in log lines (#11 items 15 and 16) ---------------------------------------------

def formatted_lines(formatter, msg, *args):
    record = logging.LogRecord("gateway.api", logging.WARNING, __file__, 1, msg, args, None)
    return formatter.format(record).split("\n")


def test_text_lines_escape_every_line_break_a_client_can_send():
    for forged in ("x\nFORGED line", "x\r\nFORGED", "x\rFORGED", "x\u2028FORGED", "x\x85FORGED", "x\x0bFORGED",
                   "x\x1b[2KFORGED"):
        lines = formatted_lines(TextFormatter(), "unknown model %s", forged)
        assert len(lines) == 1 and "FORGED" in lines[0]
        assert "\r" not in lines[0] and "\x1b" not in lines[0]
    assert formatted_lines(TextFormatter(), "model %s", "a\nb")[0].endswith("model a\\nb")
    assert formatted_lines(TextFormatter(), "héllo 🌍 日本 %s", "ok")[0].endswith("héllo 🌍 日本 ok")  # untouched


def test_log_lines_are_bounded_text_and_json():
    from gateway.telemetry.requestlog import MESSAGE_LIMIT
    huge = "y" * 2_000_000
    text = formatted_lines(TextFormatter(), "unknown model %s", huge)
    assert len(text) == 1 and len(text[0]) < MESSAGE_LIMIT + 200 and "more characters]" in text[0]
    line = JsonFormatter().format(logging.LogRecord("gateway", logging.INFO, __file__, 1, "m %s", (huge,), None))
    assert len(line) < MESSAGE_LIMIT + 200 and json.loads(line)["message"].startswith("m yyy")


def test_a_forged_or_huge_model_name_makes_one_bounded_request_line(caplog):
    from gateway.telemetry.requestlog import FIELD_LIMIT
    settings = from_dict({"model_list": [{"model_name": "m", "litellm_params": {"model": "demo/x"}}],
                          "litellm_settings": {"json_logs": False}})
    client = create_app(settings).test_client()
    with caplog.at_level(logging.INFO, logger="gateway.request"):
        for model in ("x\nFORGED line", "z" * 2_000_000):
            resp = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert resp.status_code == 404
    lines = [r for r in caplog.records if r.name == "gateway.request"]
    assert len(lines) == 2
    text = "\n".join(TextFormatter().format(r) for r in lines).split("\n")
    assert len(text) == 2 and not any(line.startswith("FORGED") for line in text)
    assert all(len(line) < FIELD_LIMIT + 400 for line in text)
    assert len(lines[1].fields["model_group"]) < FIELD_LIMIT + 50
    assert len(JsonFormatter().format(lines[1])) < FIELD_LIMIT + 1000


def test_gunicorns_records_format_without_process_lookups(monkeypatch):
    """gunicorn's error log prints %(process)d; the gateway turns logging.logProcesses off."""
    import os

    from gateway.telemetry.requestlog import gunicorn_records
    monkeypatch.setattr(logging, "logProcesses", False)
    record = logging.LogRecord("gunicorn.error", logging.WARNING, __file__, 1,
                               "Invalid request from ip=%s: %s", ("127.0.0.1", "bad\nFORGED"), None)
    assert record.process is None
    assert gunicorn_records(record) is True
    line = logging.Formatter(r"%(asctime)s [%(process)d] [%(levelname)s] %(message)s").format(record)
    assert f"[{os.getpid()}] [WARNING] Invalid request from ip=127.0.0.1: bad\\nFORGED" in line
