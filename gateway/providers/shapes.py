"""Builders for OpenAI-shaped answers, chunks and message parts, shared by provider translators."""

import base64
import re
import struct
import time
import uuid

import orjson

from gateway.errors import BadRequestError

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.S)


def new_id(prefix="chatcmpl"):
    """A fresh OpenAI-style object id."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens, completion_tokens):
    """OpenAI's usage object; missing counts become 0."""
    prompt_tokens = int(prompt_tokens or 0)
    completion_tokens = int(completion_tokens or 0)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def message(content=None, tool_calls=None):
    """An assistant message; `content` is None when the answer is only tool calls."""
    msg = {"role": "assistant", "content": content}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg


def tool_call(call_id, name, arguments):
    """One OpenAI tool call; `arguments` is a JSON string (dicts are serialized)."""
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
    return {"id": call_id or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def chat_completion(model, choices, usage_obj=None, id_=None, created=None):
    """A chat.completion object from a list of (message, finish_reason) pairs."""
    return {"id": id_ or new_id(), "object": "chat.completion", "created": created or int(time.time()),
            "model": model,
            "choices": [{"index": i, "message": msg, "logprobs": None, "finish_reason": finish}
                        for i, (msg, finish) in enumerate(choices)],
            "usage": usage_obj or usage(0, 0)}


def chat_chunk(state, delta=None, finish_reason=None, index=0):
    """A chat.completion.chunk; `state` carries the stream's id, created and model."""
    return {"id": state["id"], "object": "chat.completion.chunk", "created": state["created"],
            "model": state["model"],
            "choices": [{"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]}


def stream_state(model, prefix="chatcmpl"):
    """Fresh per-stream state for translators (id, created, model, usage, tool indices)."""
    return {"id": new_id(prefix), "created": int(time.time()), "model": model, "usage": None,
            "role_sent": False, "tools": {}}


def embeddings(model, vectors, prompt_tokens=0):
    """An embeddings list with float vectors (encoding is applied later, once, for every provider)."""
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": int(prompt_tokens or 0), "total_tokens": int(prompt_tokens or 0)}}


def encode_embedding(vector, encoding_format):
    """Floats as a list, or as OpenAI's base64 of little-endian float32 when asked."""
    if encoding_format == "base64" and isinstance(vector, list):
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def text_of(content):
    """The text of a message content: a string, a list of parts, or None."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") in ("text", "input_text"))
    return ""


def embedding_inputs(body):
    """The embeddings `input` as a list of strings (token-id inputs are refused: no tokenizer here)."""
    value = body.get("input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BadRequestError("This provider takes embedding input as a string or a list of strings.",
                              param="input")
    return items


def image_source(part):
    """An image_url part as ("base64", media_type, data) or ("url", None, url)."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise BadRequestError("image_url.url is required", param="messages")
    match = _DATA_URL.match(url)
    if match:
        if not match.group("b64"):
            raise BadRequestError("Image data URLs must be base64-encoded.", param="messages")
        return "base64", match.group("mime") or "image/png", match.group("data")
    if url.startswith(("http://", "https://")):
        return "url", None, url
    raise BadRequestError("image_url.url must be an http(s) URL or a base64 data URL.", param="messages")


def tool_arguments(arguments):
    """Parse a tool call's JSON `arguments` string into an object for providers that want one."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise BadRequestError("tool_calls[].function.arguments must be a JSON object string.",
                              param="messages") from None
    return value if isinstance(value, dict) else {"value": value}


def legacy_functions_to_tools(body):
    """Map the legacy `functions`/`function_call` to `tools`/`tool_choice` (a new dict)."""
    if not body.get("functions") or body.get("tools"):
        return body
    out = {k: v for k, v in body.items() if k not in ("functions", "function_call")}
    out["tools"] = [{"type": "function", "function": f} for f in body["functions"]]
    choice = body.get("function_call")
    if isinstance(choice, dict) and choice.get("name"):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice in ("none", "auto"):
        out["tool_choice"] = choice
    return out


def estimate_tokens(chars):
    """A token count from a character count (~4 characters a token), for upstreams that report none."""
    return (chars + 3) // 4 if chars else 0


def error_json(raw):
    """An upstream error body parsed as JSON, or None when it is empty or not JSON."""
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
