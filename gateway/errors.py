"""The gateway's errors: one tree rendered as one OpenAI error envelope, and ConfigError for start-up."""


class ConfigError(Exception):
    """The config file cannot be used; the message names the exact key path at fault.

    Not a GatewayError: it stops start-up (exit 2) and never reaches a client."""


class GatewayError(Exception):
    """Root of every error the gateway reports to a client."""

    status = 500
    type = "server_error"
    code = None

    def __init__(self, message, *, param=None, code=None, status=None, headers=None,
                 upstream_status=None, upstream_request_id=None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.upstream_status = upstream_status
        self.upstream_request_id = upstream_request_id

    def body(self):
        """The OpenAI error envelope as a dict."""
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


class BadRequestError(GatewayError):
    """The request is malformed or names something impossible (400)."""

    status = 400
    type = "invalid_request_error"


class ContextWindowExceededError(BadRequestError):
    """The prompt does not fit the model's context window (400)."""

    code = "context_length_exceeded"


class AuthenticationError(GatewayError):
    """Missing or wrong API key (401)."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    """The key is valid but may not do this (403)."""

    status = 403
    type = "permission_error"


class NotFoundError(GatewayError):
    """No such route, model or object (404)."""

    status = 404
    type = "invalid_request_error"


class PayloadTooLargeError(GatewayError):
    """Request body above the configured limit (413)."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(GatewayError):
    """Too many requests, here or upstream (429)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceededError(RateLimitError):
    """The key's budget is spent (429, as OpenAI reports insufficient quota)."""

    type = "budget_exceeded"
    code = "insufficient_quota"


class UpstreamError(GatewayError):
    """The upstream answered with an error we pass on (its status kept when >= 500)."""

    status = 502
    type = "upstream_error"


class UpstreamConnectionError(UpstreamError):
    """The upstream could not be reached (502)."""

    status = 502
    code = "upstream_connection_error"


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer in time (504)."""

    status = 504
    type = "timeout"
    code = "upstream_timeout"


class ServiceUnavailableError(GatewayError):
    """No deployment can take the call right now (503)."""

    status = 503
    type = "service_unavailable"


class LimitStateUnavailableError(ServiceUnavailableError):
    """The call needs a shared rate limit, Redis (which holds them) is unreachable, and
    router_settings.redis_outage_limits is `refuse` (503)."""

    code = "rate_limit_state_unavailable"


def first_error(messages):
    """(param, message) of the first problem in a marshmallow error dict (`param` is its dotted path:
    `messages[0].role`), for an error body's `param` and message."""
    key = sorted(messages, key=str)[0]
    value = messages[key]
    while isinstance(value, dict):
        inner = sorted(value, key=str)[0]
        key, value = f"{key}[{inner}]" if isinstance(inner, int) else f"{key}.{inner}", value[inner]
    text = value[0] if isinstance(value, list) and value else str(value)
    if text == "Missing data for required field.":
        text = "required"
    return key, text


# Upstream 4xx statuses map onto the same meaning here, so SDKs raise the same typed error.
_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: BadRequestError,
    429: RateLimitError,
}


def from_upstream_status(status, message, *, code=None, param=None, type_=None, headers=None,
                         request_id=None, deployment=None):
    """Build the gateway error for an upstream error answer, keeping its status and message."""
    if deployment:
        message = f"{message} (deployment: {deployment})"
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequestError if 400 <= status < 500 else UpstreamError
    if cls is BadRequestError and code == "context_length_exceeded":
        cls = ContextWindowExceededError
    err = cls(message, code=code, param=param, headers=headers, upstream_status=status,
              upstream_request_id=request_id)
    if cls is UpstreamError:
        err.status = status if 500 <= status <= 599 else 502
    elif cls is BadRequestError:
        err.status = status  # 409, 422, ...: SDKs raise their own typed error for each
    if type_ and cls not in (UpstreamError,):
        err.type = type_
    return err
