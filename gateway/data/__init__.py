"""Facts about models and requests, no I/O: the package's model table (context windows, list prices:
models.json beside this file, loaded once), the token measures of a request body, and the bounds
of what a call can be billed (budget holds)."""

import functools
import json
from importlib import resources


@functools.lru_cache(maxsize=1)
def table():
    """Every known model's facts, keyed by upstream model name."""
    text = resources.files("gateway").joinpath("data/models.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def lookup(model, model_info=None):
    """Facts for one deployment: the table's entry under its upstream name, overridden by model_info."""
    facts = dict(table().get(model) or table().get(model.rsplit("/", 1)[-1]) or {})
    facts.update({k: v for k, v in (model_info or {}).items() if v is not None})
    return facts


def prices(params, facts):
    """(input, output) USD per token: the deployment's litellm_params, else model_info and the table;
    None when the model has no known price. Raises ValueError naming a bad value."""
    found = {}
    for name in ("input_cost_per_token", "output_cost_per_token"):
        value = params.get(name, facts.get(name))
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name}: must be a number >= 0 (USD per token)")
        found[name] = value
    if found["input_cost_per_token"] is None and found["output_cost_per_token"] is None:
        return None, None
    return float(found["input_cost_per_token"] or 0.0), float(found["output_cost_per_token"] or 0.0)


CACHE_PRICES = ("cache_read_input_token_cost", "cache_creation_input_token_cost")


def cache_prices(params, facts, input_price):
    """(read, write) USD per prompt token served from / written to the provider's prompt cache: the
    deployment's litellm_params, else model_info and the table, else the input price. Raises
    ValueError naming a bad value."""
    found = []
    for name in CACHE_PRICES:
        value = params.get(name, facts.get(name))
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name}: must be a number >= 0 (USD per token)")
        found.append(float(value) if value is not None else input_price or 0.0)
    return tuple(found)


# ---- prices of calls billed per unit (images, rerank queries) ------------------------------------

UNIT_PRICES = ("output_cost_per_image", "input_cost_per_query", "input_cost_per_second", "input_cost_per_character",
               "output_cost_per_second")


def unit_prices(params, facts):
    """{name: USD} of the per-unit prices a deployment has (litellm_params over model_info and the
    table): `output_cost_per_image` (every size and quality), `input_cost_per_query` (a rerank
    search unit), `input_cost_per_second` (audio transcribed), `input_cost_per_character` (text
    spoken), `output_cost_per_second` (speech heard), and the table's `image_prices` ({"<quality>/<size>": USD}). Raises ValueError naming a
    bad value."""
    found = {}
    for name in UNIT_PRICES:
        value = params.get(name, facts.get(name))
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name}: must be a number >= 0 (USD)")
            found[name] = float(value)
    table = facts.get("image_prices")
    if isinstance(table, dict) and "output_cost_per_image" not in found:
        found["image_prices"] = table
    return found


def image_price(prices, quality, size):
    """USD for one image of this quality and size: the deployment's flat `output_cost_per_image`, else
    the table's price for "<quality>/<size>"; a quality or size the table does not name (`auto`, or
    none given) is billed at the dearest the model may produce, never less. None: no price known."""
    if "output_cost_per_image" in prices:
        return prices["output_cost_per_image"]
    table = prices.get("image_prices")
    if not table:
        return None
    exact = table.get(f"{quality}/{size}")
    if exact is not None:
        return exact
    matching = [v for k, v in table.items() if k.split("/")[0] == quality or k.split("/")[1] == size]
    return max(matching or table.values())


# Fields of a request that never reach the model as prompt text (controls, routing, bookkeeping).
_NOT_PROMPT = frozenset({"model", "user", "metadata", "cache", "fallbacks", "context_window_fallbacks",
                         "logit_bias", "stop", "stream", "stream_options", "num_retries", "timeout",
                         "request_timeout", "mock_response", "caching", "ttl", "max_tokens",
                         "max_completion_tokens", "temperature", "top_p", "n", "best_of", "seed",
                         "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "echo",
                         "encoding_format", "dimensions", "parallel_tool_calls", "service_tier", "store",
                         "reasoning_effort", "max_output_tokens", "previous_response_id", "anthropic_headers"})
_FRAMING = frozenset({"role", "type"})  # message roles and part types: framing tokens, not text
_IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
_FILE_PARTS = frozenset({"file", "document", "input_file"})
IMAGE_TOKEN_ESTIMATE = 765  # a 1024x1024 image in high detail on gpt-4o
# Upper bound of what one image can be billed: gpt-4o-mini bills a 2048x768 high-detail image as
# 2,833 + 8 x 5,667 = 48,169 tokens (priced so the dollars match gpt-4o); low detail is at most 2,833.
IMAGE_TOKEN_BOUND = 50_000
LOW_DETAIL_IMAGE_TOKEN_BOUND = 3_000
# A document (PDF) page bills its text plus an image of the page (~3,000 tokens), and a page takes
# well over 750 bytes of base64; a file also counts as one image, for a file sent by id.
FILE_TOKENS_PER_BYTE = 4
TOOLS_TOKEN_BOUND = 1024  # the system prompt providers add when tools are offered (Anthropic: up to ~700)
MESSAGE_FRAMING_TOKENS = 4  # role and separators, per message
_MAX_DEPTH = 64


