"""Spend: usage -> USD, one ledger row per request, and hard budgets held before the call.

* A `Meter` follows one request: the budget hold taken before routing, the usage the upstream
  reported (or an estimate, marked as such), and the row: written before a whole answer goes out
  (`settle`), or after a stream's last byte.
* The `Ledger` (gateway/ledger.py) makes rows durable: a per-worker journal first, then batched
  commits; rows wait out a database outage in the journal and are replayed, each request id once.
* Budgets: a key with `max_budget` reserves the worst case of the call (prompt bound + max_tokens,
  clamped to the model's limit, for the priciest deployment it may reach) with one conditional
  UPDATE on the key's row (by its id, which /key/regenerate keeps). `budget_mode: strict`: concurrent
  calls across workers and instances can never reserve past the budget. `soft` (the default): a
  call that does not fit is still admitted when no other call of the key holds budget and some is
  left, so a key is overshot by one call at most and never refused while it has budget. The row's
  commit settles the hold to the real cost; a hold whose worker died expires.
* Every call is journaled as it starts, before its upstream work (`Meter.begin` -> `Ledger.begin`;
  a cache hit is not): a worker killed mid-call leaves a start entry without a row, and the replay
  of its journal writes a `worker_died` row for it.
"""

import logging
import time
from datetime import datetime
from datetime import timezone

from gateway import errors
from gateway.data import DEFAULT_OUTPUT_BOUND  # noqa: F401  (named here too: spend's bound)
from gateway.data import completion_bound
from gateway.data import estimate_tokens
from gateway.data import output_is_assumed  # noqa: F401  (named here too)
from gateway.data import prompt_token_bound
from gateway.providers.base import AddedUsageOption  # noqa: F401  (named here too)
from gateway.providers.messages import openai_usage
from gateway.providers.responses import chat_usage
from gateway.providers.base import JSON_ENDPOINTS
from gateway.providers.rerank import billed_units
from gateway.data import image_price
from gateway.providers.audio import billed_seconds
from gateway.providers.audio import bound_seconds
from gateway.providers.audio import speech_bound_seconds
from gateway.providers.audio import speech_seconds

log = logging.getLogger("gateway.spend.meter")

COST_HEADER = "x-litellm-response-cost"


def usage_cost(deployment, prompt_tokens, completion_tokens, cache_read=0, cache_created=0):
    """USD for the tokens on this deployment (0 when it has no price): prompt tokens read from or
    written to the provider's prompt cache at the cache prices (`cache_read_input_token_cost`,
    `cache_creation_input_token_cost`; the input price when none is set)."""
    if deployment is None or deployment.input_price is None:
        return 0.0
    fresh = prompt_tokens - cache_read - cache_created
    return (fresh * deployment.input_price + cache_read * deployment.cache_read_price
            + cache_created * deployment.cache_creation_price + completion_tokens * deployment.output_price)


def cache_counts(usage, prompt_tokens):
    """(read, written) prompt tokens of the provider's prompt cache in an OpenAI-shaped usage (Anthropic's
    counts, or OpenAI's cached_tokens), each within the prompt."""
    details = usage.get("prompt_tokens_details")
    read = usage.get("cache_read_input_tokens")
    if not _is_count(read):
        read = details.get("cached_tokens") if isinstance(details, dict) else 0
    created = usage.get("cache_creation_input_tokens")
    read = min(read, prompt_tokens) if _is_count(read) else 0
    created = min(created, prompt_tokens - read) if _is_count(created) else 0
    return read, created


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _count(value):
    return value if _is_count(value) else 0


def _mocked(body, deployment):
    """Whether the call was answered by `mock_response` (the body's or the deployment's): $0."""
    if body.get("mock_response") is not None:
        return True
    return deployment is not None and getattr(deployment.provider, "mock_response", None) is not None


