"""The Responses API's stored answers (gateway_responses): one row per response made with `store:
true`, committed before the answer completes, so every worker and instance reads it at once; each
row is its owner's only (the key's id, or the key's team; the master key's own rows are its own)."""

import re

# The ids the gateway gives (providers/responses.py new_id): anything else is not looked up at all.
RESPONSE_ID = re.compile(r"resp_[0-9a-f]{48}")


def owner_of(rules):
    """(key id, team id) of a caller: a virtual key's rules, or None for the master key / no key."""
    if rules is None:
        return None, None
    key_id = getattr(rules, "key_id", None)
    return (str(key_id) if key_id is not None else rules.hash), rules.team_id


class ResponseStore:
    """Rows of gateway_responses through the worker's Store (opened on first use)."""

    def __init__(self, store):
        self.store = store

    def save(self, response, rules, items, context):
        """Keep a finished Response: its turn's input items and the conversation through it."""
        from gateway.storage.models import StoredResponse  # SQLAlchemy only once a response is stored
        key_id, team_id = owner_of(rules)
        row = StoredResponse(id=response["id"], key_id=key_id, team_id=team_id, model=_text(response.get("model")),
                             previous_response_id=response.get("previous_response_id"), input_items=items,
                             context=context, response=response)
        with self.store.get().session() as session:
            session.merge(row)

    def load(self, response_id, rules):
        """The stored row of `response_id` if the caller owns it (its key, or its key's team), else None."""
        if not isinstance(response_id, str) or not RESPONSE_ID.fullmatch(response_id):
            return None
        from gateway.storage.models import StoredResponse
        with self.store.get().session() as session:
            row = session.get(StoredResponse, response_id)
            if row is None or not _owns(row, rules):
                return None
            session.expunge(row)
            return row

    def delete(self, response_id, rules):
        """Delete the caller's stored response; whether there was one."""
        if not isinstance(response_id, str) or not RESPONSE_ID.fullmatch(response_id):
            return False
        from gateway.storage.models import StoredResponse
        with self.store.get().session() as session:
            row = session.get(StoredResponse, response_id)
            if row is None or not _owns(row, rules):
                return False
            session.delete(row)
            return True


def _owns(row, rules):
    key_id, team_id = owner_of(rules)
    return row.key_id == key_id or (team_id is not None and row.team_id == team_id)


def _text(value):
    return value[:255] if isinstance(value, str) else None
