"""create_app(settings): wires blueprints, auth, request ids and the one error renderer."""

import logging
import os
import random
import sys
import time
from dataclasses import dataclass

from flask import Flask
from flask import g
from flask import request
from werkzeug.exceptions import HTTPException

from gateway import errors
from gateway.api.pipeline import json_response
from gateway.access.auth import Authenticator
from gateway.access.auth import LazyKeys
from gateway.routing.router import Router
from gateway.config.settings import Settings
from gateway.storage import Store
from gateway.wire.transport import Transport
from gateway.providers.messages import error_body as anthropic_error
from gateway.ui import CALLER as UI_CALLER

log = logging.getLogger("gateway")

# Request ids: 128 random bits from a generator of our own, seeded from os.urandom and seeded
# again in every forked worker (so no two workers share a sequence). A sixth of uuid4's cost, which
# reads the kernel's random source on every call; the ids stay unique across workers and instances,
# which the spend ledger relies on when it replays a journal once per request id.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id():
    return f"req_{_ids.getrandbits(128):032x}"


# werkzeug's HTTP errors, expressed in our tree so they render like every other error.
_HTTP_ERRORS = {404: errors.NotFoundError, 405: errors.BadRequestError, 413: errors.PayloadTooLargeError}


@dataclass
class Gateway:
    """Per-worker state shared by the views."""

    settings: Settings
    router: Router
    transport: Transport
    auth: Authenticator
    spend: object = None  # gateway.spend.meter.SpendTracker
    observers: object = None  # gateway.telemetry.events.Observers: logs, metrics, callbacks, tracing
    cache: object = None  # gateway.cache.ResponseCache, or None when caching is off
    store: object = None  # gateway.storage.Store (keys and spend), or None without a master key
    models: object = None  # gateway.routing.dbmodels.ModelSync with store_model_in_db, else None
    responses: object = None  # gateway.storage.responses.ResponseStore (the Responses API's state)
    warm: bool = False  # warm(app) ran: what the configuration needs is open (gunicorn workers)
    jobs: object = None  # gateway.storage.jobs.Jobs: the cluster-wide background jobs, else None


def configure_logging(debug, json_logs=False):
    """One line per record on stderr (a JSON object with `json_logs`); DEBUG with `--debug` /
    `set_verbose`."""
    root = logging.getLogger()
    if not root.handlers:  # leave logging alone when the host (a test runner, an app) set it up
        from gateway.telemetry.requestlog import JsonFormatter
        from gateway.telemetry.requestlog import TextFormatter
        from gateway.telemetry.requestlog import gunicorn_records
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
        root.addHandler(handler)
        # Our formats print no thread or process: spare every record looking them up. gunicorn's
        # format prints the process: its records get it from a filter (and are cleaned like ours).
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        logging.getLogger("gunicorn.error").addFilter(gunicorn_records)
    logging.getLogger("gateway").setLevel(logging.DEBUG if debug else logging.INFO)


def open_key_service(settings, state=None, store=None, router=None):
    """The virtual-key service over the worker's database (`store`; one of its own when None), which
    is opened and migrated on first use; `state` (the router's shared state) carries word of a
    changed key to the other workers at once; `router` names the access groups."""
    from gateway.access.keys import KeyService
    store = store if store is not None else Store.for_settings(settings)
    return KeyService(store.get(), settings.general.default_key_duration, state,
                      router.access_group_members if router is not None else None)


def build_spend(settings, router, store, observers=None):
    """Prices and budgets for every call; the ledger when there is a database (a master key is set)
    and spend logs are not turned off."""
    from gateway.spend.ledger import Ledger
    from gateway.spend.meter import SpendTracker
    general = settings.general
    ledger = None
    if store is not None and not general.disable_spend_logs:
        ledger = Ledger(store.get, general.spend_spool_dir, budget_mode=general.budget_mode,
                        lease_seconds=general.budget_lease_seconds)
        for deployment in router.deployments():
            if not deployment.priced and not deployment.provider.local:
                log.warning("no price is known for `%s` (%s): its calls are recorded at $0; set "
                            "input_cost_per_token / output_cost_per_token on the deployment",
                            deployment.provider.config.model, deployment.provider.config.model_name)
    hold_seconds = float(general.budget_hold_seconds or router.timeout + 60)
    return SpendTracker(ledger, router.state, hold_seconds, observers)


