"""OpenAI's Responses API on providers that speak chat: a Responses body (its whole conversation in
`input`: the gateway keeps the state, see api/responses.py) to a chat body, and chat answers and
streams back to a Response object and its events (pure; the router calls these per deployment).

What chat cannot carry is refused with a 400 naming it (`not_translatable`): OpenAI's built-in tools
(web search, file search, computer use, ...), and their call items in the input. Reasoning items of
earlier turns are left out, as the thinking blocks of the Messages API are.
"""

import secrets
import time

from gateway import errors
from gateway.providers import shapes
from gateway.providers.messages import FILE_PROVIDERS
from gateway.providers.messages import finish_chat
from gateway.providers.messages import reasons

# What a Response echoes of its request when the request left it out.
ECHO_DEFAULTS = {"instructions": None, "max_output_tokens": None, "metadata": {}, "parallel_tool_calls": True,
                 "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": True,
                 "temperature": None, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
                 "top_p": None, "truncation": "disabled", "user": None}
_PASSED = ("temperature", "top_p", "user", "parallel_tool_calls")
# chat finish_reason -> (status, incomplete_details.reason)
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_ID_PREFIX = {"message": "msg", "function_call": "fc"}


def _bad(message, param="input"):
    return errors.BadRequestError(message, param=param, code="not_translatable")


def new_id(prefix):
    """An unguessable object id (`resp_...`, `msg_...`): 192 random bits."""
    return f"{prefix}_{secrets.token_hex(24)}"


# ---- input items ------------------------------------------------------------------------------

def input_items(value):
    """A request's `input` (a string or a list of items) as items with a type and an id, as
    /input_items lists them (a 400 names a malformed item)."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise errors.BadRequestError("`input` must be a string or a non-empty list of items.", param="input")
    items = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise errors.BadRequestError(f"input[{i}] must be an object.", param="input")
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            item = _message_item(item, i)
        elif kind in ("function_call", "function_call_output", "reasoning"):
            if kind != "reasoning" and not isinstance(item.get("call_id"), str):
                raise errors.BadRequestError(f"input[{i}].call_id is required.", param="input")
            item = {**item, "type": kind}
        elif not isinstance(kind, str):
            raise errors.BadRequestError(f"input[{i}] needs a type (or a role).", param="input")
        if "id" not in item:  # items of earlier turns keep theirs (no random bits drawn for them)
            item = {**item, "id": new_id(_ID_PREFIX.get(kind, "item"))}
        items.append(item)
    return items


def _message_item(item, i):
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise errors.BadRequestError(f"input[{i}].role must be user, assistant, system or developer.",
                                     param="input")
    content = item.get("content")
    if isinstance(content, str):
        content = [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise errors.BadRequestError(f"input[{i}].content must be a string or a list of parts.", param="input")
    return {**item, "type": "message", "role": role, "content": content}


# ---- requests: Responses -> chat --------------------------------------------------------------

def to_chat(body, provider, stream=False):
    """A Responses body (its `input` the whole conversation) as an OpenAI chat body for `provider`."""
    messages = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
    for i, item in enumerate(input_items(body.get("input"))):
        _add_item(messages, item, f"input[{i}]", provider)
    chat = {"model": body.get("model"), "messages": messages}
    limit = body.get("max_tokens") or body.get("max_output_tokens")  # max_tokens: the router's cap
    if limit is not None:
        chat["max_tokens"] = limit
    for name in _PASSED:
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("tools"):
        chat["tools"] = [_tool(t, provider) for t in body["tools"]]
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(text_format, dict) and text_format.get("type") in ("json_schema", "json_object"):
        chat["response_format"] = _response_format(text_format)
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if effort and reasons(provider):
        chat["reasoning_effort"] = effort
    return finish_chat(body, chat, stream)


def _add_item(messages, item, where, provider):
    kind = item["type"]
    if kind == "message":
        role = "system" if item["role"] == "developer" else item["role"]
        parts = [_part(p, f"{where}.content[{j}]", provider) for j, p in enumerate(item["content"])]
        parts = [p for p in parts if p is not None]
        texts_only = all(p["type"] == "text" for p in parts)
        if not texts_only and role != "user":
            raise _bad(f"{where}: only text can be carried in a {role} message.")
        if texts_only and (role != "user" or len(parts) <= 1):
            content = "".join(p["text"] for p in parts)
        else:
            content = parts
        messages.append({"role": role, "content": content})
    elif kind == "function_call":
        call = shapes.tool_call(item["call_id"], item.get("name"), item.get("arguments") or "{}")
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # one assistant turn: its text, then its calls
            last.setdefault("tool_calls", []).append(call)
            last["content"] = last.get("content") or None
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):
            output = "".join(p.get("text", "") for p in output if isinstance(p, dict))
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output or ""})
    elif kind != "reasoning":  # earlier turns' reasoning: see the module docstring
        raise _bad(f"{where}: an item of type {kind!r} cannot be carried to {provider.name}.")


def _part(part, where, provider):
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "refusal"):
        text = part.get("text") if kind != "refusal" else part.get("refusal")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _bad(f"{where}: an image is carried by its image_url (a file_id cannot be).")
        image = {"url": url}
        if part.get("detail") in ("low", "high"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if provider.name not in FILE_PROVIDERS:
            raise _bad(f"{where}: a file cannot be carried to {provider.name}.")
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k)}
        return {"type": "file", "file": file}
    raise _bad(f"{where}: a content part of type {kind!r} cannot be carried to {provider.name}.")


def _tool(tool, provider):
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("name"), str):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise _bad(f"The tool type {kind!r} runs on OpenAI's servers and cannot be carried to {provider.name}.",
                   param="tools")
    function = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
    for name in ("description", "strict"):
        if tool.get(name) is not None:
            function[name] = tool[name]
    return {"type": "function", "function": function}


def _tool_choice(choice):
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _bad("tool_choice must be auto, none, required or {type: function, name}.", param="tool_choice")


def _response_format(text_format):
    if text_format["type"] == "json_object":
        return {"type": "json_object"}
    schema = {k: text_format[k] for k in ("name", "schema", "strict", "description") if k in text_format}
    return {"type": "json_schema", "json_schema": schema}


# ---- answers: chat -> a Response -----------------------------------------------------------------

def skeleton(body, response_id, status="in_progress"):
    """A Response object for `body` with no output yet: its id, status and the request's echo fields."""
    out = {"id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
           "model": body.get("model"), "output": [], "usage": None, "error": None, "incomplete_details": None}
    for name, default in ECHO_DEFAULTS.items():
        value = body.get(name)
        out[name] = default if value is None else value
    return out


