"""Rerank answers in one shape, Cohere's (as LiteLLM answers /rerank): `{"id", "results": [{"index",
"relevance_score", "document"?}], "meta": {"billed_units": {"search_units" | "total_tokens"}}}`,
whether the upstream is Cohere (`/v2/rerank`) or an OpenAI-compatible rerank server (vLLM, Jina,
Together: `/rerank`, usage in tokens). Pure."""

import uuid


def documents_of(body):
    """The request's documents as text (Cohere v2 and most servers take strings; v1's `{"text": ...}`
    objects are read as their text)."""
    out = []
    for doc in body.get("documents") or ():
        out.append(doc.get("text", "") if isinstance(doc, dict) else doc)
    return out


def cohere_body(body):
    """A /rerank body as Cohere's /v2/rerank takes it."""
    out = {"model": body["model"], "query": body["query"], "documents": documents_of(body)}
    for name in ("top_n", "max_tokens_per_doc"):
        if body.get(name) is not None:
            out[name] = body[name]
    return out


def from_cohere(data, body):
    """Cohere's answer, documents added when the client asked for them (v2 never returns them)."""
    return _answer(data.get("id"), data.get("results"), (data.get("meta") or {}).get("billed_units") or {}, body)


def from_compatible(data, body):
    """An OpenAI-compatible rerank server's answer (`results`, or vLLM's `data`; `usage` in tokens)."""
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    billed = {"total_tokens": usage.get("total_tokens") or usage.get("prompt_tokens") or 0}
    if isinstance((data.get("meta") or {}).get("billed_units"), dict):  # a Cohere-shaped server
        billed = data["meta"]["billed_units"]
    return _answer(data.get("id"), data.get("results", data.get("data")), billed, body)


def _answer(answer_id, results, billed, body):
    if not isinstance(results, list):
        raise ValueError("no rerank results")
    texts = documents_of(body) if body.get("return_documents") else None
    out = []
    for item in results:
        index, score = item["index"], item["relevance_score"]
        row = {"index": index, "relevance_score": score}
        if texts is not None and 0 <= index < len(texts):
            row["document"] = {"text": texts[index]}
        out.append(row)
    return {"id": answer_id or str(uuid.uuid4()), "results": out, "meta": {"billed_units": billed}}


def billed_units(answer):
    """(search units, tokens) a rerank answer was billed."""
    billed = (answer.get("meta") or {}).get("billed_units") or {}
    units, tokens = billed.get("search_units"), billed.get("total_tokens")
    return (units if isinstance(units, int) and units > 0 else 0,
            tokens if isinstance(tokens, int) and tokens > 0 else 0)
