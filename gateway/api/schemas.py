"""Marshmallow schemas for the OpenAI request bodies; unknown parameters are kept and passed on."""

import functools

from marshmallow import INCLUDE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate
from marshmallow import validates

from gateway.errors import BadRequestError
from gateway.errors import first_error


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _StrictBool(fields.Field):
    """A JSON boolean and nothing else (marshmallow's Boolean takes 1, "true", "yes"...)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            return value
        raise ValidationError("must be true or false")


class _StrOrStrList(fields.Field):
    """`stop`: a string or a list of strings."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value
        raise ValidationError("must be a string or a list of strings")


class _TokensOrText(fields.Field):
    """`prompt` / `input`: a string, a list of strings, a token list, or a list of token lists."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value:
            if all(isinstance(v, str) for v in value) or all(_is_int(v) for v in value):
                return value
            if all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value):
                return value
        raise ValidationError("must be a string, a list of strings, or a list of token ids")


class _Objects(fields.Field):
    """A list of JSON objects (`messages`, `tools`), checked in place: fields.List(fields.Dict())
    copies every item, which costs more than the rest of the body's validation on a long chat."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, (list, tuple)):
            raise ValidationError("Not a valid list.")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise ValidationError({index: ["Not a valid mapping type."]})
        return value


class _StrOrObject(fields.Field):
    """`tool_choice` / `function_call`: a mode string or an object naming the function."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, (str, dict)):
            return value
        raise ValidationError("must be a string or an object")


class _Common(Schema):
    class Meta:
        unknown = INCLUDE

    model = fields.String(allow_none=True)
    stream = _StrictBool(allow_none=True)
    stream_options = fields.Dict(allow_none=True)
    temperature = fields.Float(allow_none=True)
    top_p = fields.Float(allow_none=True)
    n = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1, max=128))
    max_tokens = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1))
    presence_penalty = fields.Float(allow_none=True)
    frequency_penalty = fields.Float(allow_none=True)
    stop = _StrOrStrList(allow_none=True)
    user = fields.String(allow_none=True)
    seed = fields.Integer(strict=True, allow_none=True)
    logit_bias = fields.Dict(allow_none=True)


class ChatRequestSchema(_Common):
    """POST /chat/completions."""

    messages = _Objects(required=True, validate=validate.Length(min=1))
    max_completion_tokens = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1))
    tools = _Objects(allow_none=True)
    tool_choice = _StrOrObject(allow_none=True)
    functions = _Objects(allow_none=True)
    function_call = _StrOrObject(allow_none=True)
    response_format = fields.Dict(allow_none=True)
    logprobs = _StrictBool(allow_none=True)
    top_logprobs = fields.Integer(strict=True, allow_none=True)

    @validates("messages")
    def _roles(self, messages, **kwargs):
        for i, message in enumerate(messages):
            if not isinstance(message.get("role"), str) or not message["role"]:
                raise ValidationError(f"messages[{i}].role is required and must be a string")


class CompletionRequestSchema(_Common):
    """POST /completions."""

    prompt = _TokensOrText(required=True)
    echo = _StrictBool(allow_none=True)
    best_of = fields.Integer(strict=True, allow_none=True)
    suffix = fields.String(allow_none=True)
    logprobs = fields.Integer(strict=True, allow_none=True)


class EmbeddingRequestSchema(Schema):
    """POST /embeddings."""

    class Meta:
        unknown = INCLUDE

    model = fields.String(allow_none=True)
    input = _TokensOrText(required=True)
    encoding_format = fields.String(allow_none=True, validate=validate.OneOf(["float", "base64"]))
    dimensions = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1))
    user = fields.String(allow_none=True)


class _StrOrObjects(fields.Field):
    """Anthropic's `system` and message `content`: a string or a list of content blocks (objects)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            return value
        raise ValidationError("must be a string or a list of content blocks")


class CountTokensRequestSchema(Schema):
    """POST /v1/messages/count_tokens (Anthropic's shape)."""

    class Meta:
        unknown = INCLUDE

    model = fields.String(required=True)
    messages = _Objects(required=True, validate=validate.Length(min=1))
    system = _StrOrObjects(allow_none=True)
    tools = _Objects(allow_none=True)
    tool_choice = fields.Dict(allow_none=True)
    thinking = fields.Dict(allow_none=True)

    @validates("messages")
    def _turns(self, messages, **kwargs):
        for i, message in enumerate(messages):
            if message.get("role") not in ("user", "assistant"):
                raise ValidationError(f"messages[{i}].role must be user or assistant")
            content = message.get("content")
            if not (isinstance(content, str) or (isinstance(content, list) and all(
                    isinstance(block, dict) and isinstance(block.get("type"), str) for block in content))):
                raise ValidationError(f"messages[{i}].content must be a string or a list of typed content blocks")


class MessagesRequestSchema(CountTokensRequestSchema):
    """POST /v1/messages (Anthropic's shape): max_tokens is required, as Anthropic requires it."""

    max_tokens = fields.Integer(strict=True, required=True, validate=validate.Range(min=1))
    stream = _StrictBool(allow_none=True)
    temperature = fields.Float(allow_none=True, validate=validate.Range(min=0, max=1))
    top_p = fields.Float(allow_none=True)
    top_k = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=0))
    stop_sequences = fields.List(fields.String(), allow_none=True)
    metadata = fields.Dict(allow_none=True)


