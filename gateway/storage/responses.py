"""The Responses API's stored answers (gateway_responses): one row per response made with `store:
true`, committed before the answer completes, so every worker and instance reads it at once; each
row is its owner's only (the key's id, or the key's team; the master key's own rows are its own)."""

import re
from datetime import datetime
from datetime import timezone

import orjson

# The ids the gateway gives (providers/responses.py new_id): anything else is not looked up at all.
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{48}")


def owner_of(rules):
    """(key id, team id) of a caller: a virtual key's rules, or None for the master key / no key."""
    if rules is None:
        return None, None
    key_id = getattr(rules, "key_id", None)
    return (str(key_id) if key_id is not None else rules.hash), rules.team_id


class StoredRow:
    """One stored response as read back: its conversation and what GET answers (each JSON column
    decoded only when asked for: a call with previous_response_id needs the context alone)."""

    __slots__ = ("id", "key_id", "team_id", "_raw")

    def __init__(self, row):
        self.id, self.key_id, self.team_id = row[0], row[1], row[2]
        self._raw = row[3:6]

    @property
    def input_items(self):
        return orjson.loads(self._raw[0])

    @property
    def context(self):
        return orjson.loads(self._raw[1])

    @property
    def response(self):
        return orjson.loads(self._raw[2])


class ResponseStore:
    """Rows of gateway_responses through the worker's Store (opened on first use): one INSERT per
    stored response, one SELECT by primary key per read (statements compiled once and run on a DBAPI
    connection, storage.Prepared; JSON by orjson: this is on the path of every call with
    previous_response_id)."""

    def __init__(self, store):
        self.store = store
        self._statements = None

    def statements(self):
        """The database and (insert, select by id, delete by id) compiled for it, once: each call only
        binds its values."""
        db = self.store.get()
        if self._statements is None or self._statements[0] is not db:
            from sqlalchemy import bindparam
            from sqlalchemy import delete
            from sqlalchemy import insert
            from sqlalchemy import select

            from gateway.storage.models import StoredResponse  # SQLAlchemy only once a response is used
            t = StoredResponse.__table__
            by_id = t.c.id == bindparam("rid")
            found = select(t.c.id, t.c.key_id, t.c.team_id, t.c.input_items, t.c.context, t.c.response).where(by_id)
            self._statements = (db, tuple(db.prepare(s) for s in (insert(t), found, delete(t).where(by_id))))
        return self._statements

    def save(self, response, rules, items, context):
        """Keep a finished Response: its turn's input items and the conversation through it."""
        key_id, team_id = owner_of(rules)
        values = {"id": response["id"], "key_id": key_id, "team_id": team_id, "model": _text(response.get("model")),
                  "previous_response_id": response.get("previous_response_id"),
                  "input_items": _dump(items), "context": _dump(context), "response": _dump(response),
                  "created_at": datetime.now(timezone.utc)}
        db, (insert, _select, _delete) = self.statements()
        db.run(insert, values)

    def load(self, response_id, rules):
        """The stored row of `response_id` if the caller owns it (its key, or its key's team), else None."""
        row = self._find(response_id)
        if row is None or not _owns(row, rules):
            return None
        return StoredRow(row)

    def _find(self, response_id):
        if not isinstance(response_id, str) or not RESPONSE_ID.fullmatch(response_id):
            return None
        db, (_insert, select, _delete) = self.statements()
        return db.run(select, {"rid": response_id}, fetch=True)

    def delete(self, response_id, rules):
        """Delete the caller's stored response; whether there was one."""
        row = self._find(response_id)
        if row is None or not _owns(row, rules):
            return False
        db, (_insert, _select, delete) = self.statements()
        db.run(delete, {"rid": response_id})
        return True


def _dump(value):
    return orjson.dumps(value).decode()


def _owns(row, rules):
    """row: (id, key_id, team_id, ...)."""
    key_id, team_id = owner_of(rules)
    return row[1] == key_id or (team_id is not None and row[2] == team_id)


def _text(value):
    return value[:255] if isinstance(value, str) else None
