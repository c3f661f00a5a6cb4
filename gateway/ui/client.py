"""The admin UI's only way to data: the gateway's own management routes, dispatched in-process as
the signed-in caller. A page is a client of /key/list, /spend/logs, /global/spend/report, ... like
any script: the route's policy (gateway/access/auth.py ROUTE_POLICY and policy.ACCESS) admits or
refuses the caller, and the view narrows the answer to its scope. The UI holds no second copy of
who may see or change what.

The caller travels in the WSGI environ under CALLER, a name no HTTP header can produce (a server
puts headers under HTTP_*), and app.py's before_request hands it to Authenticator.admit."""

from flask import current_app
from flask import request
from werkzeug.test import EnvironBuilder

from gateway.ui import CALLER


class Answer:
    """A route's status and JSON body (an OpenAI-style error body on a refusal)."""

    __slots__ = ("status", "body")

    def __init__(self, status, body):
        self.status, self.body = status, body

    @property
    def ok(self):
        return 200 <= self.status < 300

    @property
    def error(self):
        """The refusal's message, for the page to show (None when ok)."""
        if self.ok:
            return None
        error = self.body.get("error") if isinstance(self.body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return str(message or f"The gateway answered {self.status}.")


def call(caller, method, path, query=None, body=None):
    """Run `method path` on this app as `caller` (gateway.access.auth.Caller): an Answer."""
    app = current_app._get_current_object()
    builder = EnvironBuilder(path=path, method=method, query_string=query, json=body,
                             base_url=request.host_url)
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    environ[CALLER] = caller
    # A new app context: the inner request's `g` (its caller, scope, request id) is its own.
    with app.app_context(), app.request_context(environ):
        response = app.full_dispatch_request()
        try:
            return Answer(response.status_code, response.get_json(silent=True))
        finally:
            response.close()
