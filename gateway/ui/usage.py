"""The Logs and Usage pages: the spend ledger through /spend/logs (filters, keyset pages, one row's
details) and spend per day through /global/spend/report (by team, end user, key or model; a date
range; an SVG chart drawn here; CSV export), each called as the signed-in caller."""

import csv
import io
import math
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
DIMENSIONS = {"team": "Team", "end_user": "End user", "key": "Key", "model": "Model"}
DEFAULT_DAYS = 7
MAX_FILLED_DAYS = 731
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
    """`days` with a zero for each day from `first` to `last` ('YYYY-MM-DD') that had no spend (the
    chart's x axis is the range; ranges over two years keep only their days with spend)."""
    try:
        start, end = datetime.strptime(first, "%Y-%m-%d").date(), datetime.strptime(last, "%Y-%m-%d").date()
    except (TypeError, ValueError):
        return days
    if not 0 <= (end - start).days <= MAX_FILLED_DAYS:
        return days
    seen = {day: (day, spend, tokens) for day, spend, tokens in days}
    span = (start + timedelta(days=i) for i in range((end - start).days + 1))
    return [seen.get(str(day), (str(day), 0.0, 0)) for day in span]


def usage_table(report, dimension, names, first=None, last=None):
    """(days, groups) from /global/spend/report (group_by=team or customer): days ascending as
    (day, total spend, total tokens), every day of first..last; groups as [label, spend, tokens,
    {day: spend}], largest first."""
    days, groups = [], {}
    for entry in report:
        day = entry["group_by_day"][:10]
        day_spend, day_tokens = [], 0
        for group in entry.get("teams") or entry.get("customers") or ():
            for item in group.get("metadata") or ():
                if dimension == "team":
                    label = group.get("team_name")
                elif dimension == "end_user":
                    label = group.get("customer") or "(none)"
                elif dimension == "key":
                    label = names.get(item.get("api_key")) or item.get("api_key") or "(master key)"
                else:
                    label = item.get("model") or "(none)"
                row = groups.setdefault(label, [label, [], 0, {}])
                row[1].append(item["spend"])
                row[2] += item["total_tokens"]
                row[3][day] = row[3].get(day, 0.0) + item["spend"]
                day_spend.append(item["spend"])
                day_tokens += item["total_tokens"]
        days.append((day, math.fsum(day_spend), day_tokens))
    days = every_day(days, first, last)
    table = [[label, math.fsum(spends), tokens, per_day] for label, spends, tokens, per_day in groups.values()]
    table.sort(key=lambda row: (-row[1], str(row[0])))
    return days, table


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
    """(start, end, dimension, days, table, message) of the query's report."""
    start, end = _range()
    dimension = request.args.get("by") if request.args.get("by") in DIMENSIONS else "team"
    answer = api("GET", "/global/spend/report", query={
        "start_date": start, "end_date": end, "group_by": "customer" if dimension == "end_user" else "team"})
    if not answer.ok:
        return start, end, dimension, [], [], answer.error
    names = {}
    if dimension == "key":
        listed = api("GET", "/key/list")
        if listed.ok:
            names = {info["token"]: info.get("key_alias") or info.get("key_name") for info in listed.body["keys"]}
    days, table = usage_table(answer.body, dimension, names, start, end)
    return start, end, dimension, days, table, None


@bp.get("/usage")
def usage():
    start, end, dimension, days, table, message = _report()
    return page("usage.html", status=200 if message is None else 403, start=start, end=end, dimension=dimension,
                dimensions=DIMENSIONS, days=days, table=table, chart=chart(days), message=message,
                total=math.fsum(spend for _, spend, _ in days), tokens=sum(t for _, _, t in days))


@bp.get("/usage.csv")
def usage_csv():
    """The report as CSV: one line per (day, group) with spend and the group's tokens over the range."""
    start, end, dimension, days, table, message = _report()
    if message is not None:
        return page("error.html", status=403, message=message)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", DIMENSIONS[dimension].lower().replace(" ", "_"), "spend_usd"])
    for day, _, _ in days:
        for label, _, _, per_day in table:
            if day in per_day:
                writer.writerow([day, _cell(label), f"{per_day[day]:.10g}"])
    return Response(out.getvalue(), mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename=usage-{dimension}-{start}-{end}.csv"})


def _cell(value):
    """A CSV cell a spreadsheet will not run as a formula (=, +, -, @ first)."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
