"""A fake AI21 Studio upstream: Jamba `/studio/v1/chat/completions` and Jurassic-2 `/studio/v1/{model}/complete`.

Speaks the documented wire format closely enough that the official `ai21` SDK parses the Jamba
answers and streams (`data:` lines only, usage on the last chunk, then `data: [DONE]`) and raises its
typed errors. Errors are `{"detail": ...}`; body validation errors are FastAPI-style 422 lists (message
content must be a string, as Jamba requires).

Behaviour
    Jamba answers "Hello from fake AI21: <last user text>"; after a tool result "The tool said: <result>";
    with `tools` and "weather" in the last user message it calls the first tool with Paris; `n` answers;
    `max_tokens` cuts words ("length"); `response_format` json_object answers `{"answer": ...}`.
    Jurassic-2 answers " Hello from fake Jurassic-2, you wrote: <prompt, whitespace collapsed>",
    one completion per `numResults`, cut at `maxTokens` (AI21's default is 16), with per-token data.
    Token counts are whitespace words. Error triggers by model name: fail-400, fail-401, fail-404,
    fail-422, fail-429 (Retry-After), fail-500, fail-503, context-length, leak-key (echoes the key);
    cut-stream: a Jamba stream whose body ends after two content pieces.
"""

import json
import re
import uuid

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

ANSWER_PREFIX = "Hello from fake AI21: "
TOOL_PREFIX = "The tool said: "
J2_PREFIX = " Hello from fake Jurassic-2, you wrote: "
J2_DEFAULT_MAX_TOKENS = 16
_COMPLETE = re.compile(r"^/studio/v1/([^/]+)/complete$")

FAILURES = {
    "fail-400": (400, "Invalid messages: the last message must be from the user or a tool."),
    "fail-401": (401, "Forbidden: Bad or missing API token."),
    "fail-404": (404, "Model not found"),
    "fail-422": (422, [{"type": "less_than_equal", "loc": ["body", "temperature"],
                        "msg": "Input should be less than or equal to 2", "input": 5}]),
    "fail-429": (429, "Too many requests"),
    "fail-500": (500, "Internal server error"),
    "fail-503": (503, "Service Unavailable"),
    "context-length": (400, "Prompt is too long: 260123 tokens exceed the model's context length of 256000 tokens."),
}


def words(text):
    """The fake tokenizer: whitespace words."""
    return len(text.split())


