"""The admin UI at /ui: server-rendered pages (Jinja2, autoescaped) over the gateway's own management
routes, signed in by a server-side session (sessions.py), reaching data only through client.py."""

# The WSGI environ key an admin UI page's in-process call carries its caller under (client.py); no
# HTTP header can produce it (a server puts headers under HTTP_*).
CALLER = "gateway.ui.caller"