def warm(app):
    """Open what the configuration needs before this worker takes its first connection (called in
    the worker as gunicorn loads the app: gateway/server.py for the CLI, wsgi.py otherwise): the
    database with its key service, the ledger's statements and the stored models; a ping of each
    Redis client. Without it the first call on each worker imported
    SQLAlchemy inside the event loop and stalled every connection of that worker (~300 ms). What
    cannot be opened now (a database that is down) is opened on first use, as before."""
    from gateway import errors
    gateway = app.extensions["gateway"]
    started = time.monotonic()
    opened = []
    try:
        if gateway.store is not None:
            gateway.store.get()
            gateway.auth.keys.get()
            opened.append("database")
            if gateway.spend.ledger is not None:
                gateway.spend.ledger.prepare()
            if gateway.models is not None:
                gateway.models.sync()
            gateway.responses.statements()
    except errors.ServiceUnavailableError:
        log.warning("worker %d: the database is not reachable yet; it is opened on first use", os.getpid())
    for name, client in (("router state", getattr(gateway.router.state, "client", None)),
                         ("cache", getattr(getattr(gateway.cache, "backend", None), "client", None))):
        if client is not None:
            try:
                client.ping()
                opened.append(name)
            except Exception as exc:  # noqa: BLE001  (Redis down: both fall back on their own)
                log.warning("worker %d: %s Redis not reachable (%s)", os.getpid(), name, type(exc).__name__)
    gateway.warm = True
    log.info("worker %d warm in %.0f ms (%s)", os.getpid(), (time.monotonic() - started) * 1000,
             ", ".join(opened) or "nothing to open")


def background_jobs(settings, router, store):
    """The jobs that run once across the cluster, under one lease in the shared database (started
    under gevent; gateway/storage/jobs.py): background health checks and spend log retention.
    Without a database (no master key) the health checks fall back to one worker per interval of
    each instance (of the cluster with Redis)."""
    from gateway.routing import health as healthcheck
    general = settings.general
    jobs = []
    if general.background_health_checks:
        if store is None:
            healthcheck.start_background(router, general.health_check_interval)
        else:
            jobs.append(healthcheck.job(router, general.health_check_interval))
    if general.spend_logs_retention and store is not None:
        from gateway.spend import retention
        jobs.append(retention.job(general.spend_logs_retention, general.spend_logs_retention_interval))
    if not jobs:
        return None
    from gateway.infra.coop import cooperative
    from gateway.storage.jobs import Jobs
    runner = Jobs(store.get, jobs, general.job_lease_seconds)
    if cooperative():
        runner.start()
    return runner


