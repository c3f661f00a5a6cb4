"""POST /completions (legacy text completions), with the /v1, /engines and Azure path styles."""

from flask import Blueprint

from gateway.api.pipeline import serve

bp = Blueprint("completions", __name__)


@bp.post("/completions")
@bp.post("/v1/completions")
def completions():
    """OpenAI text completions."""
    return serve("completions")


@bp.post("/engines/<path:model>/completions")
@bp.post("/v1/engines/<path:model>/completions")
@bp.post("/openai/deployments/<path:model>/completions")
def completions_for(model):
    """Text completions with the model named in the path."""
    return serve("completions", model)
