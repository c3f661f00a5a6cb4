"""Provider registry and the OpenAI / Azure translation halves (pure: no network)."""

import base64

import orjson
import pytest
from requests.structures import CaseInsensitiveDict

from gateway import errors
from gateway import providers
from gateway.providers.azure import AzureProvider
from gateway.providers.demo import DemoProvider
from gateway.providers.openai import OpenAIProvider
from gateway.config.settings import ConfigError
from gateway.config.settings import DeploymentConfig
from gateway.config.settings import from_dict

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def make(model, index=0, name="group", **params):
    """Build the provider for one deployment, as the router does."""
    return providers.build(DeploymentConfig(model_name=name, params={"model": model, **params},
                                            model_info={}, index=index))


def sent_body(req):
    return orjson.loads(req.body)


# --- split_model / build ------------------------------------------------------------------------

@pytest.mark.parametrize("model, expected", [
    ("gpt-3.5-turbo", ("openai", "gpt-3.5-turbo")),
    ("gpt-4o", ("openai", "gpt-4o")),
    ("gpt-4o-mini", ("openai", "gpt-4o-mini")),
    ("chatgpt-4o-latest", ("openai", "chatgpt-4o-latest")),
    ("o1", ("openai", "o1")),
    ("o1-mini", ("openai", "o1-mini")),
    ("o3-mini", ("openai", "o3-mini")),
    ("text-embedding-3-small", ("openai", "text-embedding-3-small")),
    ("text-embedding-ada-002", ("openai", "text-embedding-ada-002")),
    ("ft:gpt-4o-mini:org::abc", ("openai", "ft:gpt-4o-mini:org::abc")),
    ("openai/x", ("openai", "x")),
    ("openai/meta-llama/Llama-3-8b", ("openai", "meta-llama/Llama-3-8b")),
    ("azure/dep", ("azure", "dep")),
    ("demo", ("demo", "demo")),
    ("demo/echo", ("demo", "echo")),
    ("nosuchprovider/claude-3", ("nosuchprovider", "claude-3")),
    ("openai/", ("openai", "")),
    ("llama3", (None, "llama3")),
    ("omni", (None, "omni")),
    ("o1x", (None, "o1x")),
    ("mystery-model-7b", (None, "mystery-model-7b")),
])
def test_split_model(model, expected):
    assert providers.split_model(model) == expected


@pytest.mark.parametrize("model, cls, upstream", [
    ("gpt-3.5-turbo", OpenAIProvider, "gpt-3.5-turbo"),
    ("gpt-4o", OpenAIProvider, "gpt-4o"),
    ("o1-mini", OpenAIProvider, "o1-mini"),
    ("text-embedding-3-small", OpenAIProvider, "text-embedding-3-small"),
    ("openai/x", OpenAIProvider, "x"),
    ("demo", DemoProvider, "demo"),
    ("demo/echo", DemoProvider, "echo"),
])
def test_build_picks_the_provider(model, cls, upstream):
    provider = make(model)
    assert type(provider) is cls
    assert provider.model == upstream


def test_build_azure():
    provider = make("azure/dep", api_base="https://r.openai.azure.com", api_key="k")
    assert type(provider) is AzureProvider
    assert provider.model == "dep"


@pytest.mark.parametrize("model, fragment", [
    ("nosuchprovider/claude-3", "provider 'nosuchprovider' is not supported"),
    ("madeup/anthropic.claude-v2", "provider 'madeup' is not supported"),
    ("llama3", "cannot tell the provider of 'llama3'"),
    ("mystery-model-7b", "cannot tell the provider"),
])
def test_unsupported_providers(model, fragment):
    with pytest.raises(providers.UnsupportedProviderError) as info:
        make(model, index=4)
    message = str(info.value)
    assert message.startswith("model_list[4].litellm_params.model: ")
    assert fragment in message
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize("model", ["openai/", "azure/", "demo/"])
def test_empty_model_after_prefix_is_a_config_error(model):
    with pytest.raises(ConfigError) as info:
        make(model, index=2, api_base="https://r.openai.azure.com")
    assert not isinstance(info.value, providers.UnsupportedProviderError)
    assert str(info.value).startswith("model_list[2].litellm_params.model: ")


