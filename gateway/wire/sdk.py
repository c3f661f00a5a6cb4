"""SDK calls (boto3 for Bedrock and SageMaker): the one place botocore's and urllib3's errors of the
AWS path become GatewayErrors.

A provider whose I/O is an SDK implements the `invoke` hook; the shared flow (wire.upstream) hands
it an SdkIO, its only way to run a client method, read a body or translate an event stream. An
error *answer* (botocore's ClientError) is the provider's to read, as `map_error` is for HTTP: it
goes to the provider's pure `map_sdk_error`. botocore is imported inside functions only: a gateway
with no AWS deployment never loads it.
"""

import orjson

from gateway import errors
from gateway.wire.transport import CONNECT_TIMEOUT
from gateway.wire.upstream import ChunkStream

# What an upstream's data that the translator cannot read raises (mapped to a 502 mid-stream).
_UNREADABLE = (orjson.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError, ValueError)


def map_exception(provider, exc, timeout):
    """The GatewayError for anything an SDK call or stream raises; None when it is not an AWS/IO error."""
    from botocore import exceptions as bx
    from urllib3 import exceptions as ux

    if isinstance(exc, errors.GatewayError):
        return exc
    if isinstance(exc, bx.ClientError):
        return provider.map_sdk_error(exc)
    if isinstance(exc, bx.ParamValidationError):
        return errors.BadRequestError(provider.scrub(f"Request rejected before sending to {provider.name}: "
                                                     f"{exc}"), param="messages")
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return errors.ServiceUnavailableError(
            f"No AWS credentials are available for deployment {provider.label}: set aws_access_key_id/"
            "aws_secret_access_key (or AWS_* env vars, or aws_profile_name).", code="upstream_credentials")
    if isinstance(exc, (bx.ConnectTimeoutError,)):
        return errors.UpstreamTimeoutError(
            f"Upstream did not accept a connection within {min(CONNECT_TIMEOUT, timeout):g}s "
            f"(deployment: {provider.label})")
    if isinstance(exc, (bx.ReadTimeoutError, ux.ReadTimeoutError)):
        return errors.UpstreamTimeoutError(f"Upstream timed out after {timeout:g}s (deployment: {provider.label})")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.HTTPClientError,
                        ux.HTTPError, OSError)):
        return errors.UpstreamConnectionError(
            f"Could not reach upstream (deployment: {provider.label}): {type(exc).__name__}")
    if isinstance(exc, bx.BotoCoreError):
        return errors.UpstreamError(provider.scrub(f"AWS client error (deployment: {provider.label}): "
                                                   f"{type(exc).__name__}"))
    return None


def _raise_mapped(provider, exc, timeout, unreadable=False):
    """Re-raise `exc` as its GatewayError (unreadable upstream data too, when asked); else as it is."""
    mapped = map_exception(provider, exc, timeout)
    if mapped is None and unreadable and isinstance(exc, _UNREADABLE):
        mapped = errors.UpstreamError(
            f"Upstream sent a stream event this gateway cannot read (deployment: {provider.label})")
    if mapped is None or mapped is exc:
        raise exc
    raise mapped from exc


def translated(provider, events, translate, finish, timeout):
    """OpenAI chunks from SDK stream events: translate(event) per event, finish() at the end."""
    try:
        for event in events:
            yield from translate(event)
        yield from finish()
    except Exception as exc:
        _raise_mapped(provider, exc, timeout, unreadable=True)


class SdkIO:
    """An `invoke` hook's way to the network: SDK calls, body reads and event streams, each
    failure raised as its GatewayError."""

    __slots__ = ("provider", "timeout", "drop_params")

    def __init__(self, provider, ctx):
        self.provider = provider
        self.timeout = ctx.timeout
        self.drop_params = ctx.drop_params

    def call(self, method, **kwargs):
        """Run one bound SDK client method (`client.converse`) with these arguments."""
        try:
            return method(**kwargs)
        except Exception as exc:
            _raise_mapped(self.provider, exc, self.timeout)

    def read(self, body):
        """Read an SDK StreamingBody whole."""
        try:
            return body.read()
        except Exception as exc:
            _raise_mapped(self.provider, exc, self.timeout)

    def stream(self, endpoint, events, translate, finish):
        """A ChunkStream over an SDK EventStream: translate(event) per event, finish() at its end; the
        connection goes back to the pool when the stream finished."""
        chunks = translated(self.provider, events, translate, finish, self.timeout)
        raw = getattr(events, "_raw_stream", None)
        if raw is not None and hasattr(raw, "release_conn"):
            return ChunkStream(self.provider, endpoint, chunks, raw)  # urllib3 response: drain or cut on close
        return ChunkStream(self.provider, endpoint, chunks, on_close=events.close)
