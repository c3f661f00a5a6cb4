"""GET /spend/logs: the spend ledger, one row per request, for the master key."""

from datetime import datetime
from datetime import time as day_time
from datetime import timezone

from flask import Blueprint
from flask import current_app
from flask import request

from gateway import errors
from gateway.api.pipeline import json_response
from gateway.access.keys import hash_key

bp = Blueprint("spend", __name__)
MAX_ROWS = 10_000


def _when(name, end=False):
    """An ISO date or datetime query parameter (a bare date covers its whole day)."""
    value = request.args.get(name)
    if not value:
        return None
    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d").date()
            return datetime.combine(day, day_time.max if end else day_time.min, tzinfo=timezone.utc)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # in UTC: SQLite compares stored times by their digits, so every value must share one offset
        return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise errors.BadRequestError(f"`{name}` must be a date (2024-01-31) or an ISO 8601 time, "
                                     "between years 1 and 9999 in UTC.", param=name) from None


def _text(*names):
    """A text filter (under the first of its names that is set): PostgreSQL refuses a NUL in text."""
    for name in names:
        value = request.args.get(name)
        if value:
            if "\x00" in value:
                raise errors.BadRequestError(f"`{name}` must not contain NUL characters.", param=name)
            return value
    return None


@bp.get("/spend/logs")
def logs():
    """Rows newest first; filters: api_key (a key or its hash), start_date, end_date, model,
    request_id, user_id; limit (default 1000). A caller that does not see everything (an internal
    user) gets the rows of its own keys only."""
    gateway = current_app.extensions["gateway"]
    ledger = gateway.spend.ledger
    if ledger is None:
        raise errors.NotFoundError("Spend logs are turned off (general_settings.disable_spend_logs).",
                                   code="spend_logs_disabled")
    key = _text("api_key", "key")
    model, request_id, user_id = _text("model"), _text("request_id"), _text("user_id")
    from gateway.api.hierarchy_views import scope
    seen = scope()
    if not seen.all:  # an internal user reads the rows of its own keys, whatever it asks
        if seen.own is None:
            raise errors.PermissionDeniedError("This key belongs to no user.", code="not_your_user")
        user_id = seen.own
    digest = None
    if key:
        digest = key if len(key) == 64 and all(c in "0123456789abcdef" for c in key) else hash_key(key)
    try:
        limit = int(request.args.get("limit", 1000))
    except ValueError:
        limit = -1
    if not 1 <= limit <= MAX_ROWS:
        raise errors.BadRequestError(f"`limit` must be a whole number from 1 to {MAX_ROWS}.", param="limit")
    start, end = _when("start_date"), _when("end_date", end=True)
    gateway.auth.keys.get()  # 503 while the database cannot be opened
    from sqlalchemy.exc import SQLAlchemyError
    try:
        rows = ledger.logs(key_hash=digest, start=start, end=end, model=model, request_id=request_id,
                           user_id=user_id, limit=limit)
    except SQLAlchemyError as exc:
        raise errors.ServiceUnavailableError("The spend store is unavailable; retry shortly.",
                                             code="key_store_unavailable", headers={"Retry-After": "2"}) from exc
    return json_response(rows)
