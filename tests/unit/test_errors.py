"""The error tree: each meaning's status/type/code, the envelope, and upstream status mapping."""

import pytest

from gateway import errors

CLASSES = [
    # class, status, type, code
    (errors.GatewayError, 500, "server_error", None),
    (errors.BadRequestError, 400, "invalid_request_error", None),
    (errors.ContextWindowExceededError, 400, "invalid_request_error", "context_length_exceeded"),
    (errors.AuthenticationError, 401, "invalid_request_error", "invalid_api_key"),
    (errors.PermissionDeniedError, 403, "permission_error", None),
    (errors.NotFoundError, 404, "invalid_request_error", None),
    (errors.PayloadTooLargeError, 413, "invalid_request_error", "request_too_large"),
    (errors.RateLimitError, 429, "rate_limit_error", "rate_limit_exceeded"),
    (errors.BudgetExceededError, 429, "budget_exceeded", "insufficient_quota"),
    (errors.UpstreamError, 502, "upstream_error", None),
    (errors.UpstreamConnectionError, 502, "upstream_error", "upstream_connection_error"),
    (errors.UpstreamTimeoutError, 504, "timeout", "upstream_timeout"),
    (errors.ServiceUnavailableError, 503, "service_unavailable", None),
]


@pytest.mark.parametrize("cls, status, type_, code", CLASSES, ids=lambda v: getattr(v, "__name__", None))
def test_class_status_type_code_and_envelope(cls, status, type_, code):
    err = cls("boom")
    assert isinstance(err, errors.GatewayError)
    assert (err.status, err.type, err.code) == (status, type_, code)
    assert str(err) == "boom"
    body = err.body()
    assert list(body) == ["error"]
    assert body["error"] == {"message": "boom", "type": type_, "param": None, "code": code}
    assert list(body["error"]) == ["message", "type", "param", "code"]


@pytest.mark.parametrize("cls", [c for c, *_ in CLASSES])
def test_param_code_status_and_headers_can_be_given_per_instance(cls):
    err = cls("bad", param="messages", code="custom", status=418, headers={"Retry-After": "3"})
    assert err.body()["error"] == {"message": "bad", "type": cls.type, "param": "messages", "code": "custom"}
    assert err.status == 418
    assert err.headers == {"Retry-After": "3"}
    # Per-instance values do not leak into the class.
    assert cls("other").code == cls.code
    assert cls("other").status == cls.status
    assert cls("other").headers == {}


@pytest.mark.parametrize("status, cls", [
    (400, errors.BadRequestError),
    (401, errors.AuthenticationError),
    (403, errors.PermissionDeniedError),
    (404, errors.NotFoundError),
    (413, errors.PayloadTooLargeError),
    (422, errors.BadRequestError),
    (429, errors.RateLimitError),
])
def test_upstream_4xx_keep_their_meaning(status, cls):
    err = errors.from_upstream_status(status, "nope")
    assert type(err) is cls
    assert err.upstream_status == status
    assert 400 <= err.status < 500
    assert err.status == status  # 422 stays 422: the SDK raises UnprocessableEntityError
    assert err.message == "nope"


@pytest.mark.parametrize("status", [400, 408, 409, 418, 451, 499])
def test_other_4xx_are_bad_requests(status):
    err = errors.from_upstream_status(status, "nope")
    assert isinstance(err, errors.BadRequestError)
    assert err.upstream_status == status


@pytest.mark.parametrize("status", [500, 501, 503, 504, 529, 599])
def test_upstream_5xx_keep_their_status(status):
    err = errors.from_upstream_status(status, "down")
    assert type(err) is errors.UpstreamError
    assert err.status == status
    assert err.type == "upstream_error"
    assert err.upstream_status == status


@pytest.mark.parametrize("status", [0, 100, 200, 204, 301, 302, 304, 307, 399, 600, 999, -1])
def test_weird_statuses_become_502(status):
    err = errors.from_upstream_status(status, "odd")
    assert type(err) is errors.UpstreamError
    assert err.status == 502
    assert err.upstream_status == status


@pytest.mark.parametrize("status", [400, 422])
def test_context_length_code_becomes_context_window_error(status):
    err = errors.from_upstream_status(status, "too long", code="context_length_exceeded", param="messages")
    assert type(err) is errors.ContextWindowExceededError
    assert isinstance(err, errors.BadRequestError)
    assert err.status == 400
    assert err.body()["error"]["code"] == "context_length_exceeded"
    assert err.param == "messages"


def test_context_length_code_on_a_non_400_keeps_the_status_meaning():
    err = errors.from_upstream_status(429, "slow down", code="context_length_exceeded")
    assert type(err) is errors.RateLimitError


def test_deployment_label_is_appended_to_the_message():
    err = errors.from_upstream_status(500, "it broke", deployment="gpt -> openai/gpt-4o at https://x/v1")
    assert err.message == "it broke (deployment: gpt -> openai/gpt-4o at https://x/v1)"
    assert err.body()["error"]["message"] == err.message


def test_no_label_leaves_the_message_alone():
    assert errors.from_upstream_status(500, "it broke").message == "it broke"


def test_upstream_code_param_type_headers_and_request_id_are_kept():
    err = errors.from_upstream_status(429, "slow", code="rate_limit_exceeded", param="model",
                                      type_="requests", headers={"Retry-After": "20"},
                                      request_id="req_123")
    assert err.body()["error"] == {"message": "slow", "type": "requests", "param": "model",
                                   "code": "rate_limit_exceeded"}
    assert err.headers == {"Retry-After": "20"}
    assert err.upstream_request_id == "req_123"


def test_upstream_type_does_not_replace_upstream_error_type():
    err = errors.from_upstream_status(503, "overloaded", type_="server_error")
    assert err.type == "upstream_error"


def test_upstream_code_overrides_class_default_only_when_given():
    assert errors.from_upstream_status(401, "x").code == "invalid_api_key"
    assert errors.from_upstream_status(401, "x", code="invalid_key").code == "invalid_key"
