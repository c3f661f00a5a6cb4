"""A call event as Langfuse ingestion events: one trace-create and one generation-create.

Shapes follow Langfuse's public ingestion API (POST /api/public/ingestion, `{"batch": [...]}`, each
event an envelope `{id, type, timestamp, body}`). The trace id is the request id unless the client
names one in `metadata.trace_id`; like the LiteLLM proxy, `metadata` may also set `trace_name`,
`generation_name`, `session_id`, `trace_user_id` and `tags`.
"""

import time
import uuid

from gateway.telemetry.events import iso

LEVEL_FAILED = "ERROR"
LEVEL_OK = "DEFAULT"
_MODEL_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "presence_penalty",
                 "frequency_penalty", "seed", "stop", "stream", "dimensions", "encoding_format")


def _text(value):
    return value if isinstance(value, str) and value else None


def _model_parameters(request):
    """Sampling parameters as Langfuse's map of scalars (lists of strings for `stop`)."""
    params = {}
    for key in _MODEL_PARAMS:
        value = request.get(key)
        if isinstance(value, (str, int, float, bool)):
            params[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            params[key] = value
    return params


def _io(event):
    """The generation's input and output (None when message text is not logged)."""
    request, kind = event["request"], event["call_type"]
    source = {"chat": "messages", "completions": "prompt", "embeddings": "input"}.get(kind, "messages")
    text = event.get("response_text")
    if text is None or kind == "embeddings":
        output = None
    else:
        output = {"role": "assistant", "content": text} if kind == "chat" else text
    return request.get(source), output


def _compact(body):
    return {k: v for k, v in body.items() if v is not None and v != {} and v != []}


def ingestion_events(event):
    """[trace-create, generation-create] envelopes for one call event (gateway.telemetry.callbacks.call_event)."""
    meta = event.get("metadata") or {}
    request = event.get("request") or {}
    name = f"gateway-{event['call_type']}"
    trace_id = _text(meta.get("trace_id")) or event["request_id"]
    failed = event["status"] != "success"
    tags = meta.get("tags")
    tags = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else None
    prompt, completion = event["prompt_tokens"], event["completion_tokens"]
    inputs, output = _io(event)
    facts = _compact({
        "request_id": event["request_id"], "model_group": event["model_group"],
        "deployment_id": event["deployment_id"], "provider": event["provider"], "api_base": event["api_base"],
        "key_alias": event["key_alias"], "user_id": event["user_id"], "team_id": event["team_id"],
        "status": event["status"], "http_status": event["http_status"], "error_type": event["error_type"],
        "cache_hit": event["cache_hit"], "estimated": event["estimated"], "stream": event["stream"],
        "retries": event["retries"], "fallbacks": event["fallbacks"], "attempts": event["attempts"],
        "requester_metadata": meta or None})
    trace = _compact({
        "id": trace_id, "timestamp": event["start_time"], "name": _text(meta.get("trace_name")) or name,
        "userId": _text(meta.get("trace_user_id")) or event["user_id"] or _text(request.get("user")),
        "sessionId": _text(meta.get("session_id")), "tags": tags, "input": inputs, "output": output,
        "metadata": {k: facts[k] for k in ("request_id", "model_group", "key_alias", "team_id") if k in facts}})
    status_message = event["error_message"] or (
        "the client disconnected before the answer ended" if event["status"] == "client_disconnected" else None)
    generation = _compact({
        "id": event["request_id"], "traceId": trace_id, "name": _text(meta.get("generation_name")) or name,
        "startTime": event["start_time"], "endTime": event["end_time"],
        "completionStartTime": event.get("completion_start_time"),
        "model": event["model"] or event["model_group"], "modelParameters": _model_parameters(request),
        "input": inputs, "output": output,
        "usage": {"input": prompt, "output": completion, "total": prompt + completion, "unit": "TOKENS",
                  "totalCost": event["cost"]},
        "usageDetails": {"input": prompt, "output": completion, "total": prompt + completion},
        "costDetails": {"total": event["cost"]},
        "level": LEVEL_FAILED if failed else LEVEL_OK, "statusMessage": status_message,
        "metadata": facts})
    now = iso(time.time())
    return [{"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": now, "body": trace},
            {"id": str(uuid.uuid4()), "type": "generation-create", "timestamp": now, "body": generation}]
