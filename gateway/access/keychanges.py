"""How every worker learns at once that a key changed (blocked, updated, regenerated, deleted).

The shared change counter of gateway/infra/changes.py, for keys: read on every cached key lookup,
added to after a management call's commit. With Redis, other instances follow within
`remote_seconds`; without Redis, when their cache entry ends (keys.CACHE_SECONDS).
"""

from gateway.infra.changes import ChangeCounter

REDIS_NAME = "keys-changed"


class KeyChanges(ChangeCounter):
    """The count of key changes an instance (and, with Redis, every instance) has made."""

    def __init__(self, state, remote_seconds):
        super().__init__(state, remote_seconds, suffix=".keys", redis_name=REDIS_NAME, what="key")
