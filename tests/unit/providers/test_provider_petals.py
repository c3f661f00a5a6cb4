"""Petals HTTP API translation halves, table-tested from the chat.petals.dev README's examples."""

import json
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs

import orjson
import pytest

from gateway import errors
from gateway import providers
from gateway.providers import adapt
from gateway.providers.petals import PetalsProvider
from gateway.config.settings import DeploymentConfig

FIXTURES = Path(__file__).parent / "fixtures" / "petals"
REQUESTS = json.loads((FIXTURES / "generate.json").read_text())
ERRORS = json.loads((FIXTURES / "errors.json").read_text())
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _no_petals_env(monkeypatch):
    monkeypatch.delenv("PETALS_API_BASE", raising=False)


def make(params):
    return providers.build(DeploymentConfig(model_name="g", params=dict(params), model_info={}, index=0))


def prepared(provider, endpoint, request, drop_params=False):
    settings = SimpleNamespace(drop_params=drop_params, add_function_to_prompt=False)
    if endpoint == "chat":
        request = adapt.prepare_tools(provider, request, settings)
    return provider.prepare_body(endpoint, adapt.check_params(provider, endpoint, request, drop_params))


def assert_subset(expected, actual, path="$"):
    if isinstance(expected, dict):
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} missing in {actual!r}"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_subset(e, a, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("case", REQUESTS, ids=[c["name"] for c in REQUESTS])
def test_request_and_answer(case):
    provider = make(case["deployment"])
    body = prepared(provider, case["endpoint"], case["request"])
    req = provider.build_request(case["endpoint"], body, False)
    assert (req.method, req.url) == ("POST", case["upstream_request"]["url"])
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
    assert form == case["upstream_request"]["form"]
    assert_subset(case["expected"], provider.parse_response(case["endpoint"], case["upstream_response"], body))


@pytest.mark.parametrize("case", ERRORS, ids=[c["name"] for c in ERRORS])
def test_errors(case):
    provider = make({"model": "petals/petals-team/StableBeluga2"})
    body = {"messages": HI}
    if case["status"] == 200:  # ok: false arrives with HTTP 200, as an answer
        with pytest.raises(errors.GatewayError) as info:
            provider.parse_response("chat", case["body"], body)
        err = info.value
    else:
        raw = case["raw"].encode() if "raw" in case else orjson.dumps(case["body"])
        err = provider.map_error(case["status"], raw, case.get("headers", {}))
    expected = case["expected"]
    assert err.status == expected["status"]
    for key in ("code", "type"):
        if key in expected:
            assert getattr(err, key) == expected[key]
    if "message" in expected:
        assert expected["message"] in err.message
    if "absent" in expected:
        assert expected["absent"] not in err.message
    if "retry_after" in expected:
        assert err.headers["Retry-After"] == expected["retry_after"]
    assert err.message.startswith("Upstream error from petals: ") and "deployment: g -> petals/" in err.message
    assert "\n" not in err.message


def test_api_base_forms_and_default(monkeypatch):
    assert make({"model": "petals/m"}).url == "https://chat.petals.dev/api/v1/generate"
    assert make({"model": "petals/m", "api_base": "http://h:5000/"}).url == "http://h:5000/api/v1/generate"
    assert make({"model": "petals/m", "api_base": "http://h/api/v1/generate"}).url == "http://h/api/v1/generate"
    monkeypatch.setenv("PETALS_API_BASE", "http://env-host:8000")
    assert make({"model": "petals/m"}).url == "http://env-host:8000/api/v1/generate"
    keyed = make({"model": "petals/m", "api_key": "key-petals-123456"})
    assert keyed.headers["Authorization"] == "Bearer key-petals-123456" and "Authorization" not in make(
        {"model": "petals/m"}).headers


def test_capabilities():
    provider = make({"model": "petals/m"})
    assert type(provider) is PetalsProvider
    assert provider.supports("chat", False) and provider.supports("completions", False)
    assert not provider.supports("chat", True) and not provider.supports("embeddings", False)
    assert not PetalsProvider.tools and not PetalsProvider.vision


@pytest.mark.parametrize("key, value", [("stop", ["\n"]), ("n", 2), ("seed", 1), ("presence_penalty", 0.5),
                                        ("response_format", {"type": "json_object"})])
def test_unsupported_params(key, value):
    provider = make({"model": "petals/m"})
    with pytest.raises(errors.BadRequestError) as info:
        prepared(provider, "chat", {"messages": HI, key: value})
    assert info.value.param == key
    assert key not in prepared(provider, "chat", {"messages": HI, key: value}, drop_params=True)


def test_tools_refused_and_prompt_errors():
    provider = make({"model": "petals/m"})
    with pytest.raises(errors.BadRequestError, match="no tool support"):
        prepared(provider, "chat", {"messages": HI, "tools": [{"type": "function", "function": {"name": "f"}}]})
    with pytest.raises(errors.BadRequestError, match="one prompt string"):
        provider.build_request("completions", {"prompt": ["a", "b"]}, False)
    image = [{"role": "user", "content": [{"type": "text", "text": "what is it"},
                                          {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]
    with pytest.raises(errors.BadRequestError, match="text only"):
        provider.build_request("chat", {"messages": image}, False)


def test_ok_false_without_traceback_and_non_dict():
    provider = make({"model": "petals/m"})
    with pytest.raises(errors.UpstreamError, match="without a traceback"):
        provider.parse_response("chat", {"ok": False}, {"messages": HI})
    with pytest.raises(errors.UpstreamError):
        provider.parse_response("chat", ["x"], {"messages": HI})