class AI21Handler(FakeHandler):
    """Routes the Jamba chat endpoint and Jurassic-2 complete endpoints."""

    def route(self, method, path, query, headers, body):
        fake = self.server.fake
        j2 = _COMPLETE.match(path)
        if method != "POST" or not (path == "/studio/v1/chat/completions" or j2):
            return self.send_json(404, {"detail": "Not Found"})
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if token != fake.api_key:
            return self.send_json(401, {"detail": "Forbidden: Bad or missing API token."})
        if not isinstance(body, dict):
            return self.invalid([{"type": "json_invalid", "loc": ["body"], "msg": "JSON decode error"}])
        model = j2.group(1) if j2 else body.get("model")
        if model == "leak-key":
            return self.send_json(401, {"detail": f"Forbidden: bad API token {token}"})
        if model in FAILURES:
            status, detail = FAILURES[model]
            return self.send_json(status, {"detail": detail}, {"Retry-After": "2"} if status == 429 else None)
        return self.complete(model, body) if j2 else self.chat(body)

    def invalid(self, problems):
        """FastAPI's 422 shape."""
        self.send_json(422, {"detail": problems})

    # ---- Jamba ----------------------------------------------------------------------------------

    def chat(self, body):
        problems = _check_chat(body)
        if problems:
            return self.invalid(problems)
        messages = body["messages"]
        last = messages[-1]
        tools = body.get("tools") or []
        prompt_tokens = sum(words(m.get("content") or "") for m in messages)
        n = body.get("n") or 1
        choices = []
        for i in range(n):
            if tools and last["role"] == "user" and "weather" in last["content"].lower():
                call = {"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function", "function": {
                    "name": tools[0]["function"]["name"], "arguments": json.dumps({"location": "Paris"})}}
                choices.append({"index": i, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                                "logprobs": None, "finish_reason": "tool_calls"})
                continue
            if last["role"] == "tool":
                text = TOOL_PREFIX + last["content"]
            else:
                users = [m for m in messages if m["role"] == "user"]
                text = ANSWER_PREFIX + (users[-1]["content"] if users else "")
            if (body.get("response_format") or {}).get("type") == "json_object":
                text = json.dumps({"answer": text})
            finish = "stop"
            limit = body.get("max_tokens")
            parts = text.split(" ")
            if isinstance(limit, int) and 0 < limit < len(parts):
                text, finish = " ".join(parts[:limit]), "length"
            choices.append({"index": i, "message": {"role": "assistant", "content": text, "tool_calls": None},
                            "logprobs": None, "finish_reason": finish})
        completion_tokens = sum(words(c["message"]["content"] or json.dumps(c["message"]["tool_calls"]))
                                for c in choices)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        reply_id = f"chat-{uuid.uuid4().hex}"
        if body.get("stream"):
            return self.stream_chat(reply_id, choices, usage, cut=body["model"] == "cut-stream")
        self.send_json(200, {"id": reply_id, "choices": choices, "usage": usage, "model": body["model"],
                             "meta": {"requestDurationMillis": 12}})

    def stream_chat(self, reply_id, choices, usage, cut=False):
        """`data:` lines only (the SDK refuses any other line); usage on the last chunk; `[DONE]`.
        cut: the body ends after two content pieces (no finish_reason, no `[DONE]`)."""
        self.start_chunked("text/event-stream")

        def send(choice_index, delta, finish=None, last_usage=None):
            self.write_sse({"id": reply_id, "choices": [{"index": choice_index, "delta": delta, "logprobs": None,
                                                         "finish_reason": finish}], "usage": last_usage})

        for n, choice in enumerate(choices):
            send(choice["index"], {"role": "assistant"})
            message = choice["message"]
            if message.get("tool_calls"):
                for i, call in enumerate(message["tool_calls"]):
                    args = call["function"]["arguments"]
                    first = {"index": i, "id": call["id"], "type": "function",
                             "function": {"name": call["function"]["name"], "arguments": args[:6]}}
                    send(choice["index"], {"tool_calls": [first]})
                    for at in range(6, len(args), 6):  # arguments arrive in several pieces
                        piece = {"index": i, "function": {"arguments": args[at:at + 6]}}
                        send(choice["index"], {"tool_calls": [piece]})
            else:
                for k, piece in enumerate(re.findall(r"\S+\s*|\s+", message["content"])):
                    if cut and k == 2:
                        return self.end_chunked()
                    send(choice["index"], {"content": piece})
            send(choice["index"], {"content": ""} if not message.get("tool_calls") else {}, choice["finish_reason"],
                 usage if n == len(choices) - 1 else None)
        self.write_sse("[DONE]")
        self.end_chunked()

    # ---- Jurassic-2 -----------------------------------------------------------------------------

    def complete(self, model, body):
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return self.invalid([{"type": "missing", "loc": ["body", "prompt"], "msg": "Field required"}])
        for key in ("presencePenalty", "frequencyPenalty", "countPenalty"):
            if key in body and not isinstance(body[key], dict):
                return self.invalid([{"type": "model_type", "loc": ["body", key], "msg": "Input should be an object"}])
        limit = body.get("maxTokens", J2_DEFAULT_MAX_TOKENS)
        stops = body.get("stopSequences") or []
        completions = []
        for _ in range(body.get("numResults") or 1):
            text = J2_PREFIX + " ".join(prompt.split())
            finish = {"reason": "endoftext"}
            for stop in stops:
                if stop and stop in text:
                    text, finish = text[:text.index(stop)], {"reason": "stop", "sequence": stop}
                    break
            tokens = re.findall(r"\s*\S+", text)
            if len(tokens) > limit:
                tokens, finish = tokens[:limit], {"reason": "length", "length": limit}
                text = "".join(tokens)
            completions.append({"data": {"text": text, "tokens": _token_data(tokens)}, "finishReason": finish})
        self.send_json(200, {"id": str(uuid.uuid4()),
                             "prompt": {"text": prompt, "tokens": _token_data(re.findall(r"\s*\S+", prompt))},
                             "completions": completions})


def _token_data(tokens):
    """J2's per-token records: generatedToken, topTokens, textRange."""
    out, at = [], 0
    for token in tokens:
        out.append({"generatedToken": {"token": token.replace(" ", "▁"), "logprob": -1.0, "raw_logprob": -1.0},
                    "topTokens": None, "textRange": {"start": at, "end": at + len(token)}})
        at += len(token)
    return out


def _check_chat(body):
    """FastAPI-style problems with a Jamba chat body (empty when acceptable)."""
    problems = []
    if not isinstance(body.get("model"), str):
        problems.append({"type": "missing", "loc": ["body", "model"], "msg": "Field required"})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return problems + [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}]
    for i, m in enumerate(messages):
        if m.get("role") not in ("system", "user", "assistant", "tool"):
            problems.append({"type": "literal_error", "loc": ["body", "messages", i, "role"],
                             "msg": "Input should be 'system', 'user', 'assistant' or 'tool'"})
        if not isinstance(m.get("content"), str) and not (m.get("role") == "assistant" and m.get("tool_calls")):
            problems.append({"type": "string_type", "loc": ["body", "messages", i, "content"],
                             "msg": "Input should be a valid string"})
        if m.get("role") == "tool" and not m.get("tool_call_id"):
            problems.append({"type": "missing", "loc": ["body", "messages", i, "tool_call_id"],
                             "msg": "Field required"})
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        problems.append({"type": "less_than_equal", "loc": ["body", "temperature"],
                         "msg": "Input should be less than or equal to 2"})
    fmt = body.get("response_format")
    if fmt is not None and fmt.get("type") not in ("text", "json_object"):
        problems.append({"type": "literal_error", "loc": ["body", "response_format", "type"],
                         "msg": "Input should be 'text' or 'json_object'"})
    return problems


class FakeAI21(FakeServer):
    """The fake AI21 upstream; `api_key` is the only key it accepts."""

    handler = AI21Handler

    def __init__(self, api_key="ai21-fake-upstream-key-0123456789", **kwargs):
        super().__init__(**kwargs)
        self.api_key = api_key
