"""The management hierarchy: organizations own teams, teams own members and keys, users own keys,
and end users are the `user` of a call. One service over the key store's database; the CRUD lives in
gateway/access/teams.py (organizations, teams, members) and gateway/access/users.py (users, end users).

Every level stores models, a budget (max_budget, budget_duration, budget_reset_at, spend, reserved,
holds), rpm / tpm / parallel limits, metadata and a block. What a key inherits from them (its
effective models, a block anywhere above it, its user's role) is computed when the key is looked up
(gateway/access/keys.py), so a change here reaches every worker through the key change signal."""

import contextlib

from gateway.access.teams import TeamsMixin
from gateway.access.users import UsersMixin


class Hierarchy(TeamsMixin, UsersMixin):
    """CRUD of organizations, teams, users and end users over the key service's database."""

    def __init__(self, keys):
        self.keys = keys  # gateway.access.keys.KeyService: keys of new users, the change signal
        self.db = keys.db

    @contextlib.contextmanager
    def _writing(self, conflict):
        """Turn a unique-constraint failure at commit (two requests making the same id or email at
        once: the check before the insert passed for both) into `conflict`, the duplicate's error."""
        from sqlalchemy.exc import IntegrityError
        try:
            yield
        except IntegrityError:
            raise conflict from None
