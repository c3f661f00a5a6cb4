"""Bedrock's pure halves, table-tested against fixtures from the documented Converse/InvokeModel shapes."""

import base64
import json
from pathlib import Path

import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers import aws
from gateway.providers.bedrock import BedrockProvider
from gateway.config.settings import ConfigError
from gateway.config.settings import DeploymentConfig

FIXTURES = Path(__file__).parent / "fixtures" / "bedrock"
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION_NAME", "AWS_REGION",
           "AWS_DEFAULT_REGION", "AWS_PROFILE_NAME", "AWS_BEDROCK_RUNTIME_ENDPOINT", "AWS_BEARER_TOKEN_BEDROCK")
KEYS = {"aws_access_key_id": "AKIAUNITTEST0000", "aws_secret_access_key": "unit/secret+key0123456789",
        "aws_region_name": "us-east-1"}


@pytest.fixture(autouse=True)
def _no_aws_env(monkeypatch):
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)


def load(name):
    return json.loads((FIXTURES / name).read_text())


def make(model, index=0, model_info=None, **params):
    """The provider for one deployment, built through the registry as the router does."""
    return providers.build(DeploymentConfig(model_name="group", params={"model": model, **KEYS, **params},
                                            model_info=model_info or {}, index=index))


def stream(provider, events, body=None):
    """All chunks for a list of ConverseStream events, end of stream included."""
    state = provider.new_stream_state("chat", body or {})
    chunks = [c for e in events for c in provider.parse_stream_event("chat", e, state)]
    return chunks + provider.end_of_stream(state)


def joined(chunks):
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# --- registry and settings ------------------------------------------------------------------------

@pytest.mark.parametrize("model, upstream", [
    ("bedrock/anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"),
    ("bedrock/converse/meta.llama3-8b-instruct-v1:0", "meta.llama3-8b-instruct-v1:0"),
    ("bedrock/invoke/mistral.mistral-7b-instruct-v0:2", "mistral.mistral-7b-instruct-v0:2"),
    ("bedrock/us.anthropic.claude-3-5-sonnet-20241022-v2:0", "us.anthropic.claude-3-5-sonnet-20241022-v2:0"),
    ("anthropic.claude-v2", "anthropic.claude-v2"),
    ("amazon.titan-embed-text-v2:0", "amazon.titan-embed-text-v2:0"),
    ("cohere.command-r-v1:0", "cohere.command-r-v1:0"),
    ("ai21.jamba-1-5-large-v1:0", "ai21.jamba-1-5-large-v1:0"),
    ("eu.amazon.nova-pro-v1:0", "eu.amazon.nova-pro-v1:0"),
])
def test_model_strings(model, upstream):
    provider = make(model)
    assert type(provider) is BedrockProvider
    assert provider.model == upstream


def test_region_from_an_arn_and_the_default_endpoint():
    provider = make("bedrock/arn:aws:bedrock:eu-west-3:123456789012:inference-profile/eu.anthropic.claude",
                    aws_region_name=None)
    assert provider.aws.region == "eu-west-3"
    assert provider.api_base == "https://bedrock-runtime.eu-west-3.amazonaws.com"


