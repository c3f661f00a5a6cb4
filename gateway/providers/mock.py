"""LiteLLM's `mock_response`: a deployment answers with given text instead of calling its upstream.

From the request body (`"mock_response": "text"`, gated in api/ to admins or
`general_settings.allow_mock_response`) or from a deployment's `litellm_params.mock_response` (LiteLLM's
CI configs use it). The answer is a normal chat completion, text completion or stream of that text,
with usage counted from the text (4 characters a token, as the gateway estimates elsewhere); the
meter bills it at $0 and the ledger records it like any call. LiteLLM's error names
(`"litellm.RateLimitError"`, ...) raise that error instead, so retries and fallbacks can be tried.
"""

import time

from gateway import errors

# LiteLLM's mock error names -> (upstream HTTP status, error code) the mock answers with.
MOCK_ERRORS = {
    "litellm.RateLimitError": (429, None),
    "litellm.InternalServerError": (500, None),
    "litellm.ServiceUnavailableError": (503, None),
    "litellm.BadRequestError": (400, None),
    "litellm.ContextWindowExceededError": (400, "context_length_exceeded"),
}


def tokens(text):
    """A token count from text: 4 characters a token, at least one for any text."""
    return (len(text) + 3) // 4


def _prompt_tokens(endpoint, body):
    if endpoint == "chat":
        total = 0
        for message in body.get("messages") or ():
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            total += tokens(content) if isinstance(content, str) else 0
        return total
    prompt = body.get("prompt")
    return tokens(prompt if isinstance(prompt, str) else " ".join(p for p in prompt or () if isinstance(p, str)))


def _raise_named(provider, text):
    """LiteLLM's mock error names raise that error, as an upstream answering it would."""
    if text == "litellm.Timeout":
        raise errors.UpstreamTimeoutError(f"Mock timeout (mock_response) from {provider.label}")
    found = MOCK_ERRORS.get(text)
    if found is not None:
        raise errors.from_upstream_status(found[0], f"Mock error {text} (mock_response)", code=found[1],
                                          deployment=provider.label)


def answer(provider, endpoint, body, stream, text):
    """The mock answer: an OpenAI-shaped dict, or a ChunkStream of the text."""
    if endpoint == "embeddings":
        raise errors.BadRequestError("`mock_response` answers chat and completions calls only.",
                                     param="mock_response")
    _raise_named(provider, text)
    prompt, completion = _prompt_tokens(endpoint, body), tokens(text)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    created = int(time.time())
    chat = endpoint == "chat"
    base = {"id": f"{'chatcmpl' if chat else 'cmpl'}-mock{time.time_ns():x}", "created": created,
            "model": provider.model}
    if stream:
        from gateway.wire.upstream import ChunkStream
        return ChunkStream(provider, endpoint, _chunks(base, chat, text, usage, body))
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": "stop"}
        return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}
    return {**base, "object": "text_completion", "choices": [choice], "usage": usage}


def _chunks(base, chat, text, usage, body):
    """The text as OpenAI chunks (a few words each), then the usage chunk when asked for."""
    base = {**base, "object": "chat.completion.chunk" if chat else "text_completion"}
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    extra = {"usage": None} if include_usage else {}

    def choice(piece, reason=None, first=False):
        if chat:
            delta = {"role": "assistant", "content": piece} if first else ({"content": piece} if piece else {})
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}

    if chat:
        yield {**base, "choices": [choice("", first=True)], **extra}
    step = 64
    for i in range(0, len(text), step):
        yield {**base, "choices": [choice(text[i:i + step])], **extra}
    yield {**base, "choices": [choice("", "stop")], **extra}
    if include_usage:
        yield {**base, "choices": [], "usage": usage}
