"""OpenAI's Responses API: POST /v1/responses (and /responses), GET and DELETE /v1/responses/{id},
GET /v1/responses/{id}/input_items.

The gateway keeps the conversation state itself, in its database (storage/responses.py), whatever
the provider: a call with `previous_response_id` reads the previous row once (404 unless the caller's
key, or its team, made it) and sends the whole conversation upstream; a call with `store` (the
default) writes its row before the answer completes (before a stream's `response.completed`), so
the next call, on any worker or instance, finds it. Nothing depends on the spend ledger's flush.
"""

from flask import Blueprint
from flask import current_app
from flask import g
from flask import request

from gateway import errors
from gateway.api.pipeline import json_response
from gateway.api.pipeline import serve

bp = Blueprint("responses", __name__)

MAX_ITEMS_PAGE = 100


@bp.post("/v1/responses")
@bp.post("/responses")
def create_response():
    """Create a model response (stream or not); translated through chat off OpenAI."""
    return serve("responses")


@bp.get("/v1/responses/<response_id>")
@bp.get("/responses/<response_id>")
def get_response(response_id):
    """A stored response, to the key (or team) that made it."""
    return json_response(_row(response_id).response)


@bp.delete("/v1/responses/<response_id>")
@bp.delete("/responses/<response_id>")
def delete_response(response_id):
    """Delete a stored response (the key, or team, that made it)."""
    if not _store().delete(response_id, _rules()):
        raise _not_found(response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


@bp.get("/v1/responses/<response_id>/input_items")
@bp.get("/responses/<response_id>/input_items")
def list_input_items(response_id):
    """The input items of a stored response's turn, newest first unless `order=asc`; `limit` (1-100,
    default 20) and `after` (an item id) page through them."""
    items = list(_row(response_id).input_items)
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise errors.BadRequestError("order must be asc or desc.", param="order")
    if order == "desc":
        items.reverse()
    try:
        limit = int(request.args.get("limit", 20))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_ITEMS_PAGE:
        raise errors.BadRequestError(f"limit must be a whole number from 1 to {MAX_ITEMS_PAGE}.", param="limit")
    after = request.args.get("after")
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise errors.BadRequestError("after must be the id of one of this response's input items.",
                                         param="after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    return json_response({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                          "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit})


def _store():
    return current_app.extensions["gateway"].responses


def _rules():
    caller = g.get("caller")
    return caller.rules if caller is not None else None


def _row(response_id):
    row = _store().load(response_id, _rules())
    if row is None:
        raise _not_found(response_id)
    return row


def _not_found(response_id):
    return errors.NotFoundError(f"Response with id '{response_id[:64]}' not found.", param="response_id",
                                code="response_not_found")
