"""A fake Cohere upstream: `/v2/chat` (JSON or SSE stream of typed events), `/v2/embed`, and rerank
(`/v2/rerank`, `/v1/rerank`), plus an OpenAI-compatible rerank route (`/compat/v1/rerank`) in the shape
vLLM and Jina serve.

Speaks the documented wire format closely enough that the official `cohere` SDK (ClientV2) parses
every answer and raises its typed errors. It checks what a real Cohere API checks that matters to a
translator: the bearer key, unknown request fields (OpenAI-only names such as `top_p` or `stop` are
refused with 400, as Cohere does), message roles, tool results, images only for vision models.

Behaviour
    chat answers "Hello from fake cohere: <last user text>" (plus " [images: N]" when images came);
    after a tool result it answers "The tool said: <result>"; with `tools` offered and "weather" in the
    last user message it calls the first tool once per known city named (Paris by default), with a
    tool plan; `max_tokens` cuts words (MAX_TOKENS); `stop_sequences` cut text (STOP_SEQUENCE);
    `response_format` json_object answers `{"answer": ...}`. Token counts are whitespace words.
    Error triggers by model name: fail-400, fail-401, fail-402, fail-404, fail-422, fail-429 (with
    Retry-After), fail-498, fail-499, fail-500, context-length, leak-key (401 that echoes the key),
    stream-error (streams then ends with finish_reason ERROR), cut-stream (two content deltas, then the
    body ends without message-end). The same FAILURES and leak-key apply to every rerank route.

Rerank (Cohere)
    `POST /v2/rerank` {model (required), query, documents: [str], top_n?, max_tokens_per_doc?, relevant_spans?,
    priority?} and `POST /v1/rerank` {model?, query, documents: [str | {"text": ..., ...}], top_n?, rank_fields?,
    return_documents?, max_chunks_per_doc?}; the same bearer key as chat. Refused with 400 and Cohere's
    `{"id", "message"}`: no model (v2), missing/empty query, missing/empty documents ("list of documents must
    not be empty", Cohere's own wording), more than MAX_RERANK_DOCUMENTS, top_n < 1, an object document on v2,
    an object without its rank field on v1. Unknown fields get 422 "unknown field: parameter 'x' is not a
    valid field", as Cohere's rerank answers them.
    Ranking is deterministic: relevance_score = (query terms found in the document) / (query terms), terms
    being lower-cased regex word runs (`\\w+`): punctuation and case do not matter, a repeated query word
    counts each time; ties keep document order; results sorted best first and cut to top_n. v2 `max_tokens_per_doc`
    truncates each document to that many whitespace words before scoring; v1 `rank_fields` scores an object
    document on those keys joined by spaces (default "text").
    Answer: `{"id", "results": [{"index", "relevance_score"}], "meta": {"api_version": {"version": "2"|"1"},
    "billed_units": {"search_units": ceil(len(documents) / 100)}}}` (Cohere bills one search unit per query of
    up to 100 documents); v1 adds `"document"` (the document as sent, `{"text": s}` for a string) to each
    result when return_documents is true, and leaves the key out otherwise.

Rerank (OpenAI-compatible, vLLM / Jina shape)
    `POST /compat/v1/rerank`, so api_base `<url>/compat/v1` works; `Authorization: Bearer <api_key>`.
    Request {model?, query, documents: [str | {"text": ...}], top_n? (0 or absent: all, as vLLM),
    return_documents? (default true, as Jina)}; unknown fields are ignored (vLLM/Jina do not refuse them).
    Answer, as vLLM's RerankResponse: `{"id": "rerank-<hex>", "model", "usage": {"prompt_tokens": N,
    "total_tokens": N}, "results": [{"index", "relevance_score", "document": {"text"}}]}` (no "object" key:
    neither vLLM nor Jina send one), ranked as above; "document" is left out when return_documents is false.
    N counts what a cross-encoder reads, one (query, document) pair per document:
    words(query) * len(documents) + sum(words(document)), whitespace words.
    Errors use OpenAI's envelope `{"error": {"message", "type", "param", "code"}}` (vLLM's): 401 for a
    missing/wrong key, 400 for a missing/empty query, missing/empty documents, a bad document, top_n < 0.
"""

