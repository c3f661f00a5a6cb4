"""AWS plumbing shared by Bedrock and SageMaker: settings, boto3 clients, error answers.

The calls themselves run through the providers' `invoke` hook and wire.sdk, where botocore's and
urllib3's I/O errors are mapped. boto3/botocore are imported inside functions only: a gateway with
no AWS deployment never loads them (they cost ~17 MB per worker).
"""

import logging
import re
import threading

import orjson

from gateway import errors
from gateway.errors import ConfigError
from gateway.providers.base import env_value
from gateway.wire.sdk import map_exception  # noqa: F401  (the AWS path's error mapping, in wire/)
from gateway.wire.sdk import translated  # noqa: F401  (its stream translation, in wire/)
from gateway.wire.transport import CONNECT_TIMEOUT
from gateway.wire.transport import split_credentials

log = logging.getLogger("gateway.providers.aws")

# gevent serves up to 1000 connections per worker; botocore's default pool of 10 would make most
# calls open a fresh TLS connection.
POOL_SIZE = 256
MAX_CLIENTS = 8  # boto3 clients per deployment (one per distinct timeout)
DEFAULT_REGION = "us-west-2"  # LiteLLM's fallback when nothing names a region
_REGION = re.compile(r"^[a-z0-9-]+$")
_ARN_REGION = re.compile(r"^arn:aws[\w-]*:(?:bedrock|sagemaker):([a-z0-9-]+):")

# litellm_params keys that configure the AWS connection; never request parameters.
AWS_KEYS = frozenset({
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
    "aws_profile_name", "aws_role_name", "aws_session_name", "aws_external_id", "aws_sts_endpoint",
    "aws_web_identity_token", "aws_bedrock_runtime_endpoint", "aws_sagemaker_allow_zero_temp",
    "hf_model_name", "model_id",
})

# Error codes whose HTTP status alone would mislead: AWS answers a bad key or signature with 403, but
# for clients it is an authentication failure (401), as OpenAI reports a wrong key.
_STATUS_BY_CODE = {
    "UnrecognizedClientException": 401, "InvalidSignatureException": 401, "ExpiredTokenException": 401,
    "MissingAuthenticationTokenException": 401, "IncompleteSignatureException": 401,
    "InvalidClientTokenId": 401, "SignatureDoesNotMatch": 401, "ExpiredToken": 401,
    "AccessDeniedException": 403, "ResourceNotFoundException": 404,
    "ThrottlingException": 429, "ServiceQuotaExceededException": 429, "ModelNotReadyException": 429,
    "ServiceUnavailableException": 503, "ServiceUnavailable": 503,
    "InternalServerException": 500, "InternalFailure": 500, "InternalStreamFailure": 500,
    "ModelStreamErrorException": 502, "ModelStreamError": 502,
}
_ENDPOINT_MISSING = re.compile(r"^Endpoint \S+ of account \S+ not found")
_TIMEOUT_CODES = frozenset({"ModelTimeoutException", "RequestTimeout", "RequestTimeoutException"})
# How AWS models (Bedrock, and TGI behind SageMaker) say the prompt does not fit the context window.
CONTEXT_ERROR = re.compile(
    r"input is too long|too many (?:input )?tokens|prompt is too long|context (?:length|window)|"
    r"maximum context|exceeds? the maximum (?:number of )?(?:input )?tokens|"
    r"inputs` tokens \+ `max_new_tokens` must be|input validation error: `inputs` must have less than",
    re.I)


