"""AWS Bedrock: chat through Converse / ConverseStream, embeddings (Titan, Cohere) through InvokeModel.

Every chat model on Bedrock (Anthropic, Meta, Mistral, Cohere, Amazon Titan/Nova, AI21, inference
profiles and ARNs) answers the one Converse API, so one translator serves them all; boto3 signs and
sends (see aws.py). The pure halves are `build_converse_kwargs`, `parse_converse`,
`parse_stream_event` and `map_error`.
"""

import base64
import binascii
import re
import time

import orjson

from gateway import errors
from gateway.providers import aws
from gateway.providers import shapes
from gateway.providers.base import Provider
from gateway.wire.upstream import incomplete_stream

FINISH = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
    "content_filtered": "content_filter", "guardrail_intervened": "content_filter",
    "model_context_window_exceeded": "length",
}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}
# LiteLLM's name for the forced tool that carries response_format answers (Converse has no JSON mode).
JSON_TOOL = "json_tool_call"
# LiteLLM route hints inside the model string (`bedrock/converse/...`, `bedrock/invoke/...`): every chat
# model goes through Converse here, so they only need stripping.
ROUTE_HINTS = ("converse/", "invoke/")
# Bedrock-native request fields a client may send as extra body keys; passed on unchanged.
PASSTHROUGH = ("guardrailConfig", "performanceConfig", "requestMetadata", "promptVariables")
COHERE_BATCH = 96  # Cohere Embed takes at most 96 texts per call
# Anthropic's Messages body on Bedrock's InvokeModel: this version field instead of a header, no model.
ANTHROPIC_VERSION = "bedrock-2023-05-31"
# Messages fields Bedrock's InvokeModel does not take (the model is in the path; metadata is Anthropic's).
NOT_ON_BEDROCK = ("model", "stream", "stream_options", "metadata", "service_tier", "anthropic_headers")
# Bedrock's image models (TEXT_IMAGE through InvokeModel) and the OpenAI qualities that mean `premium`.
IMAGE_MODELS = ("titan-image-generator", "nova-canvas")
PREMIUM = ("hd", "high", "premium")


def _text_block(text):
    return {"text": text}


def image_block(part):
    """An image_url part as a Converse image block; the gateway never fetches URLs itself."""
    kind, mime, data = shapes.image_source(part)
    if kind == "url":
        raise errors.BadRequestError(
            "Bedrock takes images as bytes: send them as base64 data URLs (data:image/png;base64,...). "
            "This gateway does not fetch image URLs.", param="messages", code="unsupported_image_url")
    fmt = IMAGE_FORMATS.get(mime.lower())
    if fmt is None:
        raise errors.BadRequestError(f"Bedrock takes png, jpeg, gif or webp images, not {mime}.",
                                     param="messages")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise errors.BadRequestError("The image data URL is not valid base64.", param="messages") from None
    return {"image": {"format": fmt, "source": {"bytes": raw}}}


def user_blocks(content):
    """A user message's content as Converse content blocks."""
    if isinstance(content, str):
        return [_text_block(content)]
    blocks = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text"):
            blocks.append(_text_block(part.get("text") or ""))
        elif kind == "image_url":
            blocks.append(image_block(part))
        else:
            raise errors.BadRequestError(f"Bedrock chat does not take message parts of type {kind!r}.",
                                         param="messages")
    return blocks


def assistant_blocks(msg):
    """An assistant message (text, tool_calls, legacy function_call) as Converse content blocks."""
    blocks = []
    text = shapes.text_of(msg.get("content"))
    if text:
        blocks.append(_text_block(text))
    calls = list(msg.get("tool_calls") or [])
    if msg.get("function_call"):
        fn = msg["function_call"]
        calls.append({"id": f"call_{fn.get('name')}", "function": fn})
    for call in calls:
        fn = call.get("function") or {}
        blocks.append({"toolUse": {"toolUseId": call.get("id") or f"call_{fn.get('name')}",
                                   "name": fn.get("name"), "input": shapes.tool_arguments(fn.get("arguments"))}})
    return blocks


