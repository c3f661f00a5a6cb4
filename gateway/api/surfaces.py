"""The JSON endpoints beside chat, each one exchange with a provider's API of the same name:
POST /v1/images/generations (also Azure's deployment path), /v1/moderations, /v1/rerank (and /rerank,
/v2/rerank, as LiteLLM serves it; answered in Cohere's shape). Billed per image, free, and per search
unit or token (gateway/spend/meter.py unit_cost)."""

from flask import Blueprint

from gateway.api.pipeline import serve

bp = Blueprint("surfaces", __name__)


@bp.post("/v1/images/generations")
@bp.post("/images/generations")
def images():
    """Image generation (OpenAI, Azure OpenAI)."""
    return serve("images")


@bp.post("/openai/deployments/<path:model>/images/generations")
def images_for(model):
    """Image generation with the model named in the path (Azure clients)."""
    return serve("images", model)


@bp.post("/v1/moderations")
@bp.post("/moderations")
def moderations():
    """OpenAI's moderation models."""
    return serve("moderations")


@bp.post("/v1/rerank")
@bp.post("/v2/rerank")
@bp.post("/rerank")
def rerank():
    """Rerank documents for a query (Cohere, and OpenAI-compatible rerank servers: vLLM, Together, ...)."""
    return serve("rerank")