import hashlib
import json
import math
import re
import struct
import uuid

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

ANSWER_PREFIX = "Hello from fake cohere: "
TOOL_PREFIX = "The tool said: "
TOOL_PLAN = "I will look up the weather."
CITIES = ("Paris", "London", "Madrid", "Brasilia", "Tokyo")
DEFAULT_DIMENSIONS = 8
CHAT_FIELDS = {"model", "messages", "tools", "strict_tools", "documents", "citation_options", "response_format",
               "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty",
               "presence_penalty", "k", "p", "logprobs", "tool_choice", "thinking", "priority", "stream"}
EMBED_FIELDS = {"model", "input_type", "texts", "images", "inputs", "max_tokens", "output_dimension",
                "embedding_types", "truncate", "priority"}
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
RERANK_V2_FIELDS = {"model", "query", "documents", "top_n", "max_tokens_per_doc", "relevant_spans", "priority"}
RERANK_V1_FIELDS = {"model", "query", "documents", "top_n", "rank_fields", "return_documents", "max_chunks_per_doc"}
MAX_RERANK_DOCUMENTS = 1000
DOCUMENTS_PER_SEARCH_UNIT = 100
COHERE_ROUTES = ("/v2/chat", "/v2/embed", "/v2/rerank", "/v1/rerank")
COMPAT_RERANK = "/compat/v1/rerank"
COMPAT_DEFAULT_MODEL = "fake-reranker"
OPENAI_ERROR_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 402: "PaymentRequiredError",
                      404: "NotFoundError", 422: "UnprocessableEntityError", 429: "RateLimitError",
                      500: "InternalServerError"}

FAILURES = {
    "fail-400": (400, "invalid request: message must be at least 1 token long or tool results must be specified."),
    "fail-401": (401, "invalid api token"),
    "fail-402": (402, "Please add or update your payment method at https://dashboard.cohere.com/billing to continue"),
    "fail-404": (404, "model 'fail-404' not found, make sure the correct model ID was used and that you have "
                      "access to the model."),
    "fail-422": (422, "invalid request: p must be between 0.01 and 0.99"),
    "fail-429": (429, "You are using a Trial key, which is limited to 20 API calls / minute. You can continue to "
                      "use the Trial key for free or upgrade to a Production key."),
    "fail-498": (498, "invalid api token"),
    "fail-499": (499, "request cancelled"),
    "fail-500": (500, "internal server error, this has been reported to our developers"),
    "context-length": (400, "too many tokens: total number of tokens in the prompt cannot exceed 4081 - received "
                            "4292. Try using a shorter prompt, or enabling prompt truncating."),
}


def words(text):
    """The fake tokenizer: whitespace words."""
    return len(text.split())


