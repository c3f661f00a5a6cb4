"""LiteLLM's spend report routes over the ledger, for proxy admins and their viewers:
/global/spend/report, /global/spend/keys, /global/spend/models, /global/spend/teams and
/global/spend/end_users; and /spend/daily, the gateway's own (from the daily roll-ups; the admin UI's
Usage page reads it). The queries: gateway/spend/reports.py."""

from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask import Blueprint
from flask import current_app
from flask import request

from gateway import errors
from gateway.api.body import parse_body
from gateway.api.pipeline import json_response
from gateway.api.pipeline import read_body
from gateway.api.spend import MAX_ROWS
from gateway.api.spend import check_text
from gateway.api.spend import key_digest
from gateway.api.spend import parse_when
from gateway.api.spend import read
from gateway.api.spend import spend_db
from gateway.api.spend import text
from gateway.api.spend import when
from gateway.api.spend import whole_number

bp = Blueprint("reports", __name__)
GROUPS = ("team", "customer", "api_key")


@bp.get("/global/spend/report")
def spend_report():
    """Spend from start_date to end_date (both required; a bare end date covers its day) by UTC day
    and team (group_by=team, the default) or end user (group_by=customer), or by key over the whole
    range (group_by=api_key, or api_key= / internal_user_id= for one key / one user's keys);
    team_id and customer_id together: by day, per (team, end user). Any filter given narrows the
    report."""
    from gateway.spend import reports
    start, end = when("start_date"), when("end_date", end=True)
    for name, value in (("start_date", start), ("end_date", end)):
        if value is None:
            raise errors.BadRequestError("Please provide start_date and end_date.", param=name)
    group_by = request.args.get("group_by") or "team"
    if group_by not in GROUPS:
        raise errors.BadRequestError(f"`group_by` must be one of {', '.join(GROUPS)}.", param="group_by")
    key = text("api_key")
    filters = {"key_hash": key_digest(key) if key else None, "user_id": text("internal_user_id"),
               "team_id": text("team_id"), "end_user": text("customer_id")}
    if key or filters["user_id"] or group_by == "api_key":
        query = reports.report_by_key
    elif filters["team_id"] and filters["end_user"]:
        query = reports.report_by_team_and_customer
    else:
        query = reports.report_by_customer if group_by == "customer" else reports.report_by_team
    return json_response(read(query, spend_db(), start, end, **filters))


@bp.get("/spend/daily")
def spend_daily():
    """Spend, tokens and calls per UTC day from start_date to end_date (dates; default: the last 7
    days, at most 366) and per group_by (team, key, model, user, organization or end_user): the
    `limit` (default 100) largest groups with their spend per day, the rest summed in `others`.
    Filters: api_key, user_id, team_id, organization_id, model (not with group_by=end_user)."""
    from gateway.spend import reports
    today = datetime.now(timezone.utc).date()
    first = _day("start_date", today - timedelta(days=6))
    last = _day("end_date", today)
    if not timedelta(0) <= last - first <= timedelta(days=365):
        raise errors.BadRequestError("end_date must be from start_date to 365 days after it.", param="end_date")
    group_by = request.args.get("group_by") or "team"
    if group_by not in reports.DAILY_GROUPS:
        raise errors.BadRequestError(f"`group_by` must be one of {', '.join(reports.DAILY_GROUPS)}.",
                                     param="group_by")
    key = text("api_key")
    filters = {"key_hash": key_digest(key) if key else None, "user_id": text("user_id"),
               "team_id": text("team_id"), "organization_id": text("organization_id"), "model": text("model")}
    if group_by == "end_user" and any(v is not None for v in filters.values()):
        raise errors.BadRequestError("group_by=end_user takes no other filter.", param="group_by")
    limit = whole_number("limit", reports.TOP_GROUPS, 1000)
    return json_response(read(reports.daily_totals, spend_db(), str(first), str(last), group_by, limit=limit,
                              **filters))


def _day(name, default):
    """A YYYY-MM-DD query parameter as a date (`default` when absent)."""
    value = request.args.get(name)
    if not value:
        return default
    try:
        return datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise errors.BadRequestError(f"`{name}` must be a date like 2024-01-31.", param=name) from None


@bp.get("/global/spend/keys")
def spend_keys():
    """The keys that spent most in the last 30 days (all of them, or the top `limit`)."""
    from gateway.spend import reports
    limit = whole_number("limit", None, MAX_ROWS)
    return json_response(read(reports.top_keys, spend_db(), reports.recent(), limit=limit))


@bp.get("/global/spend/models")
def spend_models():
    """The models that cost most in the last 30 days (the top `limit`, default 10)."""
    from gateway.spend import reports
    limit = whole_number("limit", 10, MAX_ROWS)
    return json_response(read(reports.top_models, spend_db(), reports.recent(), limit=limit))


@bp.get("/global/spend/teams")
def spend_teams():
    """Spend per UTC day per team over the last 30 days."""
    from gateway.spend import reports
    return json_response(read(reports.teams_daily, spend_db(), reports.recent()))


@bp.route("/global/spend/end_users", methods=["GET", "POST"])
def spend_end_users():
    """The top 100 end users by spend from startTime (default 30 days ago) to endTime (default now),
    of one key's calls when api_key is given: a JSON body on POST (LiteLLM's way), or the same names
    as query parameters on GET."""
    from gateway.spend import reports
    params = _end_user_params()
    now = datetime.now(timezone.utc)
    start = parse_when("startTime", params["startTime"]) if params.get("startTime") else now - timedelta(days=30)
    end = parse_when("endTime", params["endTime"]) if params.get("endTime") else now
    key = check_text("api_key", params["api_key"]) if params.get("api_key") else None
    return json_response(read(reports.end_users, spend_db(), start, end, key_hash=key_digest(key) if key else None))


def _end_user_params():
    """{api_key, startTime, endTime} from the body (POST; an empty body means none) or the query."""
    if request.method == "GET":
        return {name: request.args.get(name) for name in ("api_key", "startTime", "endTime")}
    raw = read_body(current_app.extensions["gateway"].settings.max_body_bytes)
    data = parse_body(raw) if raw.strip() else {}
    for name in ("api_key", "startTime", "endTime"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise errors.BadRequestError(f"`{name}` must be a string.", param=name)
    return data