class PromptSize:
    """What a request sends the model: text (characters and UTF-8 bytes), token ids, images, files."""

    __slots__ = ("chars", "bytes", "token_ids", "images", "low_detail_images", "file_bytes", "messages", "tools")

    def __init__(self):
        self.chars = self.bytes = self.token_ids = self.images = self.low_detail_images = 0
        self.file_bytes = self.messages = 0
        self.tools = False

    def estimate(self):
        """A likely token count (4 characters a token): for context-window checks and billing a call
        whose upstream reported no usage."""
        return (self.chars // 4 + self.token_ids + self.images * IMAGE_TOKEN_ESTIMATE
                + self.low_detail_images * 85 + self.file_bytes // 4)

    def bound(self):
        """An upper bound of the prompt tokens a provider can bill: a token is at least one byte of
        UTF-8 text in every byte-level tokenizer; token ids count one each; images and files count
        their most expensive rendering; plus per-message framing and the tools' system prompt."""
        return (self.bytes + self.token_ids + self.images * IMAGE_TOKEN_BOUND
                + self.low_detail_images * LOW_DETAIL_IMAGE_TOKEN_BOUND
                + self.file_bytes * FILE_TOKENS_PER_BYTE + self.messages * MESSAGE_FRAMING_TOKENS
                + (TOOLS_TOKEN_BOUND if self.tools else 0) + 8)


def measure_prompt(body):
    """Measure every field of a request body that reaches the upstream (see PromptSize)."""
    size = PromptSize()
    if not isinstance(body, dict):
        return size
    messages = body.get("messages")
    if isinstance(messages, list):
        size.messages = len(messages)
    size.tools = bool(body.get("tools") or body.get("functions"))
    for name, value in body.items():
        if name not in _NOT_PROMPT:
            _add_key(size, name)
            _walk(size, value, 0)
    return size


def _add_key(size, text):
    """A field name: it may reach the model (a tool's parameter names do), so the bound counts it."""
    size.bytes += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _add_text(size, text):
    size.chars += len(text)
    size.bytes += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _walk(size, value, depth):
    if isinstance(value, str):
        _add_text(size, value)
    elif isinstance(value, dict):
        kind = value.get("type")
        if kind in _IMAGE_PARTS:
            _add_image(size, value)
            return
        if kind in _FILE_PARTS:
            # A file passed by id has no size here: count it as a large image at the least.
            size.file_bytes += _payload_bytes(value, 0)
            size.images += 1
            return
        if depth >= _MAX_DEPTH:  # parse_body refuses deeper documents; never recurse without end
            size.bytes += IMAGE_TOKEN_BOUND
            return
        for key, item in value.items():
            _add_key(size, key)
            if key in _FRAMING and isinstance(item, str):
                _add_key(size, item)  # a role or part type: framing, in the bound but not the estimate
            else:
                _walk(size, item, depth + 1)
    elif isinstance(value, list):
        if depth >= _MAX_DEPTH:
            size.bytes += IMAGE_TOKEN_BOUND
            return
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool):
                size.token_ids += 1  # a token id (prompt/input given as tokens), or a small number
            else:
                _walk(size, item, depth + 1)


def _add_image(size, part):
    detail = part.get("detail")
    inner = part.get("image_url")
    if isinstance(inner, dict):
        detail = inner.get("detail", detail)
    if detail == "low":
        size.low_detail_images += 1
    else:
        size.images += 1


def _payload_bytes(value, depth):
    """The length of every string inside a file part (its data, base64 or text)."""
    if isinstance(value, str):
        return len(value)
    if depth >= _MAX_DEPTH:
        return 0
    if isinstance(value, dict):
        return sum(_payload_bytes(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return sum(_payload_bytes(v, depth + 1) for v in value)
    return 0


def estimate_tokens(body):
    """A rough prompt size (4 characters a token), counting every field that reaches the model:
    enough to see a prompt that cannot fit, and to bill a call whose upstream reported no usage."""
    return measure_prompt(body).estimate()


# ---- bounds: what a call can be billed at most (budget holds) -----------------------------------

DEFAULT_OUTPUT_BOUND = 4096  # completion tokens assumed when neither the call nor the model bounds them


def prompt_token_bound(body):
    """An upper bound of the prompt tokens a provider can bill for this body: every field that
    reaches the upstream counts (tools, functions, schemas, token ids, images, files), a byte of
    text at most a token (gateway/modeldata.py PromptSize.bound). Budget holds use it, where a low
    guess would let a client overspend."""
    return measure_prompt(body).bound()


def _positive_int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _output_limit(body):
    """The call's own bound of its output: max_completion_tokens / max_tokens (chat, completions,
    Messages), max_output_tokens (Responses)."""
    return _positive_int(body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens"))


def output_is_assumed(deployment, body):
    """Whether nothing (the call's max_tokens, the model's output or context limit) bounds the
    completion, so a hold must assume DEFAULT_OUTPUT_BOUND and the call must be capped to it."""
    return (_output_limit(body) is None
            and not deployment.max_output_tokens and not deployment.max_input_tokens)


def completion_bound(deployment, body, prompt_tokens):
    """The most completion tokens a call may produce on this deployment (all its choices)."""
    asked = _output_limit(body)
    if asked is not None:
        out = asked
    elif deployment.max_output_tokens:
        out = deployment.max_output_tokens
    elif deployment.max_input_tokens:
        out = max(1, deployment.max_input_tokens - prompt_tokens)
    else:
        out = DEFAULT_OUTPUT_BOUND  # the router sends this as max_tokens on a budgeted call
    if deployment.max_output_tokens:
        out = min(out, deployment.max_output_tokens)
    # `n` choices, or `best_of` candidates (completions), are each billed up to the limit.
    choices = max(_positive_int(body.get("n")) or 1, _positive_int(body.get("best_of")) or 1)
    return out * choices
