"""POST /embeddings, with the /v1, /engines and Azure path styles."""

from flask import Blueprint

from gateway.api.pipeline import serve

bp = Blueprint("embeddings", __name__)


@bp.post("/embeddings")
@bp.post("/v1/embeddings")
def embeddings():
    """OpenAI embeddings."""
    return serve("embeddings")


@bp.post("/engines/<path:model>/embeddings")
@bp.post("/v1/engines/<path:model>/embeddings")
@bp.post("/openai/deployments/<path:model>/embeddings")
def embeddings_for(model):
    """Embeddings with the model named in the path."""
    return serve("embeddings", model)
