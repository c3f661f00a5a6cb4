"""POST /chat/completions, with the /v1, /engines and Azure deployment path styles."""

from flask import Blueprint

from gateway.api.pipeline import serve

bp = Blueprint("chat", __name__)


@bp.post("/chat/completions")
@bp.post("/v1/chat/completions")
def chat_completions():
    """OpenAI chat completions."""
    return serve("chat")


@bp.post("/engines/<path:model>/chat/completions")
@bp.post("/v1/engines/<path:model>/chat/completions")
@bp.post("/openai/deployments/<path:model>/chat/completions")
def chat_completions_for(model):
    """Chat completions with the model named in the path (pre-1.0 SDK engines, Azure clients)."""
    return serve("chat", model)
