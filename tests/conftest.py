"""Shared fixtures: an app built from settings (the built-in demo model unless a test overrides
`settings`) and a Flask test client for it, as in Flask's tutorial."""

import pytest

from gateway.app import create_app
from gateway.config.settings import demo_settings


@pytest.fixture
def settings():
    """Settings the `app` fixture is built from; override in a module or test to change them."""
    return demo_settings()


@pytest.fixture
def app(settings):
    """The Flask app for `settings`."""
    return create_app(settings)


@pytest.fixture
def client(app):
    """A Flask test client: requests run in-process, no sockets."""
    return app.test_client()
