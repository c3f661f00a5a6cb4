"""Run the app under gunicorn with gevent workers, started programmatically by the CLI."""

import sys

WORKER_CONNECTIONS = 1000
# Long enough for clients that pool connections (and load balancers with 60 s idle timeouts).
KEEPALIVE_SECONDS = 75


def gunicorn_options(host, port, workers, debug=False):
    """The gunicorn settings the CLI and conf/gunicorn.conf.py share."""
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return {
        "bind": f"{bind_host}:{port}",
        "workers": workers,
        "worker_class": "gevent",
        "worker_connections": WORKER_CONNECTIONS,
        "keepalive": KEEPALIVE_SECONDS,
        # Room for an 8 KiB Authorization header, so the app answers it with a JSON 401.
        "limit_request_field_size": 16384,
        # gevent workers heartbeat from their own greenlet, so long streams do not trip this.
        "timeout": 60,
        "graceful_timeout": 30,
        "loglevel": "debug" if debug else "info",
        "errorlog": "-",
        "accesslog": None,
        "proc_name": "gateway",
        # gunicorn >= 25.1 opens a control socket at one fixed path per user; two gateways on one
        # machine would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }


def migrate_first(settings):
    """In gunicorn's master, before any worker forks: bring the database to the newest schema, once
    (under the migrations' lock, so instances starting together apply it once). No worker, of this
    instance or of one started after it, then serves an older schema or migrates inside a call. A
    database that cannot be reached now is migrated by the first worker that opens it, as before."""
    if not settings.master_key:
        return  # no key store; the Responses API's state opens its database on first use
    import logging

    from gateway.storage import Database
    from gateway.storage import database_url
    try:
        # One connection (its migrations' lock and all), given back before the workers fork.
        db = Database(database_url(settings), 1, settings.general.database_connection_timeout)
    except Exception as exc:  # noqa: BLE001  (a URL the driver refuses: the workers report it per call)
        logging.getLogger("gateway.storage").error("database not opened before the workers (%s)",
                                                   type(exc).__name__)
        return
    try:
        db.migrate()
    except Exception as exc:  # noqa: BLE001  (the database is down: the workers retry on use)
        logging.getLogger("gateway.storage").error("database not migrated before the workers (%s); the "
                                                   "first worker that reaches it migrates it", type(exc).__name__)
    finally:
        db.engine.dispose()  # no connection crosses the fork


def patch():
    """gevent's monkey patching, done before anything imports ssl.

    The provider registry pulls in urllib3 and with it ssl; patched later, urllib3 keeps the
    stdlib SSLContext, which recurses forever on the first TLS connection in a worker.
    """
    from gevent import monkey
    monkey.patch_all()


def serve(settings, host, port, workers):
    """Start gunicorn in this process; returns its exit status."""
    # The CLI patched with gevent before anything imported ssl (see cli.main).
    from gunicorn.app.base import BaseApplication

    class GatewayApplication(BaseApplication):
        """gunicorn application whose workers build the app from already-validated settings."""

        def load_config(self):
            for key, value in gunicorn_options(host, port, workers, settings.debug).items():
                if key in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(key, value)

        def load(self):
            # In the worker, before it accepts a connection: build the app and open what it needs.
            from gateway.app import create_app
            from gateway.app import warm
            app = create_app(settings)
            warm(app)
            return app

    from gateway.routing.state import remove_stale_files
    remove_stale_files()  # router state of earlier instances, left on /dev/shm
    migrate_first(settings)

    print(f"gateway: serving {len(settings.deployments)} deployment(s) from {settings.source} "
          f"on http://{host}:{port} with {workers} gevent worker(s)", file=sys.stderr, flush=True)
    if settings.master_key:
        print(f"gateway: admin UI at http://{host}:{port}/ui (sign in with the master key)", file=sys.stderr,
              flush=True)
    GatewayApplication().run()
    return 0


def _migrate_from_env():
    """`python -m gateway.server migrate`: migrate_first for the config GATEWAY_CONFIG names (the
    gunicorn.conf.py master runs it); a config error is left for the workers to report (exit 2)."""
    from gateway.config.settings import ConfigError
    from gateway.config.settings import from_env
    try:
        settings = from_env()
    except ConfigError:
        return 0
    migrate_first(settings)
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["migrate"]:
    sys.exit(_migrate_from_env())
