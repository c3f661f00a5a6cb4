"""GET /spend/logs: the spend ledger, one row per request (proxy admins and their viewers see every
row, other users the rows of their own keys); and
the query-parameter readers the spend report routes (gateway/api/reports.py) share with it."""

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
MAX_TEXT = 1024  # longest text filter (ids and names are at most 255 characters; a key or its hash less)


def parse_when(name, value, end=False):
    """An ISO date or datetime (a bare date covers its whole day), as an aware UTC datetime."""
    if not isinstance(value, str):
        raise errors.BadRequestError(f"`{name}` must be a date (2024-01-31) or an ISO 8601 time.", param=name)
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


def when(name, end=False):
    """An ISO date or datetime query parameter, or None when it is not given."""
    value = request.args.get(name)
    return parse_when(name, value, end) if value else None


def check_text(name, value):
    """A text filter as given, refused (400 naming it) when PostgreSQL could not take it (a NUL) or
    it is longer than any stored value could be."""
    if not isinstance(value, str):
        raise errors.BadRequestError(f"`{name}` must be a string.", param=name)
    if "\x00" in value:
        raise errors.BadRequestError(f"`{name}` must not contain NUL characters.", param=name)
    if len(value) > MAX_TEXT:
        raise errors.BadRequestError(f"`{name}` must be at most {MAX_TEXT} characters.", param=name)
    return value


def cursor(name):
    """A keyset cursor, `<ISO time>,<request id>` (a row's startTime and request_id), as
    (aware UTC time, request id), or None."""
    value = text(name)
    if value is None:
        return None
    moment, _, request_id = value.rpartition(",")
    if not moment or not request_id:
        raise errors.BadRequestError(f"`{name}` must be a row's startTime and request_id, joined by a comma.",
                                     param=name)
    return parse_when(name, moment), request_id


def text(*names):
    """A text filter (under the first of its names that is set), or None."""
    for name in names:
        value = request.args.get(name)
        if value:
            return check_text(name, value)
    return None


def key_digest(key):
    """A key's hash from the key itself or its hash (64 lowercase hex digits, as answers show it)."""
    return key if len(key) == 64 and all(c in "0123456789abcdef" for c in key) else hash_key(key)


def whole_number(name, default, largest):
    """A query parameter that must be a whole number from 1 to `largest` (`default` when absent)."""
    value = request.args.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 1 <= number <= largest:
        raise errors.BadRequestError(f"`{name}` must be a whole number from 1 to {largest}.", param=name)
    return number


def spend_db():
    """The database the ledger writes to: a 404 when spend logs are turned off, a 503 while it is down."""
    gateway = current_app.extensions["gateway"]
    if gateway.spend.ledger is None:
        raise errors.NotFoundError("Spend logs are turned off (general_settings.disable_spend_logs).",
                                   code="spend_logs_disabled")
    gateway.auth.keys.get()  # 503 while the database cannot be opened
    return gateway.store.get()


def read(query, *args, **kwargs):
    """Run a report query; a database error is a 503 the client may retry."""
    from sqlalchemy.exc import SQLAlchemyError
    try:
        return query(*args, **kwargs)
    except SQLAlchemyError as exc:
        raise errors.ServiceUnavailableError("The spend store is unavailable; retry shortly.",
                                             code="key_store_unavailable", headers={"Retry-After": "2"}) from exc


@bp.get("/spend/logs")
def logs():
    """Rows newest first; filters: api_key (a key or its hash), start_date, end_date, model,
    request_id, user_id, team_id, organization_id, end_user (or customer_id, end_user_id), status;
    limit (default 1000); `before` (the last row's `startTime,request_id`) pages on past it. A caller
    that does not see everything (an internal user) gets the rows of its own keys only, whatever it
    asks."""
    from gateway.spend import reports
    key = text("api_key", "key")
    filters = {"key_hash": key_digest(key) if key else None, "model": text("model"),
               "request_id": text("request_id"), "user_id": text("user_id"), "team_id": text("team_id"),
               "organization_id": text("organization_id"),
               "end_user": text("end_user", "customer_id", "end_user_id"), "status": text("status"),
               "before": cursor("before")}
    limit = whole_number("limit", 1000, MAX_ROWS)
    start, end = when("start_date"), when("end_date", end=True)
    from gateway.api.hierarchy_views import scope
    seen = scope()
    if not seen.all:
        if seen.own is None:
            raise errors.PermissionDeniedError("This key belongs to no user.", code="not_your_user")
        filters["user_id"] = seen.own
    return json_response(read(reports.logs, spend_db(), limit=limit, start=start, end=end, **filters))