# --- OpenAI request building ----------------------------------------------------------------------

@pytest.mark.parametrize("api_base, endpoint, url", [
    (None, "chat", "https://api.openai.com/v1/chat/completions"),
    (None, "completions", "https://api.openai.com/v1/completions"),
    (None, "embeddings", "https://api.openai.com/v1/embeddings"),
    ("http://localhost:8000/v1", "chat", "http://localhost:8000/v1/chat/completions"),
    ("http://localhost:8000/v1/", "chat", "http://localhost:8000/v1/chat/completions"),
    ("http://localhost:8000/v1//", "embeddings", "http://localhost:8000/v1/embeddings"),
    ("https://openrouter.ai/api/v1", "completions", "https://openrouter.ai/api/v1/completions"),
])
def test_openai_url(api_base, endpoint, url):
    params = {"api_base": api_base} if api_base else {}
    req = make("openai/m", api_key="k", **params).build_request(endpoint, {}, False)
    assert req.method == "POST"
    assert req.url == url


def test_openai_base_url_alias():
    req = make("openai/m", base_url="http://h:1/v1/").build_request("chat", CHAT, False)
    assert req.url == "http://h:1/v1/chat/completions"


def test_openai_headers_from_api_key():
    req = make("gpt-4o", api_key="sk-deploy").build_request("chat", CHAT, False)
    assert req.headers["Authorization"] == "Bearer sk-deploy"
    assert req.headers["Content-Type"] == "application/json"


