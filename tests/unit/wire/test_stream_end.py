"""A complete upstream stream vs a cut one, per provider, by its documented end marker (issue #11
item 7): the same events with and without the terminal one, through gateway.upstream.translated_chunks
(or the AWS providers' end_of_stream). A body that ends before the marker is an UpstreamError, never a
complete answer that could be cached and billed as a success."""

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers.bedrock import BedrockProvider
from gateway.config.settings import DeploymentConfig
from gateway.wire.sse import SSEDecoder
from gateway.wire.upstream import translated_chunks

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
KEY = "k-0123456789"
AWS = {"aws_access_key_id": "AKIAUNIT", "aws_secret_access_key": "unit-secret", "aws_region_name": "us-east-1"}


def make(model, **params):
    return providers.build(DeploymentConfig(model_name="g", params={"model": model, **params}, model_info={},
                                            index=0))


def run(provider, events, endpoint="chat", body=CHAT):
    state = provider.new_stream_state(endpoint, body)
    return list(translated_chunks(provider, endpoint, iter(events), state, 5))


def js(*objs):
    return [o if isinstance(o, bytes) else orjson.dumps(o) for o in objs]


def sse(raw):
    return list(SSEDecoder().feed(raw))


def openai_chunk(content=None, finish=None):
    return {"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]}


# Each case: the provider, its complete stream, and the same stream cut before its end marker.
CASES = {
    "openai": (lambda: make("openai/gpt-4o", api_key=KEY),
               js(openai_chunk("a"), openai_chunk(finish="stop"), b"[DONE]"),
               js(openai_chunk("a"), openai_chunk("b"))),
    "openai-finish-without-done": (lambda: make("openai/gpt-4o", api_key=KEY),
                                   js(openai_chunk("a"), openai_chunk(finish="stop")),
                                   js(openai_chunk("a"))),
    "anthropic": (lambda: make("anthropic/claude-3-haiku", api_key=KEY),
                  js({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1}}},
                     {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                     {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}},
                     {"type": "content_block_stop", "index": 0},
                     {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
                     {"type": "message_stop"}),
                  # everything but message_stop: even a stop_reason is not the end of the stream
                  js({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1}}},
                     {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}},
                     {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}})),
    "gemini": (lambda: make("gemini/gemini-2.0-flash", api_key=KEY),
               js({"candidates": [{"content": {"parts": [{"text": "a"}], "role": "model"}}]},
                  {"candidates": [{"content": {"parts": [{"text": "b"}], "role": "model"}, "finishReason": "STOP"}]}),
               js({"candidates": [{"content": {"parts": [{"text": "a"}], "role": "model"}}]},
                  {"candidates": [{"content": {"parts": [{"text": "b"}], "role": "model"}}]})),
    "gemini-two-candidates": (lambda: make("gemini/gemini-2.0-flash", api_key=KEY),
                              js({"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0},
                                                 {"content": {"parts": [{"text": "b"}]}, "index": 1}]},
                                 {"candidates": [{"finishReason": "STOP", "index": 0},
                                                 {"finishReason": "STOP", "index": 1}]}),
                              js({"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0},
                                                 {"content": {"parts": [{"text": "b"}]}, "index": 1}]},
                                 {"candidates": [{"finishReason": "STOP", "index": 0}]})),
    "cohere": (lambda: make("cohere/command-r", api_key=KEY),
               js({"type": "message-start", "id": "x"},
                  {"type": "content-delta", "delta": {"message": {"content": {"text": "a"}}}},
                  {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": {}}}),
               js({"type": "message-start", "id": "x"},
                  {"type": "content-delta", "delta": {"message": {"content": {"text": "a"}}}},
                  {"type": "content-end", "index": 0})),
    "ollama": (lambda: make("ollama_chat/llama3"),
               js({"message": {"role": "assistant", "content": "a"}, "done": False},
                  {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"}),
               js({"message": {"role": "assistant", "content": "a"}, "done": False})),
    "ai21": (lambda: make("ai21/jamba-large", api_key=KEY),
             js({"id": "j", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]},
                {"id": "j", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, b"[DONE]"),
             js({"id": "j", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]})),
    "huggingface-generate": (
        lambda: make("huggingface/org/model", api_base="http://tgi.test"),
        js({"token": {"text": "a", "special": False}, "generated_text": None, "details": None},
           {"token": {"text": "b", "special": False}, "generated_text": "ab",
            "details": {"finish_reason": "eos_token", "generated_tokens": 2}}),
        js({"token": {"text": "a", "special": False}, "generated_text": None, "details": None},
           {"token": {"text": "b", "special": False}, "generated_text": None, "details": None})),
    "huggingface-chat-api": (lambda: make("huggingface/org/model", api_base="http://tgi.test/v1"),
                             js(openai_chunk("a"), openai_chunk(finish="stop")),  # TGI < 2 sent no [DONE]
                             js(openai_chunk("a"), openai_chunk("b"))),
    "replicate": (lambda: make("replicate/meta/llama", api_key=KEY),
                  sse(b"event: output\ndata: a\n\nevent: output\ndata: b\n\nevent: done\ndata: {}\n\n"),
                  sse(b"event: output\ndata: a\n\nevent: output\ndata: b\n\n")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_complete_stream_passes_and_cut_stream_is_an_error(case):
    build, complete, cut = CASES[case]
    chunks = run(build(), complete)
    assert any(choice.get("finish_reason") for c in chunks for choice in c.get("choices") or ())
    provider = build()
    with pytest.raises(errors.UpstreamError) as info:
        run(provider, cut)
    assert type(info.value) is errors.UpstreamError and info.value.status == 502
    assert "ended before completion" in info.value.message and provider.label in info.value.message
    assert info.value.code == "upstream_stream_incomplete"


def test_an_empty_stream_is_cut():
    with pytest.raises(errors.UpstreamError, match="ended before completion"):
        run(make("openai/gpt-4o", api_key=KEY), [])


BEDROCK_EVENTS = [{"messageStart": {"role": "assistant"}},
                  {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "a"}}},
                  {"contentBlockStop": {"contentBlockIndex": 0}},
                  {"messageStop": {"stopReason": "end_turn"}},
                  {"metadata": {"usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}}}]


@pytest.mark.parametrize("events, complete", [
    (BEDROCK_EVENTS, True),
    (BEDROCK_EVENTS[:-1], True),  # messageStop ends the answer; a missing metadata event costs only usage
    (BEDROCK_EVENTS[:3], False),
])
def test_bedrock_stream_ends_at_message_stop(events, complete):
    provider = make("bedrock/anthropic.claude-3-haiku-20240307-v1:0", **AWS)
    assert isinstance(provider, BedrockProvider)
    state = provider.new_stream_state("chat", {**CHAT, "stream_options": {"include_usage": True}})
    chunks = [c for e in events for c in provider.parse_stream_event("chat", e, state)]
    if complete:
        chunks += provider.end_of_stream(state)
        assert chunks[-1]["usage"] is not None
    else:
        with pytest.raises(errors.UpstreamError, match="ended before completion"):
            provider.end_of_stream(state)
