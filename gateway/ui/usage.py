"""The Logs and Usage pages: the spend ledger through /spend/logs (filters, keyset pages, one row's
details) and spend per day through /spend/daily (by team, key, model, user, organization or end
user; a date range; an SVG chart drawn here; CSV export), each called as the signed-in caller."""

import csv
import io
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask import Response
from flask import request

from gateway.ui.web import api
from gateway.ui.web import bp
from gateway.ui.web import page

PAGE_ROWS = 50
LOG_FILTERS = ("api_key", "model", "team_id", "user_id", "end_user", "status", "request_id", "start_date",
               "end_date")
DIMENSIONS = {"team": "Team", "key": "Key", "model": "Model", "user": "User", "organization": "Organization",
              "end_user": "End user"}
DEFAULT_DAYS = 7
CHART = {"width": 720, "height": 180, "pad": 24}


# ---- Logs --------------------------------------------------------------------------------------------

@bp.get("/logs")
def logs():
    filters = {name: (request.args.get(name) or "").strip()[:1024] for name in LOG_FILTERS}
    query = {name: value for name, value in filters.items() if value}
    query["limit"] = PAGE_ROWS + 1
    before = request.args.get("before")
    if before:
        query["before"] = before[:200]
    answer = api("GET", "/spend/logs", query=query)
    rows = answer.body if answer.ok and isinstance(answer.body, list) else []
    more = len(rows) > PAGE_ROWS
    rows = rows[:PAGE_ROWS]
    following = f"{rows[-1]['startTime']},{rows[-1]['request_id']}" if more and rows else None
    return page("logs.html", status=200 if answer.ok else answer.status, rows=rows, filters=filters,
                kept={name: value for name, value in filters.items() if value}, following=following,
                message=answer.error, paged=bool(before))


@bp.get("/logs/<request_id>")
def log_row(request_id):
    answer = api("GET", "/spend/logs", query={"request_id": request_id[:64], "limit": 1})
    rows = answer.body if answer.ok and isinstance(answer.body, list) else []
    if not rows:
        return page("error.html", status=answer.status if not answer.ok else 404,
                    message=answer.error or "No such request in the spend ledger (yet).")
    row = rows[0]
    return page("log.html", row=row, latency_ms=_latency_ms(row))


def _latency_ms(row):
    try:
        start = datetime.fromisoformat(row["startTime"])
        end = datetime.fromisoformat(row["endTime"])
    except (KeyError, TypeError, ValueError):
        return None
    return round((end - start).total_seconds() * 1000, 1)


# ---- Usage -------------------------------------------------------------------------------------------

def _range():
    """(start, end) 'YYYY-MM-DD' from the query, the last DEFAULT_DAYS days by default."""
    today = datetime.now(timezone.utc).date()
    start = (request.args.get("start_date") or "").strip()[:10] or str(today - timedelta(days=DEFAULT_DAYS - 1))
    end = (request.args.get("end_date") or "").strip()[:10] or str(today)
    return start, end


def every_day(days, first, last):
    """(day, spend, tokens) for each day from `first` to `last`, zero where /spend/daily had none."""
    seen = {day["day"]: (day["day"], day["spend"], day["total_tokens"]) for day in days}
    try:
        start, end = datetime.strptime(first, "%Y-%m-%d").date(), datetime.strptime(last, "%Y-%m-%d").date()
    except (TypeError, ValueError):
        return sorted(seen.values())
    span = (start + timedelta(days=i) for i in range((end - start).days + 1))
    return [seen.get(str(day), (str(day), 0.0, 0)) for day in span]


def label(group, dimension):
    """What a group is called on the page: a team's alias or a key's alias (else their ids)."""
    if group["group"] is None:
        return {"key": "(master key)", "team": "(no team)"}.get(dimension, "(none)")
    return group.get("name") or group["group"]


def chart(days):
    """Bars of spend per day, as SVG shapes for the template (no script, no inline style)."""
    width, height, pad = CHART["width"], CHART["height"], CHART["pad"]
    top = max((spend for _, spend, _ in days), default=0.0) or 1.0
    step = (width - 2 * pad) / max(len(days), 1)
    bars = []
    for i, (day, spend, tokens) in enumerate(days):
        tall = (height - 2 * pad) * spend / top
        bars.append({"x": round(pad + i * step + step * 0.1, 1), "y": round(height - pad - tall, 1),
                     "w": round(step * 0.8, 1), "h": round(tall, 1), "day": day, "spend": spend,
                     "tokens": tokens, "label_x": round(pad + i * step + step / 2, 1)})
    return {"width": width, "height": height, "pad": pad, "bars": bars, "top": top}


def _report():
    """(start, end, dimension, /spend/daily's answer or None, message)."""
    start, end = _range()
    dimension = request.args.get("by") if request.args.get("by") in DIMENSIONS else "team"
    answer = api("GET", "/spend/daily", query={"start_date": start, "end_date": end, "group_by": dimension})
    return start, end, dimension, answer.body if answer.ok else None, answer.error, answer.status


@bp.get("/usage")
def usage():
    start, end, dimension, report, message, status = _report()
    days = every_day(report["days"], start, end) if report else []
    groups = [(label(g, dimension), g["spend"], g["total_tokens"], g["requests"]) for g in (report or {}).get("groups", ())]
    return page("usage.html", status=status, start=start, end=end, dimension=dimension, dimensions=DIMENSIONS,
                days=days, groups=groups, others=(report or {}).get("others"), chart=chart(days), message=message,
                total=(report or {}).get("spend", 0.0), tokens=(report or {}).get("total_tokens", 0),
                requests=(report or {}).get("requests", 0))


@bp.get("/usage.csv")
def usage_csv():
    """The report as CSV: one line per day and group (the largest groups), spend in USD."""
    start, end, dimension, report, message, status = _report()
    if report is None:
        return page("error.html", status=status, message=message)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", dimension, "spend_usd"])
    for group in report["groups"]:
        for day in sorted(group["days"]):
            writer.writerow([day, _cell(label(group, dimension)), f"{group['days'][day]:.10g}"])
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename=usage-{dimension}-{start}-{end}.csv"})


def _cell(value):
    """A CSV cell a spreadsheet will not run as a formula (=, +, -, @ first)."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
