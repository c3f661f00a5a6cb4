"""AWS SageMaker endpoints running Hugging Face TGI containers (and embedding endpoints).

Chat messages become one prompt (gateway.providers.prompts: the model family's template, or the
deployment's custom template keys / chat_template); completions send the prompt as it is. Calls go
through boto3's InvokeEndpoint / InvokeEndpointWithResponseStream (see aws.py). The pure halves are
`build_payload`, `parse_payload`, `parse_stream_event` (PayloadPart bytes) and `map_error`.
"""

import time

import orjson

from gateway import errors
from gateway.providers import aws
from gateway.providers import shapes
from gateway.providers.base import Provider
from gateway.wire.upstream import incomplete_stream
from gateway.providers.prompts import prompt_builder

# TGI's details.finish_reason -> OpenAI's.
FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}
# End-of-text markers some containers stream as plain (non-special) tokens.
EOS_TEXTS = frozenset({"<|endoftext|>", "</s>", "<|eot_id|>", "<|im_end|>"})



def completion_prompt(body):
    """The /completions prompt as one string (TGI takes one input per call)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise errors.BadRequestError("SageMaker text generation takes one prompt string per request.",
                                     param="prompt")
    return prompt


def _refuse_images(messages):
    """Text-generation endpoints read no images: say so rather than drop them silently."""
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url" for p in content):
            raise errors.BadRequestError("SageMaker text-generation endpoints take no images; send text only.",
                                         param="messages", code="unsupported_content")


def _stops(body):
    stop = body.get("stop")
    return [stop] if isinstance(stop, str) else list(stop or [])


def stream_error(provider, data):
    """TGI's in-stream `{"error", "error_type"}` event as a GatewayError."""
    message = str(data.get("error"))
    kind = data.get("error_type")
    status = 400 if kind == "validation" else 503 if kind == "overloaded" else 502
    return aws.error_from_aws(provider, status, f"tgi_{kind}" if kind else "", message)