def response_usage(usage):
    """OpenAI chat usage as a Response's usage."""
    usage = usage or {}
    prompt_details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    done_details = (usage.get("completion_tokens_details")
                    if isinstance(usage.get("completion_tokens_details"), dict) else {})
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens") or 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": done_details.get("reasoning_tokens") or 0},
            "total_tokens": prompt + completion}


def chat_usage(usage):
    """A Response's usage as OpenAI chat usage (for billing)."""
    usage = usage if isinstance(usage, dict) else {}
    out = shapes.usage(usage.get("input_tokens"), usage.get("output_tokens"))
    details = usage.get("input_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens"):
        out["prompt_tokens_details"] = {"cached_tokens": details["cached_tokens"]}
    return out


def finish(response, finish_reason):
    """Set a finished Response's status (completed, or incomplete with the reason)."""
    reason = _INCOMPLETE.get(finish_reason)
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    return response


def from_chat(answer, body, response_id):
    """A chat.completion as a Response (the first choice)."""
    choice = (answer.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    output = []
    if isinstance(msg.get("reasoning_content"), str) and msg["reasoning_content"]:
        output.append({"type": "reasoning", "id": new_id("rs"),
                       "summary": [{"type": "summary_text", "text": msg["reasoning_content"]}]})
    if isinstance(msg.get("content"), str) and msg["content"]:
        output.append(_message(new_id("msg"), msg["content"], "completed"))
    for call in msg.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(_function_call(new_id("fc"), call.get("id") or new_id("call"), function.get("name"),
                                     function.get("arguments") or "", "completed"))
    response = skeleton(body, response_id)
    response["output"] = output
    response["usage"] = response_usage(answer.get("usage"))
    return finish(response, choice.get("finish_reason"))


def _message(item_id, text, status):
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _function_call(item_id, call_id, name, arguments, status):
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name or "",
            "arguments": arguments, "status": status}