def create_app(settings=None):
    """Build the Flask app for one worker from validated Settings (demo defaults when None)."""
    if settings is None:
        from gateway.config.settings import demo_settings
        settings = demo_settings()
    configure_logging(settings.debug, settings.litellm.json_logs)
    app = Flask("gateway")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    transport = Transport(debug=settings.debug)
    # One owner of the database (keys and the spend ledger share it), opened on first use.
    store = Store.for_settings(settings) if settings.master_key else None
    keys = LazyKeys(lambda: open_key_service(settings, router.state, store, router), store) if store is not None else None
    router = Router(settings, transport)
    from gateway.telemetry import requestlog
    from gateway.telemetry.events import Observers
    from gateway.telemetry.metrics import public_endpoints
    observers = Observers()
    observers.add(requestlog.observe)
    from gateway.cache import build_cache
    auth = Authenticator(settings.master_key, keys, public=public_endpoints(settings))
    gateway = Gateway(settings, router, transport, auth, build_spend(settings, router, store, observers),
                      observers, build_cache(settings), store)
    if settings.general.store_model_in_db:  # a master key is set (checked at load), so is the store
        from gateway.routing.dbmodels import ModelStore
        from gateway.routing.dbmodels import ModelSync
        gateway.models = ModelSync(router, ModelStore(store.get, settings.master_key), settings.deployments)
    from gateway.storage.responses import ResponseStore
    # The Responses API's state lives in the database even without a master key (opened on first use).
    gateway.responses = ResponseStore(store if store is not None else Store.for_settings(settings))
    app.extensions["gateway"] = gateway
    gateway.jobs = background_jobs(settings, router, store)

    from gateway.api import chat
    from gateway.api import completions
    from gateway.api import embeddings
    from gateway.api import health
    from gateway.api import keys as key_routes
    from gateway.api import metrics as metric_routes
    from gateway.api import model_info
    from gateway.api import models
    from gateway.api import model_admin
    from gateway.api import spend
    from gateway.api import reports
    from gateway.api import customers
    from gateway.api import organizations
    from gateway.api import teams
    from gateway.api import users
    from gateway.api import messages
    from gateway.api import responses
    from gateway.api import surfaces
    from gateway.api import audio
    for module in (chat, completions, embeddings, messages, responses, surfaces, audio, models, model_info, health, key_routes, spend, reports,
                   metric_routes, users, teams, organizations, customers, model_admin):
        app.register_blueprint(module.bp)
    from gateway.ui import admin as ui_admin  # noqa: F401  (its pages join the UI's blueprint)
    from gateway.ui import keys as ui_keys  # noqa: F401
    from gateway.ui import usage as ui_usage  # noqa: F401
    from gateway.ui import web as ui
    app.register_blueprint(ui.bp)
    from gateway.telemetry.metrics import install as install_metrics
    app.extensions["metrics"] = install_metrics(gateway)  # counts every call; renders /metrics
    if settings.litellm.callbacks.prometheus:  # LiteLLM's metric names too, from the same series
        from gateway.telemetry.litellm_metrics import LiteLLMNames
        app.extensions["metrics"].extra = LiteLLMNames(router)

    model_sync = gateway.models

    @app.before_request
    def _begin():
        g.request_id = new_request_id()
        if request.endpoint is not None:  # unknown routes fall through to the 404 handler
            inside = request.environ.get(UI_CALLER)  # an admin UI page's in-process call (gateway/ui)
            g.caller = gateway.auth.authorize(request.endpoint, request.headers) if inside is None \
                else gateway.auth.admit(request.endpoint, inside)
            if model_sync is not None:
                model_sync.sync()  # the database's models as they are now (one shared-memory read)

    @app.after_request
    def _tag(response):
        response.headers["x-request-id"] = g.get("request_id") or new_request_id()
        return response

    def error_body(err):
        """The error envelope the route's clients read: Anthropic's on the Messages routes, else OpenAI's."""
        anthropic = request.blueprint == "messages" or request.path.startswith(("/v1/messages", "/anthropic/"))
        return anthropic_error(err) if anthropic else err.body()

    @app.errorhandler(errors.GatewayError)
    def _gateway_error(exc):
        if exc.status >= 500:
            log.warning("request %s: %s %s", g.get("request_id"), exc.status, exc.message)
        return json_response(error_body(exc), status=exc.status, headers=exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        cls = _HTTP_ERRORS.get(exc.code, errors.BadRequestError if exc.code < 500 else errors.GatewayError)
        if exc.code == 404:
            message = f"Unknown route: {request.method} {request.path[:200]}"
        elif exc.code == 413:
            message = f"Request body is larger than the limit of {settings.max_body_bytes} bytes."
        else:
            message = exc.description or exc.name
        err = cls(message, status=exc.code, code=exc.name.lower().replace(" ", "_"))
        headers = {"Allow": ", ".join(sorted(exc.valid_methods))} if getattr(exc, "valid_methods", None) else None
        return json_response(error_body(err), status=exc.code, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc):
        if "sqlalchemy" in sys.modules:  # a database that is down or full, wherever it surfaced: a 503
            from gateway.storage import unavailable
            busy = unavailable(exc)
            if busy is not None:
                return _gateway_error(busy)
        log.exception("request %s: unhandled error", g.get("request_id"))
        err = errors.GatewayError(f"Internal error (request id {g.get('request_id')}).")
        return json_response(error_body(err), status=500)

    from gateway.telemetry import otel  # tracing (imports opentelemetry only when on)
    if otel.wanted(settings):
        otel.install(app, gateway)
    from gateway.telemetry.callbacks import install as install_callbacks
    install_callbacks(app, gateway)  # success_callback / failure_callback / callbacks sinks
    return app