class SageMakerProvider(Provider):
    """`sagemaker/<endpoint name>`: a TGI text-generation endpoint, or an embedding endpoint when
    `model_info.mode: embedding`."""

    name = "sagemaker"
    title = "AWS SageMaker"
    prefixes = ("sagemaker",)
    # What the README lists; credentials may also come from litellm_params or aws_profile_name.
    key_env = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION_NAME")
    native_completions = True
    embeddings = True
    streaming = True
    tools = False
    vision = False
    supported_params = frozenset({"temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed"})

    def __init__(self, config, upstream_model):
        self.aws = aws.AwsSettings(config, "sagemaker-runtime", upstream_model)
        super().__init__(config, upstream_model, secrets=self.aws.secrets)
        params = config.params
        # LiteLLM's hf_model_name names the model behind the endpoint, which picks the prompt template.
        self.prompt = prompt_builder(params, params.get("hf_model_name") or upstream_model)
        self.inference_component = params.get("model_id")
        self.allow_zero_temp = bool(params.get("aws_sagemaker_allow_zero_temp"))
        aws.strip_connection_keys(self)
        self.embedding_mode = (config.model_info or {}).get("mode") == "embedding"
        self.api_base = self.aws.endpoint_url or (
            f"https://runtime.sagemaker.{self.aws.region}.amazonaws.com" if self.aws.region else None)

    def supports(self, endpoint, stream):
        """An embedding endpoint serves only embeddings; a TGI endpoint everything else."""
        if self.embedding_mode:
            return endpoint == "embeddings" and not stream
        return endpoint != "embeddings" and (not stream or self.streaming)

    # --- pure halves ----------------------------------------------------------------------------

    def build_payload(self, endpoint, body, stream=False):
        """An OpenAI body -> the JSON payload for the endpoint (TGI, or `text_inputs` for embeddings)."""
        if endpoint == "embeddings":
            return {"text_inputs": shapes.embedding_inputs(body)}
        if endpoint == "chat":
            messages = body.get("messages") or []
            _refuse_images(messages)
            prompt = self.prompt(messages)
        else:
            prompt = completion_prompt(body)
        params = {"details": True}
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None:
            params["max_new_tokens"] = max(1, int(max_tokens))  # TGI refuses 0
        temperature = body.get("temperature")
        if temperature is not None:
            if temperature > 0 or self.allow_zero_temp:
                params["temperature"] = temperature
                params["do_sample"] = temperature > 0
            else:
                params["do_sample"] = False  # TGI refuses temperature 0; greedy decoding is what it means
        top_p = body.get("top_p")
        if top_p is not None and top_p < 1:  # TGI refuses top_p == 1, which is no filtering anyway
            params["top_p"] = top_p
            params.setdefault("do_sample", True)  # an explicit temperature 0 (greedy) still wins
        if body.get("stop"):
            params["stop"] = _stops(body)
        if body.get("seed") is not None:
            params["seed"] = body["seed"]
        payload = {"inputs": prompt, "parameters": params}
        if stream:
            payload["stream"] = True
        return payload

    def parse_payload(self, endpoint, data, body, prompt):
        """The endpoint's JSON answer -> an OpenAI chat.completion / text_completion / embeddings."""
        if endpoint == "embeddings":
            return self.parse_embeddings(data, body)
        item = data[0] if isinstance(data, list) else data
        if "generated_text" in item:
            text = item["generated_text"]
        else:  # JumpStart Llama containers answer `generation` (a string, or a chat message)
            text = item["generation"]
            text = text.get("content") if isinstance(text, dict) else text
        text = text or ""
        if prompt and text.startswith(prompt):  # return_full_text: the prompt came back too
            text = text[len(prompt):]
        details = item.get("details") or {}
        reason = details.get("finish_reason")
        if reason == "stop_sequence":  # TGI keeps the stop sequence; OpenAI does not
            for stop in _stops(body):
                if stop and text.endswith(stop):
                    text = text[:-len(stop)]
                    break
        usage = shapes.usage(shapes.estimate_tokens(len(prompt or "")),
                             details.get("generated_tokens") or shapes.estimate_tokens(len(text or "")))
        finish = FINISH.get(reason, "stop")
        if endpoint == "chat":
            return shapes.chat_completion(self.model, [(shapes.message(text), finish)], usage)
        return {"id": shapes.new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}], "usage": usage}

    def parse_embeddings(self, data, body):
        """`{"embedding": [[...]]}`, `{"embeddings": ...}` or a bare list -> OpenAI embeddings."""
        vectors = data.get("embedding", data.get("embeddings")) if isinstance(data, dict) else data
        if vectors and not isinstance(vectors[0], list):
            vectors = [vectors]  # one input, one flat vector
        tokens = sum(shapes.estimate_tokens(len(text or "")) for text in shapes.embedding_inputs(body))
        return shapes.embeddings(self.model, vectors, tokens)

    def parse_response(self, endpoint, data, body):
        """parse_payload with the prompt rebuilt from the body."""
        prompt = "" if endpoint == "embeddings" else self.build_payload(endpoint, body)["inputs"]
        return self.parse_payload(endpoint, data, body, prompt)

    def new_stream_state(self, endpoint, body, prompt=None):
        """Stream state plus the line buffer, token count and the prompt (for its token estimate)."""
        state = super().new_stream_state(endpoint, body)
        if prompt is None:
            prompt = self.build_payload(endpoint, body)["inputs"]
        state.update(endpoint=endpoint, buffer=b"", tokens=0, finished=False, prompt=prompt)
        return state

    def parse_stream_event(self, endpoint, data, state):
        """One PayloadPart's bytes -> chunks. TGI's SSE lines may be split across parts: buffer them."""
        state["buffer"] += data
        *lines, state["buffer"] = state["buffer"].split(b"\n")
        out = []
        for line in lines:
            out.extend(self._stream_line(line, state))
        return out

    def end_of_stream(self, state):
        """Flush a last unterminated line; a stream without TGI's final event (generated_text /
        details) was cut: an error, never a complete answer."""
        out = []
        rest, state["buffer"] = state["buffer"], b""
        if rest.strip():
            out.extend(self._stream_line(rest, state))
        if not state["finished"]:
            raise incomplete_stream(self)
        return out

    def _stream_line(self, line, state):
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line.startswith(b"{"):  # blank separators, `event:`/`id:` fields, comments
            return []
        data = orjson.loads(line)
        if data.get("error"):
            raise stream_error(self, data)
        out = []
        token = data.get("token")
        if token is not None:
            state["tokens"] += 1
            text = token.get("text") or ""
            if text and not token.get("special") and text not in EOS_TEXTS:
                out.append(self._chunk(state, text))
        details = data.get("details")
        if data.get("generated_text") is not None or details:
            details = details or {}
            if details.get("generated_tokens"):
                state["tokens"] = details["generated_tokens"]
            out.extend(self._finish(state, FINISH.get(details.get("finish_reason"), "stop")))
        return out

    def _chunk(self, state, text, finish=None):
        if state["endpoint"] == "chat":
            delta = {"content": text} if text or not finish else {}
            if not state["role_sent"]:
                state["role_sent"] = True
                delta = {"role": "assistant", **delta, "content": delta.get("content", "")}
            return shapes.chat_chunk(state, delta, finish)
        return {"id": state["id"], "object": "text_completion", "created": state["created"],
                "model": state["model"],
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    def _finish(self, state, finish):
        if state["finished"]:
            return []
        state["finished"] = True
        out = [self._chunk(state, "", finish)]
        if state["include_usage"]:
            usage = shapes.usage(shapes.estimate_tokens(len(state["prompt"] or "")), state["tokens"])
            out.append({"id": state["id"], "object": out[0]["object"], "created": state["created"],
                        "model": state["model"], "choices": [], "usage": usage})
        return out

    def map_error(self, status, raw, headers):
        """An AWS REST-JSON error answer (ModelError keeps the container's own status) -> GatewayError."""
        return aws.error_from_http(self, status, raw, headers)

    def map_sdk_error(self, exc):
        """boto3's error answer (ClientError, or EventStreamError mid-stream) -> GatewayError."""
        return aws.error_from_client_error(self, exc)

    # --- I/O ------------------------------------------------------------------------------------

    def invoke(self, io, endpoint, body, stream):
        """The I/O hook: InvokeEndpoint, or InvokeEndpointWithResponseStream for streams, run through
        `io` (wire.sdk.SdkIO), which maps every AWS and I/O failure."""
        payload = self.build_payload(endpoint, body, stream)
        kwargs = {"EndpointName": self.model, "Body": orjson.dumps(payload), "ContentType": "application/json"}
        if self.inference_component:
            kwargs["InferenceComponentName"] = self.inference_component
        client = self.aws.client(io.timeout)
        if not stream:
            resp = io.call(client.invoke_endpoint, Accept="application/json", **kwargs)
            data = aws.json_body(self, io.read(resp["Body"]))
            try:
                return self.parse_payload(endpoint, data, body, payload.get("inputs", ""))
            except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
                raise errors.UpstreamError(
                    f"Upstream answered in a shape this gateway cannot read (deployment: {self.label})") from exc
        resp = io.call(client.invoke_endpoint_with_response_stream, **kwargs)
        state = self.new_stream_state(endpoint, body, payload["inputs"])

        def translate(event):
            return self.parse_stream_event(endpoint, (event.get("PayloadPart") or {}).get("Bytes") or b"", state)

        return io.stream(endpoint, resp["Body"], translate, lambda: self.end_of_stream(state))


PROVIDERS = (SageMakerProvider,)
