"""gunicorn settings for `gunicorn wsgi:app -c conf/gunicorn.conf.py` (also used by the Procfile)."""

import os

from gateway.server import gunicorn_options

_options = gunicorn_options(os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "8000")),
                            int(os.environ.get("WEB_CONCURRENCY", "2")))
bind = _options["bind"]
workers = _options["workers"]
worker_class = _options["worker_class"]
worker_connections = _options["worker_connections"]
keepalive = _options["keepalive"]
timeout = _options["timeout"]
graceful_timeout = _options["graceful_timeout"]
errorlog = _options["errorlog"]
limit_request_field_size = _options["limit_request_field_size"]
control_socket_disable = _options["control_socket_disable"]


def on_starting(server):
    """Before workers fork: drop router state files left by gateway instances that have exited, and
    migrate the database once. The migration runs in a child process: this master is not patched by
    gevent (the workers patch after forking), so it must not import what the workers patch (ssl)."""
    import subprocess
    import sys

    from gateway.routing.state import remove_stale_files
    remove_stale_files()
    subprocess.run([sys.executable, "-m", "gateway.server", "migrate"], check=False)
