"""Request/answer adapters shared by providers: completions via chat, legacy functions, params.

All pure: dicts in, dicts out.
"""

import orjson

from gateway.errors import BadRequestError
from gateway.providers.shapes import legacy_functions_to_tools
from gateway.providers.shapes import text_of

# OpenAI parameters a provider either maps or must refuse (unknown, non-OpenAI keys are ignored by
# translating providers and passed through by OpenAI-compatible ones).
OPENAI_PARAMS = frozenset({
    "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "seed", "response_format",
    "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "service_tier", "store",
    "reasoning_effort", "modalities", "audio", "prediction", "web_search_options", "dimensions",
    "suffix", "echo", "best_of",
})
# Always understood: the gateway itself handles these for every provider.
ALWAYS = frozenset({"model", "messages", "prompt", "input", "stream", "stream_options", "encoding_format"})


def check_params(provider, endpoint, body, drop_params):
    """Drop (drop_params) or refuse (400) OpenAI parameters the provider cannot take."""
    supported = provider.supported_params
    if supported is None:
        return body
    unsupported = [k for k in body if k in OPENAI_PARAMS and k not in supported and body[k] is not None]
    if "n" in unsupported and body.get("n") == 1:
        unsupported.remove("n")
    if not unsupported:
        return body
    if drop_params:
        return {k: v for k, v in body.items() if k not in unsupported}
    name = unsupported[0]
    raise BadRequestError(
        f"{provider.name} does not support the parameter `{name}`. Remove it, or set "
        "`litellm_settings.drop_params: true` (or --drop_params) to drop it.", param=name,
        code="unsupported_parameter")


def tools_into_prompt(body):
    """LiteLLM's add_function_to_prompt: describe the tools in a system message, drop them."""
    body = legacy_functions_to_tools(body)
    tools = body.get("tools") or []
    spec = orjson.dumps([t.get("function", t) for t in tools]).decode()
    note = ("You can call these functions. To call one, answer only with JSON "
            '{"name": <function name>, "arguments": {...}}.\nFunctions: ' + spec)
    messages = list(body.get("messages") or [])
    if messages and messages[0].get("role") == "system":
        messages[0] = {**messages[0], "content": f"{text_of(messages[0].get('content'))}\n\n{note}"}
    else:
        messages.insert(0, {"role": "system", "content": note})
    return {k: v for k, v in body.items() if k not in ("tools", "tool_choice", "parallel_tool_calls")} | {
        "messages": messages}


def prepare_tools(provider, body, settings):
    """Legacy functions -> tools; tools for a provider without them: into the prompt, dropped or 400."""
    if not (body.get("tools") or body.get("functions")):
        return body
    if provider.tools and provider.supported_params is None:
        return body  # OpenAI-compatible: the upstream speaks legacy functions itself
    if provider.tools:
        return legacy_functions_to_tools(body)
    if settings.add_function_to_prompt:
        return tools_into_prompt(body)
    if settings.drop_params:
        return {k: v for k, v in body.items()
                if k not in ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls")}
    raise BadRequestError(
        f"{provider.name} models here have no tool support. Set `litellm_settings.add_function_to_prompt` "
        "to describe the tools in the prompt, or drop_params to drop them.", param="tools",
        code="unsupported_parameter")


def completion_to_chat(body):
    """A /completions body as a chat body: the prompt becomes one user message."""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise BadRequestError("This model answers /completions through chat: send one prompt string.",
                                  param="prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequestError("This model answers /completions through chat: send a prompt string.",
                              param="prompt")
    out = {k: v for k, v in body.items() if k not in ("prompt", "echo", "best_of", "suffix", "logprobs")}
    out["messages"] = [{"role": "user", "content": prompt}]
    return out


def chat_to_completion(answer):
    """A chat.completion as a text_completion."""
    return {"id": answer.get("id"), "object": "text_completion", "created": answer.get("created"),
            "model": answer.get("model"),
            "choices": [{"index": c.get("index", i), "text": (c.get("message") or {}).get("content") or "",
                         "logprobs": None, "finish_reason": c.get("finish_reason")}
                        for i, c in enumerate(answer.get("choices") or [])],
            "usage": answer.get("usage")}


def chat_chunk_to_completion(chunk):
    """A chat.completion.chunk as a text_completion stream chunk (usage chunks pass through)."""
    if "error" in chunk:
        return chunk
    out = {"id": chunk.get("id"), "object": "text_completion", "created": chunk.get("created"),
           "model": chunk.get("model"),
           "choices": [{"index": c.get("index", 0), "text": (c.get("delta") or {}).get("content") or "",
                        "logprobs": None, "finish_reason": c.get("finish_reason")}
                       for c in chunk.get("choices") or []]}
    if "usage" in chunk:
        out["usage"] = chunk["usage"]
    return out


def tools_to_function_call(answer):
    """For a request that used legacy `functions`: report the first tool call as `function_call`."""
    for choice in answer.get("choices") or []:
        msg = choice.get("message") or {}
        calls = msg.pop("tool_calls", None)
        if calls:
            msg["function_call"] = calls[0]["function"]
            if choice.get("finish_reason") == "tool_calls":
                choice["finish_reason"] = "function_call"
    return answer


def tool_chunk_to_function_call(chunk):
    """Streaming twin of tools_to_function_call: delta.tool_calls[0] -> delta.function_call."""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        calls = [c for c in delta.pop("tool_calls", None) or () if c.get("index", 0) == 0]
        if calls:  # legacy functions carry one call: later parallel calls are not reported
            delta["function_call"] = {k: v for k, v in (calls[0].get("function") or {}).items()}
        if choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "function_call"
    return chunk


def check_images(provider, body):
    """A clear 400 instead of silently dropping image parts sent to a text-only provider.

    Providers whose image support depends on the deployment (vision set per instance) check
    themselves, with a hint on how to enable it."""
    if getattr(type(provider), "vision", provider.vision):
        return
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url"
                                             for p in content):
            raise BadRequestError(f"{provider.name} models here are text only: no images (image_url parts).",
                                  param="messages", code="unsupported_content")