def text_of(content):
    """Text of a Cohere message content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def fake_embedding(text, dimensions=DEFAULT_DIMENSIONS):
    """A deterministic unit vector, rounded to float32 so every encoding carries the same numbers."""
    raw = b""
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    vec = [u / 2**31 - 1.0 for u in struct.unpack(f"<{dimensions}I", raw[:4 * dimensions])]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in vec))))


class CohereHandler(FakeHandler):
    """Routes POST /v2/chat, /v2/embed, /v2/rerank, /v1/rerank and the OpenAI-compatible /compat/v1/rerank."""

    server_version = "envoy"

    def route(self, method, path, query, headers, body):
        fake = self.server.fake
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if method == "POST" and path == COMPAT_RERANK:
            return self.compat_rerank(token, body)
        if method != "POST" or path not in COHERE_ROUTES:
            return self.error(404, f"unknown route {method} {path}")
        if not token:
            return self.error(401, "no api key supplied")
        if token != fake.api_key:
            return self.error(401, "invalid api token")
        if not isinstance(body, dict):
            return self.error(400, "invalid request: body must be a JSON object")
        model = body.get("model")
        if model == "leak-key":  # an upstream that echoes the key back: the gateway must scrub it
            return self.error(401, f"invalid api token: {token}")
        if model in FAILURES:
            status, message = FAILURES[model]
            return self.error(status, message, {"Retry-After": "3"} if status == 429 else None)
        if path == "/v2/embed":
            return self.embed(body)
        if path == "/v2/rerank":
            return self.rerank_v2(body)
        if path == "/v1/rerank":
            return self.rerank_v1(body)
        return self.chat(body)

    def error(self, status, message, headers=None):
        """Cohere's error body: `{"id", "message"}`."""
        self.send_json(status, {"id": str(uuid.uuid4()), "message": message}, headers)

    # ---- chat -----------------------------------------------------------------------------------

    def chat(self, body):
        unknown = sorted(set(body) - CHAT_FIELDS)
        if unknown:
            return self.error(400, f"invalid request: unknown field: parameter {unknown[0]} is not a valid field")
        problem = _check_chat(body)
        if problem:
            return self.error(400, problem)
        messages = body["messages"]
        images = sum(1 for m in messages if isinstance(m.get("content"), list)
                     for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url")
        if images and "vision" not in body["model"]:
            return self.error(400, f"invalid request: model '{body['model']}' does not support image inputs")
        last = messages[-1]
        tools = body.get("tools") or []
        prompt_tokens = sum(words(text_of(m.get("content")) or m.get("tool_plan") or "") for m in messages)
        plan = None
        if tools and body.get("tool_choice") != "NONE" and last.get("role") == "user" and \
                "weather" in text_of(last.get("content")).lower():
            name = tools[0]["function"]["name"]
            cities = [c for c in CITIES if c.lower() in text_of(last["content"]).lower()] or ["Paris"]
            plan = [{"id": f"{name}_{uuid.uuid4().hex[:12]}", "type": "function",
                     "function": {"name": name, "arguments": json.dumps({"location": city})}} for city in cities]
            finish = "TOOL_CALL"
            out_tokens = words(TOOL_PLAN) + sum(words(c["function"]["arguments"]) for c in plan)
            text = ""
        else:
            if last.get("role") == "tool":
                text = TOOL_PREFIX + text_of(last.get("content"))
            else:
                users = [m for m in messages if m.get("role") == "user"]
                text = ANSWER_PREFIX + (text_of(users[-1].get("content")) if users else "")
                if images:
                    text += f" [images: {images}]"
            if (body.get("response_format") or {}).get("type") == "json_object":
                text = json.dumps({"answer": text})
            text, finish = _limit(text, body.get("max_tokens"), body.get("stop_sequences") or [])
            out_tokens = words(text)
        usage = {"billed_units": {"input_tokens": prompt_tokens, "output_tokens": out_tokens},
                 "tokens": {"input_tokens": prompt_tokens, "output_tokens": out_tokens}}
        reply_id = str(uuid.uuid4())
        if body.get("stream"):
            return self.stream_chat(body["model"], reply_id, text, plan, finish, usage)
        message = {"role": "assistant"}
        if plan:
            message.update({"tool_plan": TOOL_PLAN, "tool_calls": plan})
        else:
            message.update({"content": [{"type": "text", "text": text}]})
        self.send_json(200, {"id": reply_id, "finish_reason": finish, "message": message, "usage": usage})

    def stream_chat(self, model, reply_id, text, plan, finish, usage):
        """Cohere v2 SSE: `event: <type>` + `data: <json carrying type>` per event."""
        self.start_chunked("text/event-stream", headers={"Cache-Control": "no-cache"})

        def send(event):
            self.write_sse(event, event=event["type"])

        send({"id": reply_id, "type": "message-start", "delta": {"message": {
            "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}})
        if plan:
            for piece in _pieces(TOOL_PLAN):
                send({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}})
            for i, call in enumerate(plan):
                start = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
                send({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": start}}})
                args = call["function"]["arguments"]
                for at in range(0, len(args), 5):  # arguments arrive in several pieces
                    send({"type": "tool-call-delta", "index": i,
                          "delta": {"message": {"tool_calls": {"function": {"arguments": args[at:at + 5]}}}}})
                send({"type": "tool-call-end", "index": i})
        else:
            send({"type": "content-start", "index": 0,
                  "delta": {"message": {"content": {"type": "text", "text": ""}}}})
            for n, piece in enumerate(_pieces(text)):
                if model == "cut-stream" and n == 2:  # the body just ends: no content-end, no message-end
                    return self.end_chunked()
                send({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}},
                      "logprobs": None})
            send({"type": "content-end", "index": 0})
        end = {"finish_reason": finish, "usage": usage}
        if model == "stream-error":
            end = {"finish_reason": "ERROR", "error": "the model stopped unexpectedly", "usage": usage}
        send({"type": "message-end", "delta": end})
        self.end_chunked()

    # ---- embed ----------------------------------------------------------------------------------

    def embed(self, body):
        unknown = sorted(set(body) - EMBED_FIELDS)
        if unknown:
            return self.error(400, f"invalid request: unknown field: parameter {unknown[0]} is not a valid field")
        texts = body.get("texts")
        if body.get("input_type") not in INPUT_TYPES:
            return self.error(400, "invalid request: valid input_type must be provided with the provided model")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return self.error(400, "invalid request: texts must be a non-empty list of strings")
        if len(texts) > 96:
            return self.error(400, "invalid request: texts must have at most 96 elements")
        dims = body.get("output_dimension") or DEFAULT_DIMENSIONS
        types = body.get("embedding_types") or ["float"]
        embeddings = {}
        if "float" in types:
            embeddings["float"] = [fake_embedding(t, dims) for t in texts]
        if "int8" in types:
            embeddings["int8"] = [[max(-128, min(127, round(v * 127))) for v in fake_embedding(t, dims)] for t in texts]
        tokens = sum(words(t) for t in texts)
        self.send_json(200, {"id": str(uuid.uuid4()), "response_type": "embeddings_by_type", "texts": texts,
                             "embeddings": embeddings,
                             "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}}})

    # ---- rerank (Cohere) ------------------------------------------------------------------------

    def rerank_v2(self, body):
        unknown = sorted(set(body) - RERANK_V2_FIELDS)
        if unknown:
            return self.error(422, _unknown_rerank_field(unknown[0]))
        if not isinstance(body.get("model"), str) or not body["model"]:
            return self.error(400, "invalid request: model must be provided")
        problem = _check_rerank(body)
        if problem:
            return self.error(400, problem)
        documents = body["documents"]
        for i, doc in enumerate(documents):
            if not isinstance(doc, str):
                return self.error(400, f"invalid request: documents[{i}] must be a string")
        limit = body.get("max_tokens_per_doc")
        if limit is not None and (not _is_int(limit) or limit < 1):
            return self.error(400, "invalid request: max_tokens_per_doc must be at least 1")
        texts = [" ".join(d.split()[:limit]) if limit else d for d in documents]
        ranked = rank(body["query"], texts, body.get("top_n"))
        self.send_json(200, {"id": str(uuid.uuid4()),
                             "results": [{"index": i, "relevance_score": score} for score, i in ranked],
                             "meta": _rerank_meta("2", len(documents))})

    def rerank_v1(self, body):
        unknown = sorted(set(body) - RERANK_V1_FIELDS)
        if unknown:
            return self.error(422, _unknown_rerank_field(unknown[0]))
        problem = _check_rerank(body)
        if problem:
            return self.error(400, problem)
        rank_fields = body.get("rank_fields") or ["text"]
        if not isinstance(rank_fields, list) or not all(isinstance(f, str) for f in rank_fields):
            return self.error(400, "invalid request: rank_fields must be a list of strings")
        documents = body["documents"]
        texts = []
        for i, doc in enumerate(documents):
            if isinstance(doc, str):
                texts.append(doc)
            elif isinstance(doc, dict):
                missing = [f for f in rank_fields if f not in doc]
                if missing:
                    return self.error(400, f"invalid request: documents[{i}] is missing the rank field "
                                           f"'{missing[0]}'")
                texts.append(" ".join(str(doc[f]) for f in rank_fields))
            else:
                return self.error(400, f"invalid request: documents[{i}] must be a string or an object")
        return_documents = bool(body.get("return_documents"))
        results = []
        for score, i in rank(body["query"], texts, body.get("top_n")):
            result = {"index": i, "relevance_score": score}
            if return_documents:
                doc = documents[i]
                result["document"] = {"text": doc} if isinstance(doc, str) else doc
            results.append(result)
        self.send_json(200, {"id": str(uuid.uuid4()), "results": results, "meta": _rerank_meta("1", len(documents))})

    # ---- rerank (OpenAI-compatible: vLLM / Jina) ------------------------------------------------

    def openai_error(self, status, message, headers=None):
        """OpenAI's (and vLLM's) error envelope."""
        self.send_json(status, {"error": {"message": message, "type": OPENAI_ERROR_TYPES.get(status, "APIError"),
                                          "param": None, "code": status}}, headers)

    def compat_rerank(self, token, body):
        fake = self.server.fake
        if not token or token != fake.api_key:
            return self.openai_error(401, "Unauthorized")
        if not isinstance(body, dict):
            return self.openai_error(400, "body must be a JSON object")
        model = body.get("model")
        if model == "leak-key":
            return self.openai_error(401, f"invalid api key: {token}")
        if model in FAILURES:
            status, message = FAILURES[model]
            return self.openai_error(status, message, {"Retry-After": "3"} if status == 429 else None)
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            return self.openai_error(400, "query must be a non-empty string")
        documents = body.get("documents")
        if not isinstance(documents, list) or not documents:
            return self.openai_error(400, "documents must be a non-empty list")
        texts = []
        for i, doc in enumerate(documents):
            if isinstance(doc, dict) and isinstance(doc.get("text"), str):
                doc = doc["text"]
            if not isinstance(doc, str):
                return self.openai_error(400, f"documents[{i}] must be a string or an object with a text field")
            texts.append(doc)
        top_n = body.get("top_n")
        if top_n is not None and (not _is_int(top_n) or top_n < 0):
            return self.openai_error(400, "top_n must be a non-negative integer")
        return_documents = body.get("return_documents", True) is not False
        results = []
        for score, i in rank(query, texts, top_n or None):
            result = {"index": i, "relevance_score": score}
            if return_documents:
                result["document"] = {"text": texts[i]}
            results.append(result)
        tokens = compat_rerank_tokens(query, texts)
        self.send_json(200, {"id": f"rerank-{uuid.uuid4().hex}", "model": model or COMPAT_DEFAULT_MODEL,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}, "results": results})


def _terms(text):
    """Ranking terms: lower-cased regex word runs."""
    return re.findall(r"\w+", text.lower())


def relevance(query, document):
    """The fake relevance score: the share of query terms found in the document (0.0 .. 1.0)."""
    terms = _terms(query)
    if not terms:
        return 0.0
    present = set(_terms(document))
    return sum(1 for t in terms if t in present) / len(terms)


def rank(query, texts, top_n=None):
    """[(score, index)] best first, ties by index, cut to top_n (None: all)."""
    ranked = sorted(((relevance(query, t), i) for i, t in enumerate(texts)), key=lambda p: (-p[0], p[1]))
    return ranked[:top_n] if top_n else ranked


def search_units(n_documents):
    """Cohere bills one search unit per query of up to 100 documents."""
    return math.ceil(n_documents / DOCUMENTS_PER_SEARCH_UNIT)


def compat_rerank_tokens(query, texts):
    """The compat route's usage: one (query, document) pair read per document, in whitespace words."""
    return words(query) * len(texts) + sum(words(t) for t in texts)


def _rerank_meta(version, n_documents):
    return {"api_version": {"version": version}, "billed_units": {"search_units": search_units(n_documents)}}


def _unknown_rerank_field(name):
    return (f"unknown field: parameter '{name}' is not a valid field. For proper usage, please refer to "
            "https://docs.cohere.com/reference/rerank")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_rerank(body):
    """What Cohere refuses in any rerank body (query, documents, top_n); None when it is acceptable."""
    query = body.get("query")
    if query is None:
        return "invalid request: query must be provided"
    if not isinstance(query, str) or not query.strip():
        return "invalid request: query must be a non-empty string"
    documents = body.get("documents")
    if documents is None or documents == []:
        return "invalid request: list of documents must not be empty"
    if not isinstance(documents, list):
        return "invalid request: documents must be a list"
    if len(documents) > MAX_RERANK_DOCUMENTS:
        return (f"invalid request: too many documents, got {len(documents)} but the maximum is "
                f"{MAX_RERANK_DOCUMENTS}")
    top_n = body.get("top_n")
    if top_n is not None and (not _is_int(top_n) or top_n < 1):
        return "invalid request: top_n must be at least 1"
    return None


def _check_chat(body):
    """What Cohere refuses in a chat body; None when it is acceptable."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "invalid request: model must be provided"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "invalid request: messages must not be empty"
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "user", "assistant", "tool"):
            return f"invalid request: messages[{i}].role must be one of system, user, assistant, tool"
        if role == "system" and i != 0:
            return "system turn must be the first in the list"
        if role == "tool" and not m.get("tool_call_id"):
            return f"invalid request: messages[{i}].tool_call_id is required"
        if role == "assistant" and m.get("tool_calls"):
            for call in m["tool_calls"]:
                if not isinstance((call.get("function") or {}).get("arguments"), str):
                    return f"invalid request: messages[{i}].tool_calls[].function.arguments must be a string"
        if role == "user" and isinstance(m.get("content"), list):
            for part in m["content"]:
                if part.get("type") not in ("text", "image_url"):
                    return f"invalid request: unsupported content type {part.get('type')!r}"
    if body.get("tool_choice") not in (None, "REQUIRED", "NONE"):
        return "invalid request: tool_choice must be one of REQUIRED, NONE"
    if body.get("tool_choice") and not body.get("tools"):
        return "invalid request: tool_choice requires tools"
    if len(body.get("stop_sequences") or []) > 5:
        return "invalid request: stop_sequences can have at most 5 elements"
    p = body.get("p")
    if p is not None and not 0.01 <= p <= 0.99:
        return "invalid request: p must be between 0.01 and 0.99"
    return None


def _limit(text, max_tokens, stops):
    """Apply stop sequences then max_tokens: (text, finish_reason)."""
    for stop in stops:
        if stop and stop in text:
            return text[:text.index(stop)], "STOP_SEQUENCE"
    parts = text.split(" ")
    if isinstance(max_tokens, int) and 0 < max_tokens < len(parts):
        return " ".join(parts[:max_tokens]), "MAX_TOKENS"
    return text, "COMPLETE"


def _pieces(text):
    """Word-sized pieces that join back to the text exactly."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


class FakeCohere(FakeServer):
    """The fake Cohere upstream; `api_key` is the only key it accepts."""

    handler = CohereHandler

    def __init__(self, api_key="co-fake-upstream-key-0123456789", **kwargs):
        super().__init__(**kwargs)
        self.api_key = api_key
