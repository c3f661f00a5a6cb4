"""One Responses API call's conversation state (see api/responses.py): the previous response's
conversation read once before routing, the answer given its id and stored before it goes out."""

import logging

from gateway import errors
from gateway.providers.responses import input_items
from gateway.providers.responses import new_id

log = logging.getLogger("gateway.api.responses")


class Conversation:
    """One Responses call's state: its id, the conversation before it (from `previous_response_id`),
    and what to keep once it is answered (pipeline.serve calls prepare, then keep or watch)."""

    __slots__ = ("store", "rules", "response_id", "items", "context", "keep_it", "previous")

    def __init__(self, store, rules):
        self.store = store
        self.rules = rules
        self.response_id = new_id("resp")
        self.items = self.context = ()
        self.keep_it = False
        self.previous = None

    def prepare(self, body):
        """The body's `input` becomes the whole conversation (the previous one's, then this turn's)."""
        store_flag = body.get("store")
        if store_flag is not None and not isinstance(store_flag, bool):
            raise errors.BadRequestError("store must be true or false.", param="store")
        self.keep_it = store_flag is not False
        self.items = input_items(body.get("input"))
        previous = self.previous = body.get("previous_response_id")
        context = []
        if previous is not None:
            row = self.store.load(previous, self.rules) if isinstance(previous, str) else None
            if row is None:
                raise errors.NotFoundError(f"Previous response with id '{str(previous)[:64]}' not found.",
                                           param="previous_response_id", code="previous_response_not_found")
            context = list(row.context)
        self.context = context
        body["input"] = context + self.items

    def keep(self, response):
        """Give the answer its id (and the state the client asked for: an upstream that answered
        natively was sent the whole conversation instead) and store it when `store`, before it goes out."""
        self.name(response)
        if self.keep_it and response.get("status") in ("completed", "incomplete"):
            try:
                self.store.save(response, self.rules, self.items,
                                self.context + self.items + list(response.get("output") or ()))
            except errors.GatewayError:
                raise
            except Exception as exc:  # the database refused the row: said as an error, never a traceback
                log.exception("could not store response %s", self.response_id)
                raise errors.ServiceUnavailableError(
                    "The response could not be stored for previous_response_id; retry, or send store: false.",
                    code="response_not_stored") from exc
        return response

    def watch(self, stream):
        """The stream with this response's id in its events, stored as its last event passes."""
        def tap(event):
            response = event.get("response")
            if isinstance(response, dict):
                self.name(response)
                if event.get("type") in ("response.completed", "response.incomplete"):
                    self.keep(response)
            return event
        return stream.tap(tap)

    def name(self, response):
        """The gateway's id and state fields on a Response object."""
        response["id"] = self.response_id
        response["previous_response_id"] = self.previous
        response["store"] = self.keep_it
