"""A named lease with a fencing token, kept in the database every instance shares.

One worker of one instance holds a lease at a time. It is taken and renewed by one conditional
UPDATE (take it when it has expired or is ours; the token goes up by one whenever the holder
changes), so it works the same on SQLite and PostgreSQL and needs no Redis. Expiry is counted on
the database's clock, so instances whose clocks disagree still agree on who holds it.

A job's writes are fenced: `fenced(token)` opens a transaction whose first statement touches the
lease row with the holder's token (and refuses if it is no longer there or has expired). That
statement locks the row until the transaction ends, so a takeover waits for the write to commit,
and a leader that was paused past its lease (a long GC, a stopped VM) writes nothing once another
worker took over: its token is gone.
"""

import contextlib
import os
import secrets
import socket
import time

from sqlalchemy import case
from sqlalchemy import extract
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import update

from gateway.storage.models import LeaseRow

LEASES = LeaseRow.__table__


class LeaseLost(Exception):
    """The lease is no longer held with this token: the write did not happen."""


def holder_id():
    """Who holds a lease: this host and process, and a random part (a pid is reused after a restart)."""
    return f"{socket.gethostname()[:80]}/{os.getpid()}/{secrets.token_hex(4)}"


def db_now(dialect_name):
    """The database's clock as epoch seconds (a SQL expression), fractions of a second included."""
    if dialect_name == "sqlite":
        return (func.julianday("now") - 2440587.5) * 86400.0
    return extract("epoch", func.clock_timestamp())


def insert_ignoring(dialect_name, table):
    """INSERT ... ON CONFLICT DO NOTHING for SQLite and PostgreSQL."""
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert(table).on_conflict_do_nothing()


class Lease:
    """The lease `name` in database `db` (a gateway.storage.Database) for `seconds`, held as `holder`.

    `acquire()` takes or renews it and answers the token while it is held; `fenced(token)` is the
    transaction a job writes in. The holder knows it leads until `seconds` after its last successful
    renewal *began* (`held()`): never later than the database thinks, so two workers never both
    believe they lead (up to the clocks' rate drift over one lease time)."""

    def __init__(self, db, name, seconds, holder=None):
        self.db = db
        self.name = name
        self.seconds = float(seconds)
        self.holder = holder or holder_id()
        self.token = None  # the token of the lease held now, else None
        self._until = 0.0  # time.monotonic() when it must be taken as lost
        self._row_made = False
        dialect = db.engine.dialect.name
        self.clock = db_now(dialect)  # the database's now, as epoch seconds (SQL)
        self._insert = insert_ignoring(dialect, LEASES).values(name=name, holder=None, token=0, expires_at=0.0)
        mine = LEASES.c.holder == self.holder
        self._take = (update(LEASES)
                      .where(LEASES.c.name == name, or_(mine, LEASES.c.expires_at < self.clock))
                      .values(token=case((mine, LEASES.c.token), else_=LEASES.c.token + 1),
                              holder=self.holder, expires_at=self.clock + self.seconds)
                      .returning(LEASES.c.token))

    def acquire(self):
        """Take the lease if it is free or expired, renew it if ours: the token, or None when another
        holder has it. Database errors propagate (the caller keeps trying)."""
        started = time.monotonic()
        try:
            with self.db.engine.begin() as connection:
                if not self._row_made:
                    connection.execute(self._insert)
                row = connection.execute(self._take).first()
            self._row_made = True
        except BaseException:
            self._lost_unless_time_left()
            raise
        if row is None:
            self.token, self._until = None, 0.0
            return None
        self.token, self._until = int(row[0]), started + self.seconds
        return self.token

    def _lost_unless_time_left(self):
        if time.monotonic() >= self._until:
            self.token = None

    def held(self):
        """The token while this holder may act as the leader (its lease has not run out), else None."""
        if self.token is not None and time.monotonic() >= self._until:
            self.token = None
        return self.token

    @contextlib.contextmanager
    def fenced(self, token):
        """A connection in a transaction that commits only while the lease is held with `token`:
        LeaseLost (and nothing written) otherwise. The lease row stays locked until it ends, so keep
        it short."""
        fence = (update(LEASES)
                 .where(LEASES.c.name == self.name, LEASES.c.token == token, LEASES.c.holder == self.holder,
                        LEASES.c.expires_at > self.clock)
                 .values(holder=LEASES.c.holder))
        with self.db.engine.begin() as connection:
            if connection.execute(fence).rowcount != 1:
                raise LeaseLost(f"lease {self.name} is no longer held with token {token}")
            yield connection

    def release(self):
        """Give the lease up at once (a clean shutdown), so the next holder need not wait it out."""
        if self.token is None:
            return
        with self.db.engine.begin() as connection:
            connection.execute(update(LEASES).where(LEASES.c.name == self.name, LEASES.c.holder == self.holder)
                               .values(expires_at=0.0))
        self.token, self._until = None, 0.0
