"""gevent helpers: whether this process runs under gevent's monkey patching, and a cooperative yield.

gunicorn's gevent workers (and wsgi.py) patch the standard library before anything else is imported;
tests, scripts and the CLI do not. These helpers look at `sys.modules` and never import gevent for
the check, so an unpatched process does not load it.
"""

import sys


def patched(module):
    """Whether gevent has monkey-patched the standard library's `module` ("socket", "threading")."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched(module)


def cooperative():
    """Whether threads are greenlets here (gevent patched `threading`): background work is a
    greenlet, and a blocking wait lets the worker's other calls run."""
    return patched("threading")


def yield_now():
    """Let the worker's other greenlets run before going on (only under gevent)."""
    import gevent
    gevent.sleep(0)


def let_others_run():
    """Yield to the worker's other greenlets when sockets are gevent's; nothing otherwise (a long
    stretch of CPU work, or an answer that needs no I/O, would otherwise hold the worker)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        import gevent
        gevent.sleep(0)