class _Input(fields.Field):
    """The Responses API's `input`: a string or a non-empty list of items (objects)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
            return value
        raise ValidationError("must be a string or a non-empty list of items")


class ResponsesRequestSchema(Schema):
    """POST /v1/responses (OpenAI's Responses API)."""

    class Meta:
        unknown = INCLUDE

    model = fields.String(required=True)
    input = _Input(required=True)
    instructions = fields.String(allow_none=True)
    previous_response_id = fields.String(allow_none=True, validate=validate.Length(max=64))
    store = _StrictBool(allow_none=True)
    stream = _StrictBool(allow_none=True)
    max_output_tokens = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1))
    temperature = fields.Float(allow_none=True)
    top_p = fields.Float(allow_none=True)
    tools = _Objects(allow_none=True)
    tool_choice = _StrOrObject(allow_none=True)
    text = fields.Dict(allow_none=True)
    reasoning = fields.Dict(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    user = fields.String(allow_none=True)
    parallel_tool_calls = _StrictBool(allow_none=True)


class _Loose(Schema):
    class Meta:
        unknown = INCLUDE


class ImagesRequestSchema(_Loose):
    """POST /v1/images/generations."""

    model = fields.String(allow_none=True)
    prompt = fields.String(required=True, validate=validate.Length(min=1))
    n = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1, max=10))
    size = fields.String(allow_none=True, validate=validate.Length(max=32))
    quality = fields.String(allow_none=True, validate=validate.Length(max=32))
    response_format = fields.String(allow_none=True, validate=validate.OneOf(["url", "b64_json"]))
    user = fields.String(allow_none=True)


class ModerationsRequestSchema(_Loose):
    """POST /v1/moderations: `input` a string, a list of strings, or a list of text/image parts."""

    model = fields.String(allow_none=True)
    input = fields.Raw(required=True)

    @validates("input")
    def _input(self, value, **kwargs):
        if isinstance(value, str) or (isinstance(value, list) and value and all(
                isinstance(v, (str, dict)) for v in value)):
            return
        raise ValidationError("must be a string or a non-empty list of strings or parts")


class RerankRequestSchema(_Loose):
    """POST /rerank (Cohere's shape, as LiteLLM serves it)."""

    model = fields.String(required=True)
    query = fields.String(required=True, validate=validate.Length(min=1))
    documents = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1, max=10_000))
    top_n = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1))
    return_documents = _StrictBool(allow_none=True)

    @validates("documents")
    def _documents(self, value, **kwargs):
        for i, doc in enumerate(value):
            if not isinstance(doc, str) and not (isinstance(doc, dict) and isinstance(doc.get("text"), str)):
                raise ValidationError(f"documents[{i}] must be a string or an object with a text")


class _Upload(fields.Field):
    """An uploaded file (gateway/wire/multipart.py Upload)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if hasattr(value, "data") and hasattr(value, "filename"):
            return value
        raise ValidationError("must be an uploaded file")


class TranscriptionRequestSchema(_Loose):
    """POST /v1/audio/transcriptions and /translations (multipart/form-data)."""

    model = fields.String(required=True)
    file = _Upload(required=True)
    response_format = fields.String(allow_none=True, validate=validate.OneOf(
        ["json", "text", "srt", "verbose_json", "vtt"]))
    temperature = fields.Float(allow_none=True, validate=validate.Range(min=0, max=1))
    language = fields.String(allow_none=True, validate=validate.Length(max=16))
    prompt = fields.String(allow_none=True)


class SpeechRequestSchema(_Loose):
    """POST /v1/audio/speech."""

    model = fields.String(required=True)
    input = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    voice = fields.String(required=True)
    response_format = fields.String(allow_none=True, validate=validate.OneOf(
        ["mp3", "opus", "aac", "flac", "wav", "pcm"]))
    speed = fields.Float(allow_none=True, validate=validate.Range(min=0.25, max=4.0))


SCHEMAS = {"chat": ChatRequestSchema(), "completions": CompletionRequestSchema(),
           "embeddings": EmbeddingRequestSchema(), "messages": MessagesRequestSchema(),
           "count_tokens": CountTokensRequestSchema(), "responses": ResponsesRequestSchema(),
           "images": ImagesRequestSchema(), "moderations": ModerationsRequestSchema(),
           "rerank": RerankRequestSchema(), "transcriptions": TranscriptionRequestSchema(),
           "translations": TranscriptionRequestSchema(), "speech": SpeechRequestSchema()}


_DECLARED = {endpoint: frozenset(schema.fields) for endpoint, schema in SCHEMAS.items()}
_REQUIRED = {endpoint: frozenset(name for name, field in schema.fields.items() if field.required)
             for endpoint, schema in SCHEMAS.items()}


@functools.lru_cache(maxsize=256)
def _schema_for(endpoint, present):
    """The endpoint's schema narrowed to the declared fields a body has, plus the required ones.

    An absent optional field can never fail, so leaving it out changes no answer; it halves the
    cost of validating a typical body (marshmallow walks every declared field otherwise).
    """
    return type(SCHEMAS[endpoint])(only=present | _REQUIRED[endpoint])


def validate_body(endpoint, body):
    """Raise a 400 naming the first invalid parameter; the body itself is passed on unchanged."""
    problems = _schema_for(endpoint, _DECLARED[endpoint].intersection(body)).validate(body)
    if problems:
        param, text = first_error(problems)
        raise BadRequestError(f"Invalid request: {param}: {text}", param=param.split("[")[0].split(".")[0],
                              code="invalid_request")
