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
            from gateway.app import create_app
            return create_app(settings)

    from gateway.routing.state import remove_stale_files
    remove_stale_files()  # router state of earlier instances, left on /dev/shm

    print(f"gateway: serving {len(settings.deployments)} deployment(s) from {settings.source} "
          f"on http://{host}:{port} with {workers} gevent worker(s)", file=sys.stderr, flush=True)
    if settings.master_key:
        print(f"gateway: admin UI at http://{host}:{port}/ui (sign in with the master key)", file=sys.stderr,
              flush=True)
    GatewayApplication().run()
    return 0
