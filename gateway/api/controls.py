"""LiteLLM's per-request testing and control knobs, checked before any other work on a call.

- `mock_response` in the body answers without calling the upstream (providers/mock.py). LiteLLM lets
  anyone send it; here only a proxy admin (the master key, a `proxy_admin` user's key) or anyone when
  `general_settings.allow_mock_response: true` (or no master key is set: every caller is then trusted)
  may, because a virtual key could otherwise fake ledger rows and answers: 403 otherwise.
- Headers `x-litellm-timeout` (seconds) and `x-litellm-num-retries` set the call's `request_timeout`
  and `num_retries` (the header wins over the body), bounded as those body fields are
  (`max_request_timeout`, `max_retries`); a bad value is a 400 naming the header.
"""

import math

from gateway import errors

TIMEOUT_HEADER = "x-litellm-timeout"
RETRIES_HEADER = "x-litellm-num-retries"
MAX_TIMEOUT_SECONDS = 31_536_000  # a year: anything longer is a mistake, capped again by the router
MAX_RETRIES_VALUE = 1000


def check_mock(body, caller, settings):
    """Refuse `mock_response` from a caller who may not use it; its value must be text."""
    if "mock_response" not in body:
        return
    mock = body["mock_response"]
    if mock is None:
        del body["mock_response"]
        return
    if not isinstance(mock, str):
        raise errors.BadRequestError("`mock_response` must be text.", param="mock_response")
    if settings.general.allow_mock_response or settings.master_key is None:
        return
    if caller is None or caller.role != "proxy_admin":
        raise errors.PermissionDeniedError(
            "`mock_response` is for proxy admins only on this gateway (set general_settings.allow_mock_response: "
            "true to let every caller use it).", param="mock_response", code="mock_response_not_allowed")


def _number(headers, name):
    """The header as a number (NaN when it is not one), or None when absent."""
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw.strip())
    except ValueError:
        return math.nan


def apply_headers(body, headers):
    """Copy the control headers into the body's control fields, checked."""
    value = _number(headers, TIMEOUT_HEADER)
    if value is not None:
        if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_SECONDS:
            raise errors.BadRequestError(f"Header `{TIMEOUT_HEADER}` must be a positive number of seconds.",
                                         param=TIMEOUT_HEADER, code="invalid_header")
        body["request_timeout"] = value
    value = _number(headers, RETRIES_HEADER)
    if value is not None:
        if not math.isfinite(value) or value != int(value) or not 0 <= value <= MAX_RETRIES_VALUE:
            raise errors.BadRequestError(f"Header `{RETRIES_HEADER}` must be a whole number from 0 to "
                                         f"{MAX_RETRIES_VALUE}.", param=RETRIES_HEADER, code="invalid_header")
        body["num_retries"] = int(value)