def events_from_chunks(chunks, body, response_id):
    """Chat chunks as the Responses event sequence: response.created, response.in_progress, per output
    item its added / delta / done events, then response.completed (or response.incomplete)."""
    out = _Output(body, response_id)
    yield out.event("response.created", response=out.snapshot())
    yield out.event("response.in_progress", response=out.snapshot())
    finish_reason, usage = None, None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            yield from out.delta(choice.get("delta") or {})
            finish_reason = choice.get("finish_reason") or finish_reason
    yield from out.close()
    response = finish(out.snapshot(), finish_reason)
    response["usage"] = response_usage(usage)
    kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
    yield out.event(kind, response=response)


class _Output:
    """The output items of a translated stream: the open one, the finished ones, event numbering."""

    def __init__(self, body, response_id):
        self.response = skeleton(body, response_id)
        self.items = self.response["output"]
        self.open = None  # (kind, key) of the item being streamed
        self.sequence = 0

    def event(self, kind, **fields):
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def snapshot(self):
        return {**self.response, "output": [dict(item) for item in self.items]}

    def _start(self, key, item, part_added=None):
        """Open an output item: its added event, then its first part's (`part_added`: the event's
        name and fields), numbered in that order."""
        yield from self.close()
        self.open = key
        self.items.append(item)
        index = len(self.items) - 1
        yield self.event("response.output_item.added", output_index=index, item=dict(item))
        if part_added is not None:
            kind, fields = part_added
            yield self.event(kind, item_id=item["id"], output_index=index, **fields)

    def delta(self, delta):
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            if self.open != ("reasoning",):
                item = {"type": "reasoning", "id": new_id("rs"), "summary": []}
                part = ("response.reasoning_summary_part.added",
                        {"summary_index": 0, "part": {"type": "summary_text", "text": ""}})
                yield from self._start(("reasoning",), item, part)
                item["summary"] = [{"type": "summary_text", "text": ""}]
            item = self.items[-1]
            item["summary"][0]["text"] += reasoning
            yield self.event("response.reasoning_summary_text.delta", item_id=item["id"],
                             output_index=len(self.items) - 1, summary_index=0, delta=reasoning)
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.open != ("message",):
                item = _message(new_id("msg"), "", "in_progress")
                item["content"] = []
                part = ("response.content_part.added",
                        {"content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})
                yield from self._start(("message",), item, part)
                item["content"] = [{"type": "output_text", "text": "", "annotations": []}]
            item = self.items[-1]
            item["content"][0]["text"] += text
            yield self.event("response.output_text.delta", item_id=item["id"], output_index=len(self.items) - 1,
                             content_index=0, delta=text)
        for call in delta.get("tool_calls") or ():
            yield from self._call_delta(call)

    def _call_delta(self, call):
        key = ("function_call", call.get("index", 0))
        function = call.get("function") or {}
        if self.open != key:
            item = _function_call(new_id("fc"), call.get("id") or new_id("call"), function.get("name"), "",
                                  "in_progress")
            yield from self._start(key, item)
        item = self.items[-1]
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            item["arguments"] += piece
            yield self.event("response.function_call_arguments.delta", item_id=item["id"],
                             output_index=len(self.items) - 1, delta=piece)

    def close(self):
        """The done events of the open item."""
        if self.open is None:
            return
        kind, self.open = self.open[0], None
        index = len(self.items) - 1
        item = self.items[index]
        if kind == "message":
            part = item["content"][0]
            yield self.event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                             text=part["text"])
            yield self.event("response.content_part.done", item_id=item["id"], output_index=index,
                             content_index=0, part=dict(part))
        elif kind == "reasoning":
            part = item["summary"][0]
            yield self.event("response.reasoning_summary_text.done", item_id=item["id"], output_index=index,
                             summary_index=0, text=part["text"])
            yield self.event("response.reasoning_summary_part.done", item_id=item["id"], output_index=index,
                             summary_index=0, part=dict(part))
        else:
            yield self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                             arguments=item["arguments"])
        if kind != "reasoning":
            item["status"] = "completed"
        yield self.event("response.output_item.done", output_index=index, item=dict(item))