@pytest.mark.parametrize("env, region", [
    ({"AWS_REGION_NAME": "eu-central-1", "AWS_REGION": "us-east-2"}, "eu-central-1"),
    ({"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "ap-south-1"}, "us-east-2"),
    ({"AWS_DEFAULT_REGION": "ap-south-1"}, "ap-south-1"),
    ({}, None),
])
def test_region_from_env(monkeypatch, env, region):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert make("bedrock/anthropic.claude-v2", aws_region_name=None).aws.region == region


def test_credentials_from_env_and_endpoint_aliases(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    config = DeploymentConfig("g", {"model": "bedrock/anthropic.claude-v2",
                                    "aws_bedrock_runtime_endpoint": "https://vpce.example/"}, {}, 0)
    provider = providers.build(config)
    assert (provider.aws.access_key, provider.aws.secret_key, provider.aws.session_token) == (
        "AKIAENV", "env-secret-value", "env-token")
    assert provider.api_base == "https://vpce.example"
    monkeypatch.setenv("AWS_BEDROCK_RUNTIME_ENDPOINT", "https://from-env.example")
    from_env = providers.build(DeploymentConfig("g", {"model": "bedrock/x.y"}, {}, 0))
    assert from_env.api_base == "https://from-env.example"


def test_env_session_token_only_pairs_with_the_env_key(monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "someone-elses-token")
    assert make("bedrock/a.b").aws.session_token is None  # keys from litellm_params, token not from env


def test_bedrock_api_key_from_params_or_env(monkeypatch):
    keyed = providers.build(DeploymentConfig("g", {"model": "bedrock/a.b", "api_key": "br-key-1"}, {}, 0))
    assert keyed.aws.bearer_token == "br-key-1" and "br-key-1" in keyed.secrets
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "br-env")
    assert providers.build(DeploymentConfig("g", {"model": "bedrock/a.b"}, {}, 0)).aws.bearer_token == "br-env"
    assert make("bedrock/a.b").aws.bearer_token is None  # a configured key pair wins over the env token


def test_bearer_client_is_unsigned_and_sends_the_key():
    provider = providers.build(DeploymentConfig("g", {"model": "bedrock/a.b", "api_key": "br-key-1",
                                                      "aws_region_name": "us-east-1"}, {}, 0))
    from botocore import UNSIGNED
    assert provider.aws.client(5.0).meta.config.signature_version is UNSIGNED


@pytest.mark.parametrize("key", ["aws_role_name", "aws_web_identity_token"])
def test_unsupported_auth_flows_are_config_errors(key):
    with pytest.raises(ConfigError, match=rf"model_list\[2\].litellm_params.{key}: not supported"):
        make("bedrock/a.b", index=2, **{key: "x"})


@pytest.mark.parametrize("params, missing", [
    ({"aws_access_key_id": "AKIA"}, "aws_secret_access_key"),
    ({"aws_secret_access_key": "s"}, "aws_access_key_id"),
])
def test_half_a_key_pair_is_a_config_error(params, missing):
    with pytest.raises(ConfigError) as info:
        providers.build(DeploymentConfig("g", {"model": "bedrock/anthropic.claude-v2", **params}, {}, 3))
    assert str(info.value).startswith(f"model_list[3].litellm_params.{missing}")


def test_bad_region_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model_list\[0\].litellm_params.aws_region_name"):
        make("bedrock/anthropic.claude-v2", aws_region_name="US East")


def test_secrets_never_in_label_describe_defaults_or_errors():
    provider = make("bedrock/anthropic.claude-v2", api_base="https://bedrock.example", temperature=0.2,
                    aws_session_token="session-token-secret")
    shown = repr(provider.describe()) + provider.label + repr(provider.defaults)
    for secret in (KEYS["aws_secret_access_key"], "session-token-secret", KEYS["aws_access_key_id"]):
        assert secret not in shown
    assert provider.defaults == {"temperature": 0.2}
    err = aws.error_from_aws(provider, 403, "UnrecognizedClientException",
                             f"bad key {KEYS['aws_access_key_id']} / {KEYS['aws_secret_access_key']}")
    assert KEYS["aws_secret_access_key"] not in err.message and KEYS["aws_access_key_id"] not in err.message


def test_boto3_is_not_imported_to_build_a_deployment():
    import subprocess
    import sys
    code = ("import sys; from gateway import providers; from gateway.config.settings import DeploymentConfig; "
            "providers.build(DeploymentConfig('g', {'model': 'bedrock/anthropic.claude-v2'}, {}, 0)); "
            "providers.build(DeploymentConfig('s', {'model': 'sagemaker/e'}, {}, 1)); "
            "print('boto3' in sys.modules or 'botocore' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


# --- chat -----------------------------------------------------------------------------------------

def test_chat_request_and_answer():
    fx = load("chat.json")
    provider = make("bedrock/" + fx["model"])
    assert provider.build_converse_kwargs(fx["request"]) == fx["converse_kwargs"]
    answer = provider.parse_converse(fx["response"])
    choice = answer["choices"][0]
    assert answer["object"] == "chat.completion" and answer["model"] == fx["model"]
    assert choice["message"] == {"role": "assistant", "content": fx["answer"]["content"]}
    assert choice["finish_reason"] == fx["answer"]["finish_reason"]
    assert answer["usage"] == fx["answer"]["usage"]


@pytest.mark.parametrize("reason, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("content_filtered", "content_filter"), ("guardrail_intervened", "content_filter"),
    ("model_context_window_exceeded", "length"), ("something_new", "stop"),
])
def test_finish_reasons(reason, finish):
    resp = {"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": reason}
    assert make("bedrock/a.b").parse_converse(resp)["choices"][0]["finish_reason"] == finish


def test_max_completion_tokens_wins_and_prefill_is_trimmed():
    kwargs = make("bedrock/a.b").build_converse_kwargs({
        "max_tokens": 10, "max_completion_tokens": 20,
        "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                     {"role": "assistant", "content": "Sure: "}]})
    assert kwargs["inferenceConfig"] == {"maxTokens": 20}
    assert kwargs["messages"] == [{"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
                                  {"role": "assistant", "content": [{"text": "Sure:"}]}]


def test_passthrough_fields_and_thinking():
    kwargs = make("bedrock/a.b").build_converse_kwargs({
        "messages": [{"role": "user", "content": "a"}], "guardrailConfig": {"guardrailIdentifier": "gr-1",
                                                                              "guardrailVersion": "1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "unknown_extra": 1})
    assert kwargs["guardrailConfig"] == {"guardrailIdentifier": "gr-1", "guardrailVersion": "1"}
    assert kwargs["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert "unknown_extra" not in kwargs


def test_reasoning_content_is_kept():
    resp = {"output": {"message": {"content": [{"reasoningContent": {"reasoningText": {"text": "hmm"}}},
                                               {"text": "42"}]}}, "stopReason": "end_turn"}
    message = make("bedrock/a.b").parse_converse(resp)["choices"][0]["message"]
    assert message["content"] == "42" and message["reasoning_content"] == "hmm"


# --- tools ----------------------------------------------------------------------------------------

def test_tools_request_and_answer():
    fx = load("tools.json")
    provider = make("bedrock/" + fx["model"])
    assert provider.build_converse_kwargs(fx["request"]) == fx["converse_kwargs"]
    choice = provider.parse_converse(fx["response"])["choices"][0]
    assert choice["finish_reason"] == fx["answer"]["finish_reason"]
    assert choice["message"]["content"] == fx["answer"]["content"]
    assert choice["message"]["tool_calls"] == fx["answer"]["tool_calls"]


def test_tool_choices():
    fx = load("tools.json")
    provider = make("bedrock/" + fx["model"])
    for choice, expected in fx["tool_choices"]:
        kwargs = provider.build_converse_kwargs({**fx["request"], "tool_choice": choice})
        assert kwargs["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none():
    fx = load("tools.json")
    provider = make("bedrock/" + fx["model"])
    fresh = {"messages": [{"role": "user", "content": "hi"}], "tools": fx["request"]["tools"], "tool_choice": "none"}
    assert "toolConfig" not in provider.build_converse_kwargs(fresh)  # offering no tool is exactly `none`
    used = {**fx["request"], "tool_choice": "none"}
    with pytest.raises(errors.BadRequestError) as info:
        provider.build_converse_kwargs(used)
    assert info.value.param == "tool_choice"
    assert "toolChoice" not in provider.build_converse_kwargs(used, drop_params=True)["toolConfig"]


def test_parallel_tool_calls():
    fx = load("tools.json")
    provider = make("bedrock/" + fx["model"])
    provider.build_converse_kwargs({**fx["request"], "parallel_tool_calls": True})
    with pytest.raises(errors.BadRequestError):
        provider.build_converse_kwargs({**fx["request"], "parallel_tool_calls": False})
    provider.build_converse_kwargs({**fx["request"], "parallel_tool_calls": False}, drop_params=True)


def test_legacy_function_messages_pair_up():
    kwargs = make("bedrock/a.b").build_converse_kwargs({"messages": [
        {"role": "user", "content": "w?"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_w", "arguments": "{}"}},
        {"role": "function", "name": "get_w", "content": "sunny"}]})
    use = kwargs["messages"][1]["content"][0]["toolUse"]
    result = kwargs["messages"][2]["content"][0]["toolResult"]
    assert use["toolUseId"] == result["toolUseId"] == "call_get_w"


def test_json_mode():
    fx = load("json_mode.json")
    provider = make("bedrock/" + fx["model"])
    assert provider.build_converse_kwargs(fx["request"])["toolConfig"] == fx["tool_config"]
    choice = provider.parse_response("chat", fx["response"], fx["request"])["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": fx["answer"]["content"]}
    assert choice["finish_reason"] == fx["answer"]["finish_reason"]
    chunks = stream(provider, fx["stream"], fx["request"])
    assert json.loads(joined(chunks)) == {"city": "Lyon"}
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_json_object_mode_uses_an_open_schema():
    config = make("bedrock/a.b").build_converse_kwargs({"messages": [{"role": "user", "content": "x"}],
                                                         "response_format": {"type": "json_object"}})["toolConfig"]
    assert config["tools"][0]["toolSpec"]["inputSchema"]["json"]["additionalProperties"] is True


# --- images ---------------------------------------------------------------------------------------

def test_image_data_url_becomes_bytes():
    fx = load("image.json")
    kwargs = make("bedrock/" + fx["model"]).build_converse_kwargs(fx["request"])
    text, image = kwargs["messages"][0]["content"]
    assert text == {"text": "What's in this image?"}
    assert image["image"]["format"] == fx["image_format"]
    assert image["image"]["source"]["bytes"] == base64.b64decode(fx["image_base64"])


@pytest.mark.parametrize("url, fragment", load("image.json")["rejected"])
def test_images_refused(url, fragment):
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    with pytest.raises(errors.BadRequestError) as info:
        make("bedrock/a.b").build_converse_kwargs(body)
    assert fragment in info.value.message and info.value.status == 400


# --- streams --------------------------------------------------------------------------------------

@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_text(include_usage):
    fx = load("stream_text.json")
    provider = make("bedrock/" + fx["model"])
    chunks = stream(provider, fx["events"], {"stream_options": {"include_usage": include_usage}})
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert joined(chunks) == fx["content"]
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == [fx["finish_reason"]]
    usage = [c for c in chunks if not c["choices"]]
    assert [c["usage"] for c in usage] == ([fx["usage"]] if include_usage else [])


def test_stream_usage_chunk_even_without_metadata():
    fx = load("stream_text.json")
    chunks = stream(make("bedrock/a.b"), fx["events"][:-1], {"stream_options": {"include_usage": True}})
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 0


def test_stream_tools():
    fx = load("stream_tools.json")
    chunks = stream(make("bedrock/" + fx["model"]), fx["events"])
    assert joined(chunks) == fx["content"]
    calls = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls") or []:
            entry = calls.setdefault(call["index"], {"index": call["index"], "arguments": ""})
            if "id" in call:
                entry.update(id=call["id"], name=call["function"]["name"])
                assert call["type"] == "function"
            entry["arguments"] += call["function"]["arguments"]
    assert [calls[i] for i in sorted(calls)] == fx["tool_calls"]
    assert chunks[-1]["choices"][0]["finish_reason"] == fx["finish_reason"]


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", load("errors.json")["http"], ids=lambda c: c["type"] + ":" + c["message"][:20])
def test_map_error(case):
    provider = make("bedrock/a.b")
    headers = {"x-amzn-ErrorType": f"{case['type']}:http://internal.amazon.com/coral/com.amazon.bedrock/",
               "x-amzn-RequestId": "req-1"}
    if case.get("retry_after"):
        headers["Retry-After"] = case["retry_after"]
    err = provider.map_error(case["status"], json.dumps({"message": case["message"]}).encode(), headers)
    assert type(err).__name__ == case["class"]
    assert err.status == case["want_status"] and err.code == case["code"]
    assert case["message"] in err.message and case["type"] in err.message
    assert err.upstream_request_id == "req-1"
    if case.get("retry_after"):
        assert err.headers == {"Retry-After": case["retry_after"]}


def test_map_error_without_a_json_body():
    err = make("bedrock/a.b").map_error(502, b"<html>Bad Gateway</html>", {})
    assert err.status == 502 and "Bad Gateway" in err.message


def test_client_error_and_stream_error():
    from botocore.exceptions import ClientError
    from botocore.exceptions import EventStreamError

    fx = load("errors.json")
    provider = make("bedrock/a.b")
    case = fx["client_error"]
    err = aws.map_exception(provider, ClientError(case["response"], "Converse"), 30)
    assert type(err).__name__ == case["class"] and err.status == case["want_status"]
    assert err.upstream_request_id == case["request_id"] and err.headers == {"Retry-After": case["retry_after"]}
    case = fx["stream_error"]
    err = aws.map_exception(provider, EventStreamError(case["response"], "ConverseStream"), 30)
    assert type(err).__name__ == case["class"] and err.status == case["want_status"]
    assert "The model stream broke." in err.message


def test_io_errors_map_to_timeouts_and_connection_errors():
    from botocore.exceptions import EndpointConnectionError
    from botocore.exceptions import NoCredentialsError
    from botocore.exceptions import ParamValidationError
    from botocore.exceptions import ReadTimeoutError

    provider = make("bedrock/a.b")
    cases = [(ReadTimeoutError(endpoint_url="https://x"), errors.UpstreamTimeoutError, 504),
             (EndpointConnectionError(endpoint_url="https://x"), errors.UpstreamConnectionError, 502),
             (NoCredentialsError(), errors.ServiceUnavailableError, 503),
             (ParamValidationError(report="Invalid length"), errors.BadRequestError, 400)]
    for exc, cls, status in cases:
        err = aws.map_exception(provider, exc, 30)
        assert isinstance(err, cls) and err.status == status
    assert aws.map_exception(provider, ZeroDivisionError(), 30) is None


# --- params ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("param, value", [("seed", 1), ("n", 2), ("logit_bias", {"1": 2}), ("user", "u1"),
                                          ("presence_penalty", 0.5)])
def test_unsupported_params_refused_or_dropped(param, value):
    provider = make("bedrock/a.b")
    body = {"messages": [], param: value, "temperature": 0.1}
    with pytest.raises(errors.BadRequestError) as info:
        adapt.check_params(provider, "chat", body, drop_params=False)
    assert info.value.param == param and info.value.code == "unsupported_parameter"
    assert adapt.check_params(provider, "chat", body, drop_params=True) == {"messages": [], "temperature": 0.1}


def test_supported_params_pass():
    body = {"messages": [], "n": 1, "temperature": 0, "top_p": 1, "max_tokens": 5, "stop": ["x"], "tools": [],
            "tool_choice": "auto", "response_format": {"type": "text"}, "max_completion_tokens": 3}
    assert adapt.check_params(make("bedrock/a.b"), "chat", body, drop_params=False) == body


# --- embeddings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["titan", "cohere"])
def test_embeddings(family):
    fx = load("embeddings.json")[family]
    provider = make("bedrock/" + fx["model"])
    assert provider.supports("embeddings", False) and not provider.supports("embeddings", True)
    assert provider.build_embedding_requests(fx["request"]) == fx["bodies"]
    headers = fx.get("headers") or {}
    answer = provider.parse_embeddings([(resp, headers) for resp in fx["responses"]])
    vectors = [r.get("embedding") for r in fx["responses"] if "embedding" in r] or fx["responses"][0]["embeddings"]
    assert [d["embedding"] for d in answer["data"]] == vectors
    assert [d["index"] for d in answer["data"]] == list(range(len(vectors)))
    assert answer["usage"] == {"prompt_tokens": fx["prompt_tokens"], "total_tokens": fx["prompt_tokens"]}


def test_cohere_v4_embeddings_by_type_and_batches():
    fx = load("embeddings.json")["cohere_v4"]
    provider = make("bedrock/" + fx["model"])
    assert [d["embedding"] for d in provider.parse_embeddings([(fx["responses"][0], {})])["data"]] == fx["vectors"]
    bodies = provider.build_embedding_requests({"input": [str(i) for i in range(200)], "dimensions": 512})
    assert [len(b["texts"]) for b in bodies] == [96, 96, 8]
    assert all(b["output_dimension"] == 512 and b["input_type"] == "search_document" for b in bodies)


@pytest.mark.parametrize("model", ["amazon.titan-embed-text-v1", "cohere.embed-english-v3"])
def test_fixed_size_embedding_models_refuse_dimensions(model):
    with pytest.raises(errors.BadRequestError) as info:
        make("bedrock/" + model).build_embedding_requests({"input": "x", "dimensions": 256})
    assert info.value.param == "dimensions"


def test_chat_models_do_not_serve_embeddings():
    assert not make("bedrock/anthropic.claude-v2").supports("embeddings", False)
    assert make("bedrock/anthropic.claude-v2").supports("chat", True)


def test_boto3_client_is_built_once_per_timeout_with_no_retries():
    provider = make("bedrock/anthropic.claude-v2", api_base="http://127.0.0.1:9")
    client = provider.aws.client(12.5)
    assert provider.aws.client(12.5) is client
    config = client.meta.config
    assert config.retries["total_max_attempts"] == 1 and config.read_timeout == 12.5
    assert config.connect_timeout == 10.0 and config.max_pool_connections == aws.POOL_SIZE
    assert client.meta.endpoint_url == "http://127.0.0.1:9" and client.meta.region_name == "us-east-1"
    for timeout in range(aws.MAX_CLIENTS + 3):
        provider.aws.client(float(timeout + 1))
    assert len(provider.aws._clients) == aws.MAX_CLIENTS


def test_stream_failures_become_gateway_errors():
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import ReadTimeoutError

    provider = make("bedrock/a.b")

    def events(exc):
        yield {"messageStart": {"role": "assistant"}}
        raise exc

    def run(exc, translate=lambda e: [e]):
        got = []
        with pytest.raises(errors.GatewayError) as info:
            for chunk in aws.translated(provider, events(exc), translate, lambda: [], 7.0):
                got.append(chunk)
        assert got == [{"messageStart": {"role": "assistant"}}]
        return info.value

    assert isinstance(run(ReadTimeoutError(None, "/", "read timed out")), errors.UpstreamTimeoutError)
    assert isinstance(run(ProtocolError("Connection broken")), errors.UpstreamConnectionError)
    original = errors.RateLimitError("slow down")
    assert run(original) is original
    broken = run(ValueError("bad"), translate=lambda e: [e["messageStart"]["role"] and e])
    assert type(broken) is errors.UpstreamError and "cannot read" in broken.message


def test_model_id_overrides_the_called_id():
    arn = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"
    provider = make("bedrock/anthropic.claude-3-haiku-20240307-v1:0", model_id=arn)
    assert provider.build_converse_kwargs({"messages": [{"role": "user", "content": "x"}]})["modelId"] == arn
    assert provider.model == "anthropic.claude-3-haiku-20240307-v1:0" and "model_id" not in provider.defaults
