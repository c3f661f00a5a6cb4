"""The built-in demo model: deterministic chat, completions, streams and embeddings, no network."""

import hashlib
import time

from gateway.providers.base import Provider
from gateway.providers.shapes import encode_embedding

EMBEDDING_DIMENSIONS = 16
GREETING = "Hello from the gateway's demo model. You said:"
# A 1x1 transparent PNG: the demo's every image.
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
MODERATION_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


def _text_of(content):
    """The text of a message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _count(text):
    """A deterministic token count: whitespace-separated words."""
    return len(text.split())


def embedding_vector(text, dimensions):
    """A unit vector derived from the text's SHA-256, the same on every run."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [(int.from_bytes(raw[i * 4:i * 4 + 4], "little") / 2**32) * 2 - 1 for i in range(dimensions)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [v / norm for v in values]


class DemoProvider(Provider):
    """`demo/<anything>`: answers in-process so the gateway works with no provider key at all."""

    name = "demo"
    title = "Built-in demo (no network)"
    prefixes = ("demo",)
    embeddings = True
    native_usage_chunk = True
    native_encoding = True
    local = True
    surfaces = frozenset({"images", "moderations", "rerank", "transcriptions", "translations", "speech"})

    def execute(self, ctx, endpoint, body, stream):
        """Answer in-process."""
        if stream:
            from gateway.wire.upstream import ChunkStream
            if endpoint == "speech":  # a WAV file of silence, 10 ms per character spoken
                chunks = ChunkStream(self, endpoint, iter(_silence(len(body.get("input") or ""))))
                chunks.media_type = "audio/wav"
                return chunks
            return ChunkStream(self, endpoint, self.stream(endpoint, body))
        return self.answer(endpoint, body)

    def _reply(self, endpoint, body):
        if endpoint == "chat":
            users = [m for m in body.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
            said = _text_of(users[-1].get("content")) if users else ""
            prompt_tokens = sum(_count(_text_of(m.get("content"))) for m in body.get("messages") or []
                                if isinstance(m, dict))
        else:
            prompt = body.get("prompt")
            said = prompt if isinstance(prompt, str) else " ".join(p for p in prompt or [] if isinstance(p, str))
            prompt_tokens = _count(said)
        words = f"{GREETING} {said}".split() if said.strip() else GREETING.split()
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(words):
            words, finish = words[:limit], "length"
        return words, finish, prompt_tokens

    def answer(self, endpoint, body):
        """The whole answer at once, in OpenAI's shape."""
        if endpoint == "embeddings":
            return self._embed(body)
        if endpoint in ("transcriptions", "translations"):
            return self._transcribe(endpoint, body)
        if endpoint in self.surfaces:
            return getattr(self, "_" + endpoint)(body)
        words, finish, prompt_tokens = self._reply(endpoint, body)
        text = " ".join(words)
        n = body.get("n") if isinstance(body.get("n"), int) and body.get("n") > 0 else 1
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words) * n,
                 "total_tokens": prompt_tokens + len(words) * n}
        created = int(time.time())
        if endpoint == "chat":
            choices = [{"index": i, "message": {"role": "assistant", "content": text},
                        "logprobs": None, "finish_reason": finish} for i in range(n)]
            return {"id": f"chatcmpl-demo{created}", "object": "chat.completion", "created": created,
                    "model": self.model, "choices": choices, "usage": usage}
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": finish} for i in range(n)]
        return {"id": f"cmpl-demo{created}", "object": "text_completion", "created": created,
                "model": self.model, "choices": choices, "usage": usage}

    def stream(self, endpoint, body):
        """The same answer as OpenAI chunks, one word each."""
        words, finish, prompt_tokens = self._reply(endpoint, body)
        created = int(time.time())
        chat = endpoint == "chat"
        base = {"id": f"{'chatcmpl' if chat else 'cmpl'}-demo{created}",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": created, "model": self.model}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        extra = {"usage": None} if include_usage else {}

        def choice(text, reason=None, first=False):
            if chat:
                delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}

        if chat:
            yield {**base, "choices": [choice("", first=True)], **extra}
        for i, word in enumerate(words):
            yield {**base, "choices": [choice(word if i == 0 else " " + word)], **extra}
        yield {**base, "choices": [choice("", finish)], **extra}
        if include_usage:
            yield {**base, "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                   "completion_tokens": len(words),
                                                   "total_tokens": prompt_tokens + len(words)}}

    def _transcribe(self, endpoint, body):
        """The audio's length, said in words (a WAV file's, from its header)."""
        from gateway.providers.audio import bound_seconds
        seconds = bound_seconds(body.get("file"))
        from gateway.providers.audio import from_upstream
        verb = "transcript" if endpoint == "transcriptions" else "translation"
        return from_upstream({"text": f"Demo {verb} of {seconds} seconds of audio.", "duration": float(seconds),
                              "usage": {"type": "duration", "seconds": seconds}}, body)

    def _images(self, body):
        """`n` one-pixel images (base64; a URL can only be a data URL, as nothing is stored)."""
        n = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        key = "b64_json" if body.get("response_format") == "b64_json" else "url"
        value = PIXEL_PNG if key == "b64_json" else "data:image/png;base64," + PIXEL_PNG
        return {"created": int(time.time()), "data": [{key: value, "revised_prompt": body.get("prompt")}] * n}

    def _moderations(self, body):
        """Nothing is flagged."""
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or ())
        result = {"flagged": False, "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
                  "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 0.0)}
        return {"id": f"modr-demo{int(time.time())}", "model": self.model, "results": [dict(result) for _ in inputs]}

    def _rerank(self, body):
        """Documents by the share of the query's words they hold (Cohere's answer shape)."""
        query = set(str(body.get("query") or "").lower().split()) or {""}
        docs = [d.get("text", "") if isinstance(d, dict) else str(d) for d in body.get("documents") or ()]
        scores = sorted(((len(query & set(doc.lower().split())) / len(query), i) for i, doc in enumerate(docs)),
                        key=lambda pair: (-pair[0], pair[1]))
        top = body.get("top_n") if isinstance(body.get("top_n"), int) else len(docs)
        results = [{"index": i, "relevance_score": score} for score, i in scores[:top]]
        if body.get("return_documents"):
            for row in results:
                row["document"] = {"text": docs[row["index"]]}
        return {"id": f"rerank-demo{int(time.time())}", "results": results,
                "meta": {"billed_units": {"search_units": 1}}}

    def _embed(self, body):
        inputs = body.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dims = body.get("dimensions") if isinstance(body.get("dimensions"), int) else EMBEDDING_DIMENSIONS
        fmt = body.get("encoding_format") or "float"
        data = []
        tokens = 0
        for i, item in enumerate(inputs or []):
            text = item if isinstance(item, str) else " ".join(str(t) for t in item)
            tokens += len(item) if isinstance(item, list) else _count(item)
            data.append({"object": "embedding", "index": i,
                         "embedding": encode_embedding(embedding_vector(text, dims), fmt)})
        return {"object": "list", "data": data, "model": self.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _silence(characters):
    """A 16 kHz 16-bit mono WAV of silence, in 8 KiB chunks."""
    import struct
    data_size = 320 * max(1, characters)
    header = (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000,
                                                                                      32000, 2, 16)
              + b"data" + struct.pack("<I", data_size))
    yield header
    for left in range(data_size, 0, -8192):
        yield bytes(min(8192, left))


PROVIDERS = (DemoProvider,)