def test_openai_key_from_env_for_the_default_endpoint(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    req = make("gpt-4o").build_request("chat", CHAT, False)
    assert req.headers["Authorization"] == "Bearer sk-env"


@pytest.mark.parametrize("params", [{"api_base": "http://my-vllm:8000/v1"},
                                    {"base_url": "https://evil.example/v1"}])
def test_openai_env_key_never_goes_to_a_custom_api_base(monkeypatch, params):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret")
    req = make("openai/m", **params).build_request("chat", CHAT, False)
    assert "Authorization" not in req.headers
    assert "sk-env-secret" not in repr(req)


def test_openai_explicit_key_goes_to_a_custom_api_base(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    req = make("openai/m", api_base="http://h/v1", api_key="local-key").build_request("chat", CHAT, False)
    assert req.headers["Authorization"] == "Bearer local-key"


def test_openai_no_key_anywhere_sends_no_authorization():
    assert "Authorization" not in make("gpt-4o").build_request("chat", CHAT, False).headers


def test_openai_organization_and_extra_headers():
    provider = make("gpt-4o", api_key="k", organization="org-1",
                    headers={"X-Team": "a", "X-Both": "headers"},
                    extra_headers={"X-Extra": "b", "X-Both": "extra"})
    headers = provider.build_request("chat", CHAT, False).headers
    assert headers["OpenAI-Organization"] == "org-1"
    assert headers["X-Team"] == "a"
    assert headers["X-Extra"] == "b"
    assert headers["X-Both"] == "extra"


def test_openai_body_model_replaced_and_defaults_applied_when_missing():
    provider = make("openai/upstream-model", name="alias", temperature=0.2, max_tokens=50,
                    top_p=0.5, custom_param={"x": 1}, timeout=30, rpm=10, api_key="k")
    body = {"model": "alias", "messages": CHAT["messages"], "temperature": 0.9}
    sent = sent_body(provider.build_request("chat", body, False))
    assert sent == {"model": "upstream-model", "messages": CHAT["messages"], "temperature": 0.9,
                    "max_tokens": 50, "top_p": 0.5, "custom_param": {"x": 1}}


def test_openai_body_is_not_mutated():
    provider = make("openai/m", temperature=0.2)
    body = {"model": "alias", "messages": CHAT["messages"], "caching": True}
    before = orjson.loads(orjson.dumps(body))
    provider.build_request("chat", body, False)
    assert body == before


def test_openai_embeddings_get_only_embedding_defaults():
    provider = make("text-embedding-3-small", temperature=0.2, max_tokens=5, dimensions=256,
                    encoding_format="float", user="u1", top_p=0.1)
    sent = sent_body(provider.build_request("embeddings", {"input": "x"}, False))
    assert sent == {"model": "text-embedding-3-small", "input": "x", "dimensions": 256,
                    "encoding_format": "float", "user": "u1"}


@pytest.mark.parametrize("key", ["caching", "cache", "fallbacks", "context_window_fallbacks", "num_retries",
                                 "request_timeout", "api_key", "api_base", "base_url", "api_version",
                                 "mock_response", "metadata", "extra_headers"])
def test_gateway_control_keys_are_stripped(key):
    body = {**CHAT, key: {"any": "value"}}
    sent = sent_body(make("gpt-4o", api_key="k").build_request("chat", body, False))
    assert key not in sent
    assert sent["messages"] == CHAT["messages"]


def test_unknown_client_parameters_are_passed_on():
    body = {**CHAT, "reasoning_effort": "low", "parallel_tool_calls": False, "user": "u"}
    sent = sent_body(make("gpt-4o").build_request("chat", body, False))
    assert sent["reasoning_effort"] == "low"
    assert sent["parallel_tool_calls"] is False
    assert sent["user"] == "u"


def test_connection_params_are_never_sent_as_body_parameters():
    provider = make("openai/m", api_base="http://h/v1", api_key="sk-x", api_version="v", organization="o",
                    timeout=5, stream_timeout=5, headers={"A": "b"}, rpm=1, tpm=2, weight=1, order=1,
                    max_retries=2, input_cost_per_token=0.1, output_cost_per_token=0.2)
    assert sent_body(provider.build_request("chat", CHAT, False)) == {"model": "m", **CHAT}


def test_litellm_per_model_drop_params_keys_are_not_sent_upstream():
    # LiteLLM's documented per-deployment keys (docs: completion/drop_params):
    #   litellm_params: {model: openai/my-model, api_base: ..., drop_params: true,
    #                    additional_drop_params: ["response_format"]}
    # They steer the proxy; an OpenAI-compatible upstream rejects unknown body parameters.
    s = from_dict({"model_list": [{"model_name": "my-model", "litellm_params": {
        "model": "openai/my-model", "api_base": "http://h/v1", "drop_params": True,
        "additional_drop_params": ["response_format"]}}]})
    provider = providers.build(s.deployments[0])
    sent = sent_body(provider.build_request("chat", CHAT, False))
    assert "drop_params" not in sent
    assert "additional_drop_params" not in sent


def test_none_defaults_are_not_sent():
    provider = make("openai/m", temperature=None, max_tokens=None)
    assert sent_body(provider.build_request("chat", CHAT, False)) == {"model": "m", **CHAT}


def test_label_and_describe_hold_no_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-label")
    provider = make("gpt-4o", name="g", api_key="sk-param-label")
    assert provider.label == "g -> gpt-4o at https://api.openai.com/v1"
    assert provider.describe() == {"model_name": "g", "model": "gpt-4o", "provider": "openai",
                                   "api_base": "https://api.openai.com/v1"}
    assert "sk-" not in provider.label + repr(provider.describe())


@pytest.mark.parametrize("endpoint", ["chat", "completions", "embeddings"])
def test_stream_flag_does_not_change_the_request(endpoint):
    provider = make("gpt-4o", api_key="k")
    body = {"input": "x"} if endpoint == "embeddings" else {**CHAT, "stream": True}
    a = provider.build_request(endpoint, body, True)
    b = provider.build_request(endpoint, body, False)
    assert (a.url, a.headers, a.body) == (b.url, b.headers, b.body)


# --- Azure ------------------------------------------------------------------------------------------

AZURE_BASE = "https://res.openai.azure.com"


@pytest.mark.parametrize("endpoint, path", [("chat", "chat/completions"), ("completions", "completions"),
                                            ("embeddings", "embeddings")])
@pytest.mark.parametrize("api_base", [AZURE_BASE, AZURE_BASE + "/"])
def test_azure_urls(endpoint, path, api_base):
    provider = make("azure/my-dep", api_base=api_base, api_key="k", api_version="2024-02-01")
    req = provider.build_request(endpoint, {}, False)
    assert req.url == f"{AZURE_BASE}/openai/deployments/my-dep/{path}?api-version=2024-02-01"


def test_azure_deployment_and_version_are_url_quoted():
    provider = make("azure/dep one/two", api_base=AZURE_BASE, api_key="k", api_version="2024-02-01&x=y")
    url = provider.build_request("chat", {}, False).url
    assert url == f"{AZURE_BASE}/openai/deployments/dep%20one%2Ftwo/chat/completions?api-version=2024-02-01%26x%3Dy"


def test_azure_default_and_env_api_version(monkeypatch):
    provider = make("azure/d", api_base=AZURE_BASE, api_key="k")
    assert provider.build_request("chat", {}, False).url.endswith("?api-version=2024-10-21")
    monkeypatch.setenv("AZURE_API_VERSION", "2025-01-01-preview")
    provider = make("azure/d", api_base=AZURE_BASE, api_key="k")
    assert provider.build_request("chat", {}, False).url.endswith("?api-version=2025-01-01-preview")


def test_azure_api_key_header():
    headers = make("azure/d", api_base=AZURE_BASE, api_key="az-key").build_request("chat", CHAT, False).headers
    assert headers["api-key"] == "az-key"
    assert "Authorization" not in headers


def test_azure_api_key_from_env(monkeypatch):
    monkeypatch.setenv("AZURE_API_KEY", "az-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-leak")
    headers = make("azure/d", api_base=AZURE_BASE).build_request("chat", CHAT, False).headers
    assert headers["api-key"] == "az-env"
    assert "Authorization" not in headers


@pytest.mark.parametrize("source", ["param", "env"])
def test_azure_ad_token_bearer(monkeypatch, source):
    monkeypatch.setenv("AZURE_API_KEY", "az-env-key")
    if source == "param":
        provider = make("azure/d", api_base=AZURE_BASE, azure_ad_token="eyJ.token")
    else:
        monkeypatch.setenv("AZURE_AD_TOKEN", "eyJ.token")
        provider = make("azure/d", api_base=AZURE_BASE)
    headers = provider.build_request("chat", CHAT, False).headers
    assert headers["Authorization"] == "Bearer eyJ.token"
    assert "api-key" not in headers


def test_azure_body_uses_the_deployment_and_strips_controls():
    provider = make("azure/my-dep", api_base=AZURE_BASE, api_key="k", api_version="v", temperature=0.3)
    sent = sent_body(provider.build_request("chat", {**CHAT, "model": "alias", "api_version": "x"}, False))
    assert sent == {"model": "my-dep", **CHAT, "temperature": 0.3}


@pytest.mark.parametrize("index", [0, 3])
def test_azure_missing_api_base(index):
    with pytest.raises(ConfigError) as info:
        make("azure/d", index=index, api_key="k")
    assert str(info.value).startswith(f"model_list[{index}].litellm_params.api_base: ")


def test_azure_api_base_from_env(monkeypatch):
    monkeypatch.setenv("AZURE_API_BASE", "https://env.openai.azure.com/")
    provider = make("azure/d", api_key="k", api_version="v")
    assert provider.build_request("chat", {}, False).url == \
        "https://env.openai.azure.com/openai/deployments/d/chat/completions?api-version=v"
    assert provider.api_base == "https://env.openai.azure.com"


# --- map_error -------------------------------------------------------------------------------------

def openai_error(message, type_="invalid_request_error", param=None, code=None):
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def test_map_error_keeps_openai_error_fields():
    provider = make("gpt-4o", name="g", api_key="sk-deploy-key-0001")
    raw = openai_error("Invalid value for 'temperature'.", param="temperature", code="invalid_value")
    err = provider.map_error(400, raw, CaseInsensitiveDict({"x-request-id": "req_up_1"}))
    assert type(err) is errors.BadRequestError
    assert err.status == 400
    assert err.param == "temperature"
    assert err.code == "invalid_value"
    assert err.type == "invalid_request_error"
    assert "Invalid value for 'temperature'." in err.message
    assert err.upstream_status == 400
    assert err.upstream_request_id == "req_up_1"
    assert "g -> gpt-4o" in err.message


@pytest.mark.parametrize("status, cls", [
    (401, errors.AuthenticationError), (403, errors.PermissionDeniedError), (404, errors.NotFoundError),
    (429, errors.RateLimitError), (500, errors.UpstreamError), (503, errors.UpstreamError),
])
def test_map_error_status_classes(status, cls):
    err = make("gpt-4o").map_error(status, openai_error("x"), CaseInsensitiveDict())
    assert type(err) is cls
    assert err.upstream_status == status


def test_map_error_context_length():
    raw = openai_error("This model's maximum context length is 8192 tokens.", param="messages",
                       code="context_length_exceeded")
    err = make("gpt-4o").map_error(400, raw, CaseInsensitiveDict())
    assert type(err) is errors.ContextWindowExceededError


def test_map_error_retry_after_on_429():
    headers = CaseInsensitiveDict({"Retry-After": "7"})
    err = make("gpt-4o").map_error(429, openai_error("Rate limit reached", code="rate_limit_exceeded"), headers)
    assert err.headers == {"Retry-After": "7"}
    assert err.code == "rate_limit_exceeded"


def test_map_error_retry_after_only_on_429():
    err = make("gpt-4o").map_error(503, openai_error("busy"), CaseInsensitiveDict({"Retry-After": "7"}))
    assert err.headers == {}


@pytest.mark.parametrize("raw, fragment", [
    (b"<html><body>502 Bad Gateway</body></html>", "<html><body>502 Bad Gateway</body></html>"),
    (b"upstream connect error", "upstream connect error"),
    (b'{"message": "Not allowed"}', "Not allowed"),
    (b'{"error": "model overloaded"}', "model overloaded"),
    (b"", "upstream answered HTTP 502"),
    (b"\xff\xfe bad bytes", "bad bytes"),
])
def test_map_error_non_openai_bodies_keep_their_text(raw, fragment):
    err = make("openai/m", api_base="http://h/v1").map_error(502, raw, CaseInsensitiveDict())
    assert fragment in err.message
    assert err.status == 502


def test_map_error_long_text_is_truncated():
    err = make("gpt-4o").map_error(500, b"x" * 10_000, CaseInsensitiveDict())
    assert len(err.message) < 1000


def test_map_error_numeric_code_becomes_a_string():
    err = make("gpt-4o").map_error(400, orjson.dumps({"error": {"message": "m", "code": 400}}),
                                   CaseInsensitiveDict())
    assert err.code == "400"


@pytest.mark.parametrize("echoed", [
    "sk-abc123456789xyz",
    "sk-abc12***********************xyz",
    "sk-proj-AbC_dEf-123",
])
def test_map_error_scrubs_key_like_strings(echoed):
    raw = openai_error(f"Incorrect API key provided: {echoed}. You can find your API key at "
                       "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
    err = make("gpt-4o", api_key="sk-other-key-000").map_error(401, raw, CaseInsensitiveDict())
    assert type(err) is errors.AuthenticationError
    assert echoed not in str(err)
    assert echoed not in orjson.dumps(err.body()).decode()
    assert "Incorrect API key provided" in err.message


@pytest.mark.parametrize("model, params", [
    ("openai/m", {"api_base": "http://h/v1", "api_key": "plainsecretvalue42"}),
    ("azure/d", {"api_base": AZURE_BASE, "api_key": "0123456789abcdef0123456789abcdef"}),
    ("azure/d", {"api_base": AZURE_BASE, "azure_ad_token": "eyJhbGciOi.payload.sig"}),
])
def test_map_error_scrubs_the_deployments_own_key(model, params):
    secret = params.get("api_key") or params.get("azure_ad_token")
    provider = make(model, **params)
    raw = openai_error(f"Key {secret} is not valid for this resource", param=None)
    for status in (400, 401, 403, 500):
        err = provider.map_error(status, raw, CaseInsensitiveDict())
        assert secret not in str(err)
        assert secret not in orjson.dumps(err.body()).decode()
        assert secret not in repr(err.headers)


def test_map_error_scrubs_the_env_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "envsecretwithoutprefix")
    err = make("gpt-4o").map_error(401, b"bad key envsecretwithoutprefix", CaseInsensitiveDict())
    assert "envsecretwithoutprefix" not in str(err)


def test_map_error_scrubs_non_json_text():
    provider = make("openai/m", api_base="http://h/v1", api_key="sk-live-abcdef123456")
    err = provider.map_error(401, b"Unauthorized: sk-live-abcdef123456", CaseInsensitiveDict())
    assert "sk-live-abcdef123456" not in str(err)


# --- streams ---------------------------------------------------------------------------------------

def test_parse_stream_event():
    provider = make("gpt-4o")
    assert provider.parse_stream_event("chat", b"[DONE]", {}) is None
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"delta": {"content": "é"}}]}
    assert provider.parse_stream_event("chat", orjson.dumps(chunk), {}) == [chunk]