def unit_cost(deployment, endpoint, body, answer=None):
    """USD of a call billed per unit, or None when it is billed by tokens: images (per image, by
    quality and size: `answer`'s count, or the `n` asked for a hold), moderations (free), rerank (per
    search unit with `input_cost_per_query`; by tokens otherwise). A hold (no answer) counts the
    most the call can produce."""
    if endpoint == "moderations":
        return 0.0
    prices = deployment.unit_prices if deployment is not None else {}
    if endpoint == "images":
        price = image_price(prices, body.get("quality") or "standard", body.get("size") or "1024x1024")
        if answer is not None:
            count = len(answer.get("data") or ())
        else:
            count = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        return (price or 0.0) * count
    if endpoint in ("transcriptions", "translations") and "input_cost_per_second" in prices:
        if answer is not None:
            seconds, _estimated = billed_seconds(answer, body.get("file"))
        else:
            seconds = bound_seconds(body.get("file"))
        return seconds * prices["input_cost_per_second"]
    if endpoint == "speech" and "input_cost_per_character" in prices:
        text = body.get("input")
        return len(text) * prices["input_cost_per_character"] if isinstance(text, str) else 0.0
    if endpoint == "speech" and "output_cost_per_second" in prices:
        heard = (answer or {}).get("audio")
        seconds = speech_seconds(body, *heard) if heard else speech_bound_seconds(body)
        return seconds * prices["output_cost_per_second"]
    if endpoint == "rerank" and "input_cost_per_query" in prices:
        if answer is not None:
            units = billed_units(answer)[0] or 1
        else:  # Cohere bills a search unit per 100 documents
            units = max(1, -(-len(body.get("documents") or ()) // 100))
        return units * prices["input_cost_per_query"]
    return None


def worst_case_cost(deployments, endpoint, body):
    """The most a call can cost on any of the deployments it may reach."""
    prompt = prompt_token_bound(body)
    worst = 0.0
    for deployment in deployments:
        per_unit = unit_cost(deployment, endpoint, body)
        if per_unit is not None:
            worst = max(worst, per_unit)
            continue
        if deployment.input_price is None:
            continue
        out = 0 if endpoint in ("embeddings", "rerank") else completion_bound(deployment, body, prompt)
        # every prompt token at the dearest of its prices (a cache write costs more than a plain read)
        priciest = max(deployment.input_price, deployment.cache_read_price, deployment.cache_creation_price)
        worst = max(worst, prompt * priciest + out * deployment.output_price)
    return worst


def _now():
    return datetime.now(timezone.utc)


class Meter:
    """One request's bill: hold, usage, status, and its ledger row."""

    __slots__ = ("tracker", "request_id", "rules", "endpoint", "stream", "body", "started", "hold",
                 "outcome", "prompt_tokens", "completion_tokens", "estimated", "status", "cost",
                 "cache_hit", "completion_chars", "tpm_reserved", "tpm_windows", "levels", "end_user", "requested", "usage", "started_unix",
                 "first_chunk", "error", "context", "texts", "_billed", "_closed", "_begun")

    def __init__(self, tracker, request_id, rules, endpoint, body, stream):
        self.tracker = tracker
        self.request_id = request_id
        self.rules = rules
        self.endpoint = endpoint
        self.body = body
        self.stream = stream
        self.started = _now()
        self.hold = 0.0
        self.outcome = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.estimated = False
        self.status = "success"
        self.cost = 0.0
        self.cache_hit = False
        self.completion_chars = 0
        self.tpm_reserved = 0  # tokens held in each of the tpm windows below (access/rules.py)
        self.tpm_windows = ()
        self.levels = getattr(rules, "levels", ())  # + the end user's (access/rules.py)
        user = body.get("user")
        self.end_user = user if isinstance(user, str) and user else None  # the call's end user
        self.requested = body.get("model")
        self.usage = {}
        self.started_unix = time.time()
        self.first_chunk = None  # unix time the first chunk went out (streams)
        self.error = None  # the GatewayError (or other exception) that ended the call
        self.context = tracker.observers.begin() if tracker.observers.active else {}
        self.texts = [] if tracker.keep_text else None  # the answer's text, for message logging
        self._billed = False
        self._closed = False
        self._begun = False

    # -- before the call --------------------------------------------------------------------------

    @property
    def budgeted(self):
        """Whether the call must fit a budget: its key's or a level's."""
        if self.rules is not None and self.rules.max_budget is not None:
            return True
        for level in self.levels:
            if level.max_budget is not None:
                return True
        return False

    def reserve(self, deployments):
        """Hold the call's worst case against the key's budget (keys with max_budget only)."""
        amount = worst_case_cost(deployments, self.endpoint, self.body)
        self.tracker.reserve(self.rules, self.request_id, amount, self.levels)
        self.hold = amount
        self._begun = False
        self.begin()  # the journal's start entry now carries the hold
        return amount

    def begin(self):
        """Journal the call's start entry once, before its upstream work, so a crash still leaves a
        row (a cache hit, which spends nothing upstream, needs none)."""
        if not self._begun:
            self._begun = True
            self.tracker.begin(self)

    def start_entry(self):
        """What the journal keeps of the call as it starts: enough for a row if its worker dies."""
        rules = self.rules
        return {"request_id": self.request_id, "key_id": rules.key_id if rules else None,
                "key_hash": rules.hash if rules else None, "key_alias": rules.alias if rules else None,
                "user_id": rules.user_id if rules else None, "team_id": rules.team_id if rules else None,
                "organization_id": rules.organization_id if rules else None, "end_user": self.end_user,
                "call_type": self.endpoint,
                "model_group": self.requested[:255] if isinstance(self.requested, str) else None,
                "stream": self.stream, "start_time": self.started}

    # -- after the call ---------------------------------------------------------------------------

    def bill(self, outcome, usage):
        """Price the upstream's usage (estimated from the text when it reported none); a Messages
        call's usage is Anthropic's (providers/messages.py openai_usage reads it)."""
        self.outcome = outcome
        self._billed = True
        usage = usage if isinstance(usage, dict) else {}
        if self.endpoint == "messages" and usage:
            usage = openai_usage(usage)
        elif self.endpoint == "responses" and usage:
            usage = chat_usage(usage)
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or isinstance(prompt, bool):
            prompt, self.estimated = estimate_tokens(self.body), True
        if self.endpoint == "embeddings":
            completion = 0
        elif not isinstance(completion, int) or isinstance(completion, bool):
            total = usage.get("total_tokens")
            if isinstance(total, int) and not isinstance(total, bool) and total >= prompt:
                completion = total - prompt
            else:
                completion, self.estimated = (self.completion_chars + 3) // 4, True
        self.prompt_tokens, self.completion_tokens = max(0, prompt), max(0, completion)
        deployment = outcome.deployment if outcome is not None else None
        free = self.cache_hit or _mocked(self.body, deployment)
        read, created = cache_counts(usage, self.prompt_tokens)
        self.cost = 0.0 if free else usage_cost(deployment, self.prompt_tokens, self.completion_tokens, read, created)
        return self.cost

    def bill_units(self, outcome, answer):
        """Price an answer billed per unit (images, moderations, rerank by search units): its tokens
        as the upstream reported them, if any; None when the call is billed by tokens after all."""
        deployment = outcome.deployment if outcome is not None else None
        cost = unit_cost(deployment, self.endpoint, self.body, answer)
        if cost is None:
            return None
        self.outcome, self._billed = outcome, True
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        tokens = billed_units(answer)[1] if self.endpoint == "rerank" else 0
        self.prompt_tokens = tokens or _count(usage.get("input_tokens") or usage.get("prompt_tokens"))
        self.completion_tokens = _count(usage.get("output_tokens") or usage.get("completion_tokens"))
        self.cost = 0.0 if self.cache_hit or _mocked(self.body, deployment) else cost
        return self.cost

    def bill_answer(self, outcome, answer):
        """Price a whole (non-stream) answer."""
        if self.endpoint in JSON_ENDPOINTS:
            cost = self.bill_units(outcome, answer)
            if cost is not None:
                return cost
            usage = dict(answer.get("usage") or {})
            if self.endpoint == "rerank":  # an OpenAI-compatible server's tokens, at the input price
                usage = {"prompt_tokens": billed_units(answer)[1], "completion_tokens": 0}
            return self.bill(outcome, usage)
        if self.endpoint == "messages":
            for block in answer.get("content") or ():
                self.heard(block.get("text") if isinstance(block, dict) else None)
            return self.bill(outcome, answer.get("usage"))
        if self.endpoint == "responses":
            for item in answer.get("output") or ():
                for part in (item.get("content") or ()) if isinstance(item, dict) else ():
                    self.heard(part.get("text") if isinstance(part, dict) else None)
            return self.bill(outcome, answer.get("usage"))
        if self.endpoint != "embeddings" and (self.texts is not None or not isinstance(answer.get("usage"), dict)):
            for choice in answer.get("choices") or ():
                message = choice.get("message") or {}
                text = message.get("content") if isinstance(message, dict) else None
                self.heard(text if isinstance(text, str) else choice.get("text"))
        return self.bill(outcome, answer.get("usage"))

    def heard(self, text, keep=True):
        """Count a piece of the answer's text (billing's estimate when no usage comes), and keep it
        for message logging (`keep`: it is text, not a tool call's arguments)."""
        if isinstance(text, str):
            self.completion_chars += len(text)
            if keep and self.texts is not None:
                self.texts.append(text)

    def watch(self, outcome, stream, client_wants_usage):
        """The stream as the client gets it, billed when it ends however it ends: the usage chunk
        the gateway asked for is dropped when the client did not ask for it."""
        self.outcome = outcome
        self.status = "client_disconnected"  # until the stream runs to its end
        usage, texts = self.usage, self.texts

        def count_event(event):  # a Messages stream: Anthropic's events, usage in two of them
            kind = event.get("type")
            if kind == "content_block_delta":
                delta = event.get("delta") or {}
                is_text = delta.get("type") == "text_delta"
                self.heard(delta.get("text") if is_text else delta.get("partial_json"), is_text)
            elif kind == "message_start":
                usage.update((event.get("message") or {}).get("usage") or {})
            elif kind == "message_delta":
                usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            if self.first_chunk is None:
                self.first_chunk = time.time()
            return event

        def count_response_event(event):  # a Responses stream: text deltas, usage in its last event
            kind = event.get("type")
            if kind == "response.output_text.delta" or kind == "response.function_call_arguments.delta":
                self.heard(event.get("delta"), kind == "response.output_text.delta")
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                found = (event.get("response") or {}).get("usage")
                if isinstance(found, dict):
                    usage.update(found)
            if self.first_chunk is None:
                self.first_chunk = time.time()
            return event

        def count(chunk):
            found = chunk.get("usage")
            choices = chunk.get("choices")
            if found:
                usage.update(found)
            for choice in choices or ():
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(text, str):
                    self.completion_chars += len(text)
                    if texts is not None:
                        texts.append(text)
            if self.first_chunk is None:
                self.first_chunk = time.time()
            if not client_wants_usage:
                if found and not choices:
                    return None
                chunk.pop("usage", None)
            return chunk

        def count_bytes(chunk):  # speech: audio bytes, billed by the characters spoken or the seconds heard
            if self.first_chunk is None:
                self.first_chunk = time.time()
                usage["audio_head"] = bytes(chunk[:64])
            usage["audio_bytes"] = usage.get("audio_bytes", 0) + len(chunk)
            return chunk

        def ended(error):
            if error is None:
                self.status = "success"
            else:
                self.status, self.error = "error", error
            self.bill_end(outcome, usage)
        counter = {"messages": count_event, "responses": count_response_event,
                   "speech": count_bytes}.get(self.endpoint, count)
        return stream.tap(counter).at_end(ended)

    def bill_end(self, outcome, usage):
        """Bill a stream that ended (or was closed): by its unit (speech), else by its usage."""
        heard = {"audio": (usage.get("audio_head", b""), usage.get("audio_bytes", 0))}
        if self.endpoint == "speech" and self.bill_units(outcome, heard) is not None:
            return
        self.bill(outcome, usage)

    def fail(self, error=None, outcome=None):
        """The call failed before any answer: nothing is billed, the hold is released."""
        self.status = "error"
        self.error = error
        self.outcome = outcome
        self.cost = 0.0
        self._billed = True

    def close(self):
        """Write the row (durable before this returns) and settle the hold; runs once."""
        if self._closed:
            return
        self._closed = True
        if not self._billed and self.status != "error":
            if self.stream:  # closed before its first chunk reached the client
                self.status = "client_disconnected"
            self.bill_end(self.outcome, self.usage)
        self.tracker.finish(self)

    def settle(self, outcome, answer, failure=None):
        """Bill a whole (non-stream) answer and write its row before the answer goes out: the
        cost is the one the client's header shows, and a call the client saw answered has its
        row. `failure`: the answer cannot be passed on (its tokens were spent: billed, as an
        error). A row that cannot be written is logged, never kept from the client."""
        cost = self.bill_answer(outcome, answer)
        if failure is not None:
            self.status, self.error = "error", failure
        try:
            self.close()
        except Exception:  # noqa: BLE001
            log.exception("could not record a call's spend row")
        return cost

    def abandon(self, error=None):
        """Refused before routing (a limit, the budget, an unknown model): no row, only the
        per-key token window is given back (observers still hear of it: Observers.tell)."""
        if not self._closed:
            self._closed = True
            self.status, self.error = "error", error
            self.tracker.finish(self, record=False)

    def row(self):
        """The ledger row."""
        outcome, rules = self.outcome, self.rules
        deployment = outcome.deployment if outcome is not None else None
        return {"request_id": self.request_id, "key_id": rules.key_id if rules else None,
                "key_hash": rules.hash if rules else None, "key_alias": rules.alias if rules else None,
                "user_id": rules.user_id if rules else None, "team_id": rules.team_id if rules else None,
                "organization_id": rules.organization_id if rules else None, "end_user": self.end_user,
                "call_type": self.endpoint,
                "model_group": outcome.served_group if outcome else (self.requested[:255] if isinstance(
                    self.requested, str) else None),
                "deployment_id": deployment.id if deployment else None,
                "provider": deployment.provider.name if deployment else None,
                "model": deployment.provider.model if deployment else None,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens, "cost": self.cost,
                "estimated": self.estimated, "cache_hit": self.cache_hit, "stream": self.stream,
                "status": self.status, "start_time": self.started, "end_time": _now(),
                "retries": outcome.retries if outcome else 0, "fallbacks": outcome.fallbacks if outcome else 0,
                "error": error_text(self.error)}


def error_text(error):
    """What a ledger row says of the error that ended its call: "<status> <code>: <message>" for the
    gateway's errors (their messages never hold a key: upstream text is redacted where it is read),
    the class name of anything else; None for none (cut to the column, statements.clean_text)."""
    if error is None:
        return None
    if isinstance(error, errors.GatewayError):
        return f"{error.status} {error.code or type(error).__name__}: {error.message}"
    return type(error).__name__


class SpendTracker:
    """Per worker: prices, holds and the ledger; `ledger` is None when spend is not recorded.

    `observers` (gateway/telemetry/events.py) are asked only what meters must keep for them (their
    begin hooks' context, the answer's text); the call pipeline tells them of each call."""

    def __init__(self, ledger, state, hold_seconds, observers=None):
        from gateway.telemetry.events import Observers
        self.ledger = ledger
        self.state = state
        self.hold_seconds = hold_seconds
        self.observers = observers if observers is not None else Observers()
        self._keep_text = False

    @property
    def keep_text(self):
        """Whether meters keep the answer's text: an observer logs it (Observers.wants_text), or it
        was asked for here."""
        return self._keep_text or self.observers.wants_text

    @keep_text.setter
    def keep_text(self, value):
        self._keep_text = value

    def start(self, request_id, rules, endpoint, body, stream, journal=True):
        """A Meter for a call that is about to be routed, journaled as started (`journal`), or later
        by Meter.begin when a cache lookup comes first."""
        meter = Meter(self, request_id, rules, endpoint, body, stream)
        if journal:
            meter.begin()
        return meter

    def begin(self, meter):
        """Journal the call's start entry (and its hold), so a crash still leaves a row."""
        if self.ledger is not None:
            self.ledger.begin(meter.start_entry(), meter.hold)

    def reserve(self, rules, request_id, amount, levels=()):
        """Hold `amount` of every budget the call must fit (its key's, its levels'), or refuse the
        call (429) before any upstream work, naming the budget that does not fit."""
        if self.ledger is None:
            raise errors.ServiceUnavailableError("Budgets need the key store.", code="key_store_unavailable")
        admitted, balance = self.ledger.hold(rules, request_id, amount, self.hold_seconds, levels)
        if not admitted:
            raise errors.BudgetExceededError(
                f"Budget has been exceeded! {balance.whose} budget: ${balance.budget:.6g}, spent: "
                f"${balance.spent:.6g}, in flight: ${max(0.0, balance.reserved):.6g}, this call may cost up "
                f"to ${amount:.6g}.")

    def finish(self, meter, record=True):
        """Settle the token windows (the key's and its levels') and write the row."""
        rules = meter.rules
        if meter.tpm_reserved:
            used = meter.prompt_tokens + meter.completion_tokens - meter.tpm_reserved
            for window in meter.tpm_windows:
                try:
                    self.state.record(window, used)
                except Exception:  # noqa: BLE001  (a window is state, never worth failing a request)
                    log.warning("could not settle a token window", exc_info=True)
        if self.ledger is not None:
            if record:
                self.ledger.write(meter.row(), meter.hold, rules, meter.levels)
            else:
                self.ledger.cancel(meter.request_id, meter.hold)
