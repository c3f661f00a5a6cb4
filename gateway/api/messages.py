"""Anthropic's Messages API: POST /v1/messages (also under /anthropic, as LiteLLM serves it) and
/v1/messages/count_tokens. Keys come as `x-api-key` or `Authorization: Bearer`; errors are
Anthropic's envelope (app.py renders them for this blueprint)."""

from flask import Blueprint

from gateway.api.pipeline import count_tokens
from gateway.api.pipeline import serve

bp = Blueprint("messages", __name__)


@bp.post("/v1/messages")
@bp.post("/anthropic/v1/messages")
def create_message():
    """Anthropic Messages: passed through to Anthropic deployments, translated through chat for others."""
    return serve("messages")


@bp.post("/v1/messages/count_tokens")
@bp.post("/anthropic/v1/messages/count_tokens")
def count_message_tokens():
    """Anthropic's token count: the deployment's own (Anthropic), else the gateway's estimate."""
    return count_tokens()