def test_parse_stream_event_bad_json_raises_decode_error():
    with pytest.raises(orjson.JSONDecodeError):
        make("gpt-4o").parse_stream_event("chat", b"{not json", {})


def test_parse_response_is_identity():
    data = {"id": "x", "choices": []}
    assert make("gpt-4o").parse_response("chat", data, {}) == data


# --- credentials in api_base (issue #11 item 6) ---------------------------------------------------

PASSWORD = "p4ss-canary-0123"
CRED_BASE = f"http://proxy-user:{PASSWORD}@127.0.0.1:8080"


@pytest.mark.parametrize("model, api_base, endpoint, body", [
    ("openai/gpt-4o", CRED_BASE + "/v1", "chat", CHAT),
    ("hosted_vllm/llama", CRED_BASE + "/v1", "chat", CHAT),
    ("azure/dep", CRED_BASE, "chat", CHAT),
    ("anthropic/claude-3-haiku", CRED_BASE, "chat", CHAT),
    ("cohere/command-r", CRED_BASE, "chat", CHAT),
    ("gemini/gemini-2.0-flash", CRED_BASE, "chat", CHAT),
    ("ai21/jamba-large", CRED_BASE + "/studio/v1", "chat", CHAT),
    ("ollama_chat/llama3", CRED_BASE, "chat", CHAT),
    ("huggingface/org/model", CRED_BASE, "chat", CHAT),
    ("replicate/meta/llama", CRED_BASE + "/v1", "chat", CHAT),
    ("petals/petals-team/StableBeluga2", CRED_BASE, "chat", CHAT),
])
def test_api_base_credentials_become_basic_auth_and_are_never_shown(model, api_base, endpoint, body):
    from gateway.wire.transport import with_basic_auth
    provider = make(model, api_base=api_base, api_key="sk-deployment-key-0")
    shown = provider.label + repr(provider.describe()) + str(provider.api_base)
    assert PASSWORD not in shown and "proxy-user" not in shown
    assert provider.api_base.startswith("http://127.0.0.1:8080")
    assert provider.basic_auth == "Basic " + base64.b64encode(f"proxy-user:{PASSWORD}".encode()).decode()
    req = provider.build_request(endpoint, provider.prepare_body(endpoint, body), False)
    sent = with_basic_auth(req, provider.basic_auth)  # what the transport sends
    assert sent.url.startswith("http://127.0.0.1:8080/") and PASSWORD not in sent.url
    assert [v for k, v in sent.headers.items() if k.lower() == "authorization"] == [provider.basic_auth]
    assert provider.scrub(f"proxy said {PASSWORD}") == "proxy said [redacted]"


def test_no_credentials_no_basic_auth():
    provider = make("openai/gpt-4o", api_base="http://127.0.0.1:8080/v1", api_key="k")
    assert provider.basic_auth is None and provider.api_base == provider.upstream_base == "http://127.0.0.1:8080/v1"


@pytest.mark.parametrize("model, params", [
    ("bedrock/anthropic.claude-3-haiku-20240307-v1:0", {"api_base": CRED_BASE}),
    ("sagemaker/my-endpoint", {"api_base": CRED_BASE}),
    ("huggingface/" + CRED_BASE + "/generate", {}),
])
def test_credentials_that_cannot_be_sent_are_a_config_error(model, params):
    with pytest.raises(ConfigError) as info:
        make(model, aws_access_key_id="AKIA0", aws_secret_access_key="s", aws_region_name="us-east-1", **params)
    assert PASSWORD not in str(info.value) and "credentials" in str(info.value)