def convert_messages(messages):
    """OpenAI messages -> (Converse system blocks, alternating Converse messages)."""
    system, out = [], []
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            text = shapes.text_of(msg.get("content"))
            if text:
                system.append(_text_block(text))
            continue
        if role in ("tool", "function"):
            call_id = msg.get("tool_call_id") or f"call_{msg.get('name')}"
            role, blocks = "user", [{"toolResult": {"toolUseId": call_id,
                                                    "content": [_text_block(shapes.text_of(msg.get("content")))]}}]
        elif role == "assistant":
            blocks = assistant_blocks(msg)
        elif role == "user":
            blocks = user_blocks(msg.get("content"))
        else:
            raise errors.BadRequestError(f"Unknown message role {role!r}.", param="messages")
        if not blocks:
            continue
        # Converse wants user/assistant turns alternating: tool results and the user text after them
        # form one user turn.
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if out and out[-1]["role"] == "assistant":  # a prefill may not end with whitespace
        last = out[-1]["content"][-1]
        if "text" in last:
            last["text"] = last["text"].rstrip()
    return system, out


def json_mode(body):
    """Whether response_format asks for JSON (answered through LiteLLM's forced json_tool_call)."""
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _has_tool_blocks(messages):
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def tool_config(body, messages, drop_params):
    """The Converse toolConfig for tools/tool_choice/response_format, or None."""
    specs = []
    for tool in body.get("tools") or []:
        if tool.get("type", "function") != "function":
            raise errors.BadRequestError("Bedrock takes only tools of type `function`.", param="tools")
        fn = tool.get("function") or {}
        spec = {"name": fn.get("name"),
                "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        specs.append({"toolSpec": spec})
    choice = body.get("tool_choice")
    if body.get("parallel_tool_calls") is False and specs and not drop_params:
        raise errors.BadRequestError("Bedrock Converse cannot turn off parallel tool calls; remove "
                                     "`parallel_tool_calls` or set drop_params.", param="parallel_tool_calls",
                                     code="unsupported_parameter")
    if choice == "none":
        if not _has_tool_blocks(messages):
            specs = []  # no tools offered is exactly "call none"
        elif not drop_params:
            raise errors.BadRequestError(
                "Bedrock Converse has no tool_choice `none` once tools were used; use auto or set "
                "drop_params.", param="tool_choice", code="unsupported_parameter")
        choice = None
    if json_mode(body):
        schema = (body["response_format"].get("json_schema") or {})
        spec = {"name": JSON_TOOL, "inputSchema": {"json": schema.get("schema") or {
            "type": "object", "additionalProperties": True, "properties": {}}}}
        if schema.get("description"):
            spec["description"] = schema["description"]
        specs.append({"toolSpec": spec})
        choice = {"type": "function", "function": {"name": JSON_TOOL}}
    if not specs:
        return None
    config = {"tools": specs}
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        config["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
    elif choice is not None:
        raise errors.BadRequestError(f"Unsupported tool_choice {choice!r}.", param="tool_choice")
    return config


def usage_of(usage):
    """Converse usage -> OpenAI usage; cached prompt tokens count as prompt tokens, as at OpenAI."""
    usage = usage or {}
    cache_read = usage.get("cacheReadInputTokens") or 0
    cache_write = usage.get("cacheWriteInputTokens") or 0
    out = shapes.usage((usage.get("inputTokens") or 0) + cache_read + cache_write, usage.get("outputTokens"))
    if cache_read:
        out["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return out


def usage_chunk(state):
    """OpenAI's last stream chunk for include_usage: no choices, the usage."""
    return {"id": state["id"], "object": "chat.completion.chunk", "created": state["created"],
            "model": state["model"], "choices": [], "usage": state["usage"] or shapes.usage(0, 0)}


class BedrockProvider(Provider):
    """`bedrock/<model id | inference profile | ARN>` with AWS credentials and region."""

    name = "bedrock"
    title = "AWS Bedrock"
    prefixes = ("bedrock",)
    # Bare Bedrock model ids LiteLLM resolves to bedrock (optionally with a cross-region profile prefix).
    bare_models = re.compile(
        r"^(?:(?:us|eu|apac|au|ca|jp|us-gov|global)\.)?"
        r"(?:anthropic|amazon|meta|mistral|cohere|ai21|deepseek|writer|qwen)\.[\w.:-]+$")
    # What the README lists; credentials may also come from litellm_params or aws_profile_name.
    key_env = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION_NAME")
    native_completions = False
    embeddings = True
    streaming = True
    tools = True
    vision = True
    supported_params = frozenset({"temperature", "top_p", "max_tokens", "max_completion_tokens", "stop",
                                  "tools", "tool_choice", "parallel_tool_calls", "response_format",
                                  "dimensions"})
    native_messages_for = "`anthropic.*` Claude models"  # set per deployment in __init__
    surfaces_for = {"images": "Titan Image, Nova Canvas"}  # set per deployment in __init__

    def __init__(self, config, upstream_model):
        model = upstream_model
        for hint in ROUTE_HINTS:
            if model.startswith(hint):
                model = model[len(hint):]
        self.aws = aws.AwsSettings(config, "bedrock-runtime", model,
                                   endpoint_keys=("api_base", "aws_bedrock_runtime_endpoint"),
                                   endpoint_env="AWS_BEDROCK_RUNTIME_ENDPOINT",
                                   bearer_env="AWS_BEARER_TOKEN_BEDROCK")
        super().__init__(config, model, secrets=self.aws.secrets)
        aws.strip_connection_keys(self)
        self.api_base = self.aws.endpoint_url or (
            f"https://bedrock-runtime.{self.aws.region}.amazonaws.com" if self.aws.region else None)
        # LiteLLM's `model_id`: the id to call (provisioned throughput / custom model ARN) when `model`
        # names the base model.
        self.model_id = config.params.get("model_id") or model
        lowered = model.lower()
        self.embedding_family = ("titan" if "titan-embed" in lowered else
                                 "cohere" if "cohere.embed" in lowered else None)
        # Claude on Bedrock takes Anthropic's Messages body itself (InvokeModel): /v1/messages passes through.
        self.native_messages = "anthropic." in lowered
        # Titan Image Generator and Nova Canvas answer /v1/images/generations (InvokeModel, TEXT_IMAGE).
        self.surfaces = frozenset({"images"}) if any(m in lowered for m in IMAGE_MODELS) else frozenset()

    def supports(self, endpoint, stream):
        """Embeddings only for the Titan / Cohere embedding models."""
        if endpoint == "embeddings":
            return self.embedding_family is not None and not stream
        return super().supports(endpoint, stream)

    # --- chat: pure halves ----------------------------------------------------------------------

    def build_converse_kwargs(self, body, drop_params=False):
        """An OpenAI chat body -> keyword arguments for boto3 `converse` / `converse_stream`."""
        system, messages = convert_messages(body.get("messages") or [])
        kwargs = {"modelId": self.model_id, "messages": messages}
        if system:
            kwargs["system"] = system
        inference = {}
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None:
            inference["maxTokens"] = max_tokens
        if body.get("temperature") is not None:
            inference["temperature"] = body["temperature"]
        if body.get("top_p") is not None:
            inference["topP"] = body["top_p"]
        stop = body.get("stop")
        if stop:
            inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
        if inference:
            kwargs["inferenceConfig"] = inference
        tools = tool_config(body, messages, drop_params)
        if tools:
            kwargs["toolConfig"] = tools
        extra = dict(body.get("additionalModelRequestFields") or {})
        if body.get("thinking") is not None:  # Anthropic extended thinking, as LiteLLM passes it
            extra["thinking"] = body["thinking"]
        if extra:
            kwargs["additionalModelRequestFields"] = extra
        for key in PASSTHROUGH:
            if body.get(key) is not None:
                kwargs[key] = body[key]
        return kwargs

    def parse_converse(self, resp, json_answer=False):
        """A Converse answer -> an OpenAI chat.completion."""
        msg = (resp.get("output") or {}).get("message") or {}
        texts, calls, reasoning = [], [], []
        for block in msg.get("content") or []:
            if "text" in block:
                texts.append(block["text"])
            elif "toolUse" in block:
                use = block["toolUse"]
                if json_answer and use.get("name") == JSON_TOOL:
                    texts.append(orjson.dumps(use.get("input") or {}).decode())
                else:
                    calls.append(shapes.tool_call(use.get("toolUseId"), use.get("name"), use.get("input")))
            elif "reasoningContent" in block:
                reasoning.append(((block["reasoningContent"].get("reasoningText") or {}).get("text")) or "")
        finish = FINISH.get(resp.get("stopReason"), "stop")
        if finish == "tool_calls" and not calls:
            finish = "stop"  # the forced JSON tool is the answer, not a call
        message = shapes.message("".join(texts) if texts or not calls else None, calls)
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        return shapes.chat_completion(self.model, [(message, finish)], usage_of(resp.get("usage")))

    def parse_response(self, endpoint, data, body):
        """A Converse (chat) or InvokeModel (embeddings) answer in the OpenAI shape."""
        if endpoint == "embeddings":
            return self.parse_embeddings([(data, {})])
        return self.parse_converse(data, json_mode(body))

    def new_stream_state(self, endpoint, body):
        """Stream state plus the JSON-mode flag and the tool-block bookkeeping."""
        state = super().new_stream_state(endpoint, body)
        state.update(json_mode=json_mode(body), next_tool=0, usage_sent=False)
        return state

    def parse_stream_event(self, endpoint, event, state):
        """One ConverseStream event (as boto3 yields it) -> OpenAI chunks."""
        if "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            delta = block.get("delta") or {}
            if "text" in delta:
                return [shapes.chat_chunk(state, {"content": delta["text"]})]
            if "toolUse" in delta:
                piece = delta["toolUse"].get("input") or ""
                index = state["tools"].get(block.get("contentBlockIndex", 0), 0)
                if index == JSON_TOOL:
                    return [shapes.chat_chunk(state, {"content": piece})]
                return [shapes.chat_chunk(state, {"tool_calls": [{"index": index, "function": {"arguments": piece}}]})]
            text = (delta.get("reasoningContent") or {}).get("text")
            return [shapes.chat_chunk(state, {"reasoning_content": text})] if text else []
        if "messageStart" in event:
            state["role_sent"] = True
            return [shapes.chat_chunk(state, {"role": "assistant", "content": ""})]
        if "contentBlockStart" in event:
            block = event["contentBlockStart"]
            use = (block.get("start") or {}).get("toolUse")
            if not use:
                return []
            if state["json_mode"] and use.get("name") == JSON_TOOL:
                state["tools"][block.get("contentBlockIndex", 0)] = JSON_TOOL
                return []
            index = state["next_tool"]
            state["next_tool"] += 1
            state["tools"][block.get("contentBlockIndex", 0)] = index
            call = {"index": index, "id": use.get("toolUseId"), "type": "function",
                    "function": {"name": use.get("name"), "arguments": ""}}
            return [shapes.chat_chunk(state, {"tool_calls": [call]})]
        if "messageStop" in event:  # the model's answer is complete; metadata (usage) may follow
            state["ended"] = True
            finish = FINISH.get(event["messageStop"].get("stopReason"), "stop")
            if finish == "tool_calls" and not state["next_tool"]:
                finish = "stop"
            return [shapes.chat_chunk(state, {}, finish)]
        if "metadata" in event:
            state["usage"] = usage_of(event["metadata"].get("usage"))
            if state["include_usage"]:
                state["usage_sent"] = True
                return [usage_chunk(state)]
        return []

    def end_of_stream(self, state):
        """The usage chunk a client asked for, if the upstream never sent its metadata event; a
        stream that ended before messageStop was cut: an error."""
        if not state.get("ended"):
            raise incomplete_stream(self)
        if state["include_usage"] and not state["usage_sent"]:
            state["usage_sent"] = True
            return [usage_chunk(state)]
        return []

    def map_error(self, status, raw, headers):
        """An AWS REST-JSON error answer -> GatewayError (code from x-amzn-ErrorType)."""
        return aws.error_from_http(self, status, raw, headers)

    def map_sdk_error(self, exc):
        """boto3's error answer (ClientError, or EventStreamError mid-stream) -> GatewayError."""
        return aws.error_from_client_error(self, exc)

    # --- embeddings: pure halves ----------------------------------------------------------------

    def build_embedding_requests(self, body):
        """InvokeModel bodies for an embeddings call: one per input (Titan) or per 96 inputs (Cohere)."""
        inputs = shapes.embedding_inputs(body)
        dims = body.get("dimensions")
        lowered = self.model.lower()
        if self.embedding_family == "titan":
            if dims is not None and "v1" in lowered:
                raise errors.BadRequestError(f"{self.model} has a fixed size; remove `dimensions`.",
                                             param="dimensions")
            return [{"inputText": text, **({"dimensions": dims} if dims is not None else {})} for text in inputs]
        if self.embedding_family == "cohere":
            if dims is not None and "v4" not in lowered:
                raise errors.BadRequestError(f"{self.model} has a fixed size; remove `dimensions`.",
                                             param="dimensions")
            extra = {"output_dimension": dims} if dims is not None else {}
            input_type = body.get("input_type") or "search_document"
            return [{"texts": inputs[i:i + COHERE_BATCH], "input_type": input_type, **extra}
                    for i in range(0, len(inputs), COHERE_BATCH)]
        raise errors.BadRequestError(f"{self.model} is not a Bedrock embedding model this gateway knows "
                                     "(amazon.titan-embed-*, cohere.embed-*).", param="model")

    def parse_embeddings(self, answers):
        """[(InvokeModel JSON answer, response headers)] -> an OpenAI embeddings list."""
        vectors, tokens = [], 0
        for data, headers in answers:
            if "embedding" in data:  # Titan
                vectors.append(data["embedding"])
                tokens += int(data.get("inputTextTokenCount") or 0)
            else:  # Cohere: a list of vectors, or {"float": [...]} when embedding types were asked
                found = data["embeddings"]
                if isinstance(found, dict):
                    found = found.get("float") or next(iter(found.values()))
                vectors.extend(found)
                tokens += int((headers or {}).get("x-amzn-bedrock-input-token-count") or 0)
        return shapes.embeddings(self.model, vectors, tokens)

    # --- I/O ------------------------------------------------------------------------------------

    # --- Anthropic's Messages API on Claude (InvokeModel): pure halves ------------------------------

    def prepare_body(self, endpoint, body):
        """The base's; a Messages body keeps the client's Anthropic headers beside it (messages_request)."""
        out = super().prepare_body(endpoint, body)
        if endpoint == "messages" and body.get("anthropic_headers"):
            out["anthropic_headers"] = body["anthropic_headers"]
        return out

    def messages_request(self, body, client_headers=None):
        """A Messages body as Bedrock's InvokeModel takes it: no model or stream, its version field,
        the client's `anthropic-beta` header as `anthropic_beta`."""
        out = {k: v for k, v in body.items() if k not in NOT_ON_BEDROCK}
        out["anthropic_version"] = ANTHROPIC_VERSION
        beta = (client_headers or {}).get("anthropic-beta")
        if beta:
            out["anthropic_beta"] = [b.strip() for b in beta.split(",") if b.strip()]
        return out

    def messages_event(self, event, state):
        """One InvokeModelWithResponseStream event: the Anthropic event its chunk carries."""
        data = orjson.loads(event["chunk"]["bytes"])
        kind = data.get("type")
        if kind == "error":
            raise errors.UpstreamError(self.scrub(f"Upstream error from bedrock: {data.get('error')}"),
                                       code=(data.get("error") or {}).get("type"))
        if kind == "message_stop":
            state["ended"] = True
            data.pop("amazon-bedrock-invocationMetrics", None)
        return [data]

    def messages_end(self, state):
        if not state.get("ended"):
            raise incomplete_stream(self)
        return []

    def _messages(self, io, body, stream):
        request = orjson.dumps(self.messages_request(body, body.get("anthropic_headers")))
        client = self.aws.client(io.timeout)
        kwargs = {"modelId": self.model_id, "body": request, "contentType": "application/json",
                  "accept": "application/json"}
        if not stream:
            resp = io.call(client.invoke_model, **kwargs)
            data = aws.json_body(self, io.read(resp["body"]))
            if not isinstance(data, dict) or data.get("type") != "message":
                raise errors.UpstreamError(f"Upstream answered in a shape this gateway cannot read "
                                           f"(deployment: {self.label})")
            return data
        resp = io.call(client.invoke_model_with_response_stream, **kwargs)
        state = {}
        return io.stream("messages", resp["body"], lambda event: self.messages_event(event, state),
                         lambda: self.messages_end(state))

    def invoke(self, io, endpoint, body, stream):
        """The I/O hook: boto3's Converse(Stream) for chat, InvokeModel for embeddings and Anthropic's
        Messages API, run through `io` (wire.sdk.SdkIO), which maps every AWS and I/O failure."""
        if endpoint == "embeddings":
            return self._embed(io, body)
        if endpoint == "messages":
            return self._messages(io, body, stream)
        if endpoint == "images":
            resp = io.call(self.aws.client(io.timeout).invoke_model, modelId=self.model_id,
                           body=orjson.dumps(image_request(body)), contentType="application/json",
                           accept="application/json")
            return self._parsed(lambda: images_answer(aws.json_body(self, io.read(resp["body"]))))
        kwargs = self.build_converse_kwargs(body, io.drop_params)
        client = self.aws.client(io.timeout)
        if not stream:
            resp = io.call(client.converse, **kwargs)
            return self._parsed(lambda: self.parse_converse(resp, json_mode(body)))
        resp = io.call(client.converse_stream, **kwargs)
        state = self.new_stream_state(endpoint, body)
        return io.stream(endpoint, resp["stream"], lambda event: self.parse_stream_event(endpoint, event, state),
                         lambda: self.end_of_stream(state))

    def _embed(self, io, body):
        answers = []
        requests = self.build_embedding_requests(body)
        client = self.aws.client(io.timeout) if requests else None
        for request in requests:
            resp = io.call(client.invoke_model, modelId=self.model_id, body=orjson.dumps(request),
                           contentType="application/json", accept="application/json")
            headers = (resp.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
            answers.append((aws.json_body(self, io.read(resp["body"])), headers))
        return self._parsed(lambda: self.parse_embeddings(answers))

    def _parsed(self, parse):
        try:
            return parse()
        except (KeyError, TypeError, IndexError, AttributeError, ValueError, StopIteration) as exc:
            raise errors.UpstreamError(
                f"Upstream answered in a shape this gateway cannot read (deployment: {self.label})") from exc


def image_request(body):
    """An OpenAI images body as Titan Image Generator / Nova Canvas take it (TEXT_IMAGE)."""
    size = body.get("size") if isinstance(body.get("size"), str) else "1024x1024"
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise errors.BadRequestError("size must be WIDTHxHEIGHT, such as 1024x1024.", param="size") from None
    config = {"numberOfImages": body.get("n") or 1, "width": width, "height": height,
              "quality": "premium" if body.get("quality") in PREMIUM else "standard"}
    params = {"text": body["prompt"]}
    if body.get("negative_prompt"):
        params["negativeText"] = body["negative_prompt"]
    return {"taskType": "TEXT_IMAGE", "textToImageParams": params, "imageGenerationConfig": config}


def images_answer(data):
    """Bedrock's base64 images as OpenAI's images answer (b64_json: Bedrock gives no URLs)."""
    if data.get("error"):
        raise errors.UpstreamError(f"Upstream error from bedrock: {str(data['error'])[:500]}")
    return {"created": int(time.time()), "data": [{"b64_json": image} for image in data["images"]]}


PROVIDERS = (BedrockProvider,)
