"""One redaction module (gateway/infra/redact.py) for upstream text, spans, addresses and payloads."""

from gateway.infra import redact


def test_known_secrets_then_key_shaped_strings_are_replaced():
    text = "upstream said: bad key sk-live-abc123 for user hunter2-secret (ref-000)"
    assert redact.redact(text, ["hunter2-secret"]) == \
        "upstream said: bad key [redacted] for user [redacted] (ref-000)"
    assert redact.redact("token pk-abcd", mark="REDACTED") == "token REDACTED"
    assert redact.redact("sk-ab and plain text") == "sk-ab and plain text"  # too short to be a key


def test_names_and_values_that_carry_credentials():
    for name in ("key", "api-key", "access_token", "X-Secret", "sig", "password", "passwd", "Authorization",
                 "credentials"):
        assert redact.sensitive_name(name), name
    for name in ("model", "api-version", "user", "n"):
        assert not redact.sensitive_name(name), name
    assert redact.has_key_like("x sk-proj-0123 y") and not redact.has_key_like("nothing here")


def test_the_payload_scrubber_replaces_secrets_and_their_json_escaped_form():
    scrub = redact.scrubber(["sk-live-abcdef123", 'we"ird\\key-0001', "short", None])
    item = b'{"a": "sk-live-abcdef123", "b": "we\\"ird\\\\key-0001", "c": "short"}'
    assert scrub(item) == b'{"a": "[redacted]", "b": "[redacted]", "c": "short"}'


def test_every_user_goes_through_the_one_module():
    from gateway.telemetry import sinks
    from gateway.wire import transport
    assert sinks.scrubber is redact.scrubber
    assert transport.display_url("https://h/x?api-key=abc&n=1") == "https://h/x?api-key=****&n=1"