class AwsSettings:
    """A deployment's AWS connection, resolved once at start-up from litellm_params and env vars."""

    def __init__(self, config, service, model_hint="", endpoint_keys=("api_base",), endpoint_env=None,
                 bearer_env=None):
        params = config.params
        where = f"model_list[{config.index}].litellm_params"
        for key in ("aws_role_name", "aws_web_identity_token"):
            if params.get(key):
                raise ConfigError(f"{where}.{key}: not supported by this gateway; use aws_access_key_id/"
                                  "aws_secret_access_key, the AWS_* env vars, or aws_profile_name (a profile "
                                  "with role_arn / web_identity_token_file assumes the role)")
        self.service = service
        self.access_key = params.get("aws_access_key_id")
        self.secret_key = params.get("aws_secret_access_key")
        self.session_token = params.get("aws_session_token")
        if not (self.access_key or self.secret_key):  # the env's key pair (and token) belong together
            self.access_key = env_value("AWS_ACCESS_KEY_ID")
            self.secret_key = env_value("AWS_SECRET_ACCESS_KEY")
            self.session_token = self.session_token or env_value("AWS_SESSION_TOKEN")
        # Bedrock API keys: LiteLLM's `api_key`, else AWS_BEARER_TOKEN_BEDROCK when no key pair is set.
        self.bearer_token = params.get("api_key") if bearer_env else None
        if bearer_env and not self.bearer_token and not self.access_key:
            self.bearer_token = env_value(bearer_env) or None
        if bool(self.access_key) != bool(self.secret_key):
            missing = "aws_secret_access_key" if self.access_key else "aws_access_key_id"
            raise ConfigError(f"{where}.{missing}: required when the other half of the AWS key pair is set "
                              "(litellm_params or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
        self.profile = params.get("aws_profile_name") or env_value("AWS_PROFILE_NAME")
        arn_region = _ARN_REGION.match(model_hint or "")
        self.region = (params.get("aws_region_name") or (arn_region and arn_region.group(1))
                       or env_value("AWS_REGION_NAME") or env_value("AWS_REGION")
                       or env_value("AWS_DEFAULT_REGION"))
        if self.region is not None and not _REGION.match(str(self.region)):
            raise ConfigError(f"{where}.aws_region_name: {self.region!r} is not an AWS region name")
        self.endpoint_url = next((params[k] for k in endpoint_keys if params.get(k)), None)
        if not self.endpoint_url and endpoint_env:
            self.endpoint_url = env_value(endpoint_env) or None
        self.endpoint_url = self.endpoint_url.rstrip("/") if self.endpoint_url else None
        if split_credentials(self.endpoint_url)[1] is not None:
            # AWS signs every request (SigV4) in the Authorization header: Basic credentials in the
            # endpoint could never be sent, and boto3 would carry them into its own messages.
            raise ConfigError(f"{where}: the AWS endpoint URL carries user:password credentials, which "
                              "cannot be sent to AWS (requests are signed with SigV4); remove them")
        self.secrets = (self.secret_key, self.session_token, self.access_key, self.bearer_token)
        self._clients = {}
        self._session = None
        self._lock = threading.Lock()  # a gevent lock once the worker is monkey-patched

    def client(self, timeout):
        """The deployment's boto3 client for this timeout, created once (thread/greenlet-safe)."""
        client = self._clients.get(timeout)
        if client is None:
            with self._lock:
                client = self._clients.get(timeout)
                if client is None:
                    if len(self._clients) >= MAX_CLIENTS:  # per-request timeouts: keep the set bounded
                        self._clients.pop(next(iter(self._clients)))
                    client = self._clients[timeout] = self._make_client(timeout)
        return client

    def _make_client(self, timeout):
        import boto3
        from botocore.config import Config

        session = self._session
        if session is None:  # one session per deployment: its loader caches the service model
            session = self._session = boto3.session.Session(
                aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                aws_session_token=self.session_token if self.access_key else None,
                profile_name=self.profile if not self.access_key else None)
        region = self.region or session.region_name or DEFAULT_REGION
        config = Config(retries={"max_attempts": 0}, read_timeout=timeout,
                        connect_timeout=min(CONNECT_TIMEOUT, timeout), max_pool_connections=POOL_SIZE,
                        tcp_keepalive=True)
        if self.bearer_token:
            from botocore import UNSIGNED
            config = config.merge(Config(signature_version=UNSIGNED))
        # The router owns retries and timeouts; the client must neither retry nor wait longer.
        client = session.client(self.service, region_name=region, endpoint_url=self.endpoint_url,
                                config=config)
        if self.bearer_token:
            header = f"Bearer {self.bearer_token}"

            def add_bearer(request, **kwargs):
                request.headers["Authorization"] = header

            client.meta.events.register("before-send", add_bearer)
        return client


def strip_connection_keys(provider):
    """Keep AWS connection keys out of the request defaults (they are not model parameters)."""
    provider.defaults = {k: v for k, v in provider.defaults.items() if k not in AWS_KEYS}


def error_from_aws(provider, status, code, message, headers=None, request_id=None, original_status=None):
    """A GatewayError for an AWS error answer: its code decides the class, its message is kept.

    `original_status` is what the model container answered behind a SageMaker ModelError (424): a 4xx
    there is the client's fault (a 400 here), anything else the upstream's (502).
    """
    code = code or ""
    message = message or f"upstream answered HTTP {status}"
    if code == "ModelError" and isinstance(original_status, int):
        status = original_status if 400 <= original_status < 500 else 502
    text = provider.scrub(f"Upstream error from {provider.name}" + (f" ({code})" if code else "")
                          + f": {message}")
    if code in _TIMEOUT_CODES:
        return errors.UpstreamTimeoutError(f"{text} (deployment: {provider.label})",
                                           upstream_status=status, upstream_request_id=request_id)
    status = _STATUS_BY_CODE.get(code, status or 500) if code != "ModelError" else status
    if code == "ValidationError" and _ENDPOINT_MISSING.search(message):
        status = 404  # SageMaker reports an unknown endpoint as a validation error
    context = status in (400, 413, 422) and CONTEXT_ERROR.search(message)
    retry_after = (headers or {}).get("retry-after")
    extra = {"Retry-After": retry_after} if retry_after and status == 429 else None
    return errors.from_upstream_status(status, text, code="context_length_exceeded" if context else None,
                                       headers=extra, request_id=request_id, deployment=provider.label)


def error_from_http(provider, status, raw, headers):
    """Map a raw AWS REST-JSON error answer (status, body, headers) as botocore would read it."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        data = {}
    data = data if isinstance(data, dict) else {}
    code = (headers.get("x-amzn-errortype") or data.get("__type") or data.get("code") or "").split(":")[0]
    code = code.rsplit("#", 1)[-1]
    message = data.get("message") or data.get("Message")
    if not message and raw:
        message = raw.decode("utf-8", "replace").strip()[:500]
    return error_from_aws(provider, status, code, message, headers, headers.get("x-amzn-requestid"),
                          data.get("OriginalStatusCode"))


def error_from_client_error(provider, exc):
    """Map botocore's ClientError (and EventStreamError, raised mid-stream) to the gateway tree: the
    AWS providers' `map_sdk_error` (pure: it reads the error's `response`)."""
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    status = meta.get("HTTPStatusCode") or 0
    code = error.get("Code") or ""
    if not status:  # an exception event inside a 200 stream carries no status of its own
        status = 400 if code.startswith("validation") else 429 if code.startswith("throttling") else 502
        code = code[:1].upper() + code[1:]  # modelStreamErrorException -> ModelStreamErrorException
    return error_from_aws(provider, status, code, error.get("Message"), meta.get("HTTPHeaders"),
                          meta.get("RequestId"), response.get("OriginalStatusCode"))


def json_body(provider, payload):
    """Parse a JSON answer body (bytes), or a 502 naming the deployment; an error the body carries
    (a model container answering `{"error": ...}` with 200) is raised as the upstream's error."""
    from gateway.wire.upstream import answer_error

    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise errors.UpstreamError(
            f"Upstream answered with a body that is not JSON (deployment: {provider.label})") from exc
    failure = answer_error(provider, data, payload, {})
    if failure is not None:
        raise failure
    return data
