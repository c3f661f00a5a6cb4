"""The Authenticator's public routes are given at construction (metrics_public), never set later."""

import pytest

from gateway import errors
from gateway.access.auth import ANONYMOUS
from gateway.access.auth import Authenticator

MASTER = "sk-master-auth-0123456789"


def test_routes_made_public_at_construction_need_no_key_and_the_others_still_do():
    auth = Authenticator(MASTER, public={"metrics.metrics"})
    assert auth.authorize("metrics.metrics", {}) is ANONYMOUS
    with pytest.raises(errors.AuthenticationError):
        auth.authorize("keys.list_keys", {})
    with pytest.raises(errors.AuthenticationError):
        Authenticator(MASTER).authorize("metrics.metrics", {})
