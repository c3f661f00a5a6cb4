"""WSGI entry point for `gunicorn wsgi:app -k gevent`; settings from GATEWAY_CONFIG (else demo)."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402  (gevent must patch before anything else is imported)

from gateway.app import create_app  # noqa: E402
from gateway.app import warm  # noqa: E402
from gateway.config.settings import ConfigError  # noqa: E402
from gateway.config.settings import from_env  # noqa: E402

try:
    app = create_app(from_env())
except ConfigError as exc:
    print("gateway: config error:\n" + "\n".join(f"  {line}" for line in str(exc).splitlines()),
          file=sys.stderr)
    sys.exit(2)
# gunicorn imports this module in each worker before it accepts a connection: open what the config
# needs now, not in the first call (gateway/app.py warm).
warm(app)
