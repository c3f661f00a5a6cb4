"""GET /metrics: Prometheus text exposition of the instance's counters (gateway/metrics.py).

Master key only (route policy `admin`: open when no master key is set); `general_settings.metrics_public:
true` opens it to scrapers without a key. Labels never carry a key, a key's hash or its alias.
"""

from flask import Blueprint
from flask import Response
from flask import current_app

from gateway.telemetry.metrics import CONTENT_TYPE

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    """Every worker answers with the whole instance's totals: the counters live in shared memory."""
    text = current_app.extensions["metrics"].render()
    return Response(text, content_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})
