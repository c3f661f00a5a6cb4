"""Wildcard routing and access groups through a real gateway (issue #14 items 3 and 4).

One gunicorn gateway (2 gevent workers) with `*` -> the fake OpenAI (`openai/*`), `anthropic/*` ->
the fake Anthropic, a longer `anthropic/claude-3-haiku*` -> OpenAI, and exact groups (some in the
access group `beta`), called with the openai SDK: what the fakes received is the proof of routing.
"""

import time

import openai
import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.integration.conftest import admin_call
from tests.integration.conftest import config_gateway

pytestmark = pytest.mark.integration

MASTER = "sk-wild-master-0123456789"
ANTHROPIC_KEY = "sk-ant-wild-upstream-0001"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake_anthropic():
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(fake_anthropic):
    fake_anthropic.reset()


def _openai(fake, name, model, **extra):
    info = extra.pop("model_info", None)
    entry = {"model_name": name, "litellm_params": {"model": model, "api_base": fake.url + "/v1",
                                                    "api_key": fake.api_key, **extra}}
    if info:
        entry["model_info"] = info
    return entry


@pytest.fixture(scope="module")
def gateway(fake_openai, fake_anthropic, tmp_path_factory):
    f = fake_openai
    config = {
        "model_list": [
            _openai(f, "*", "openai/*"),
            {"model_name": "anthropic/*", "model_info": {"access_groups": ["beta"]},
             "litellm_params": {"model": "anthropic/*", "api_base": fake_anthropic.url, "api_key": ANTHROPIC_KEY}},
            _openai(f, "anthropic/claude-3-haiku*", "openai/haiku*"),
            _openai(f, "exact-one", "openai/exact-upstream"),
            _openai(f, "premium", "openai/gpt-3.5-turbo", model_info={"access_groups": ["beta"]}),
            _openai(f, "failing", "openai/fail-500", model_info={"access_groups": ["beta"]}),
            _openai(f, "other", "openai/other-model"),
        ],
        "router_settings": {"num_retries": 1, "allowed_fails": 1000, "fallbacks": [{"failing": ["other"]}]},
        "general_settings": {"master_key": MASTER},
    }
    gw = config_gateway(tmp_path_factory.mktemp("gw-wild"), config)
    yield gw
    gw.stop()


def admin(gateway, method, path, **kwargs):
    return admin_call(gateway, MASTER, method, path, **kwargs)


def client(gateway, key=MASTER):
    return openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0, timeout=30)


def new_key(gateway, **rules):
    return admin(gateway, "POST", "/key/generate", json=rules)["key"]


def sent_openai(fake):
    return [r["json"].get("model") for r in fake.requests if r["path"].endswith("/chat/completions")]


def sent_anthropic(fake):
    return [r["json"].get("model") for r in fake.requests if r["path"].endswith("/messages")]


def call(gateway, model, key=MASTER, **extra):
    return client(gateway, key).chat.completions.with_raw_response.create(model=model, messages=HELLO,
                                                                          extra_body=extra or None)


def test_star_passes_the_requested_name_through_and_names_it_in_headers_and_row(gateway, fake_openai):
    key = new_key(gateway)
    raw = call(gateway, "gpt-4o", key)
    assert raw.parse().choices[0].message.content
    assert sent_openai(fake_openai) == ["gpt-4o"]  # never "*"
    assert raw.headers["x-litellm-model-group"] == "gpt-4o"
    deadline = time.monotonic() + 15
    while not (rows := admin(gateway, "GET", "/spend/logs", params={"api_key": key})) and time.monotonic() < deadline:
        time.sleep(0.05)
    [row] = rows
    assert row["model_group"] == "gpt-4o" and row["model"] == "gpt-4o"
    assert row["spend"] > 0  # priced from the model table: the wildcard deployment sets no price


def test_provider_pattern_and_the_longer_pattern_and_exact_names(gateway, fake_openai, fake_anthropic):
    call(gateway, "anthropic/claude-3-opus")
    assert sent_anthropic(fake_anthropic) == ["claude-3-opus"]
    call(gateway, "anthropic/claude-3-haiku-2024")  # the longer pattern wins: OpenAI, `haiku-2024`
    call(gateway, "exact-one")  # an exact name wins over `*`
    assert sent_openai(fake_openai) == ["haiku-2024", "exact-upstream"]
    assert sent_anthropic(fake_anthropic) == ["claude-3-opus"]


def test_a_pattern_name_is_not_a_model_to_call(gateway, fake_openai, fake_anthropic):
    for name in ("*", "anthropic/*"):
        with pytest.raises(openai.NotFoundError):
            call(gateway, name)
    assert sent_openai(fake_openai) == [] and sent_anthropic(fake_anthropic) == []


def test_retries_apply_to_a_wildcard_deployment(gateway, fake_openai):
    raw = call(gateway, "flaky-1")
    assert raw.headers["x-litellm-attempted-retries"] == "1"
    assert sent_openai(fake_openai) == ["flaky-1", "flaky-1"]


def test_models_lists_exact_names_and_the_patterns_own_names(gateway):
    assert sorted(m.id for m in client(gateway).models.list()) == sorted(
        ["exact-one", "premium", "failing", "other", "*", "anthropic/*", "anthropic/claude-3-haiku*"])
    key = new_key(gateway, models=["anthropic/*"])
    assert sorted(m.id for m in client(gateway, key).models.list()) == ["anthropic/*", "anthropic/claude-3-haiku*"]
    assert client(gateway, key).models.retrieve("anthropic/claude-3-opus").id == "anthropic/claude-3-opus"
    with pytest.raises(openai.NotFoundError):
        client(gateway, key).models.retrieve("gpt-4o")
    beta = new_key(gateway, models=["beta"])
    assert sorted(m.id for m in client(gateway, beta).models.list()) == ["anthropic/*", "failing", "premium"]


@pytest.mark.parametrize("models", [["*"], ["all-proxy-models"]])
def test_keys_with_every_model(gateway, fake_openai, fake_anthropic, models):
    key = new_key(gateway, models=models)
    call(gateway, "gpt-4o-mini", key)
    call(gateway, "other", key)
    call(gateway, "anthropic/claude-2", key)
    assert sent_openai(fake_openai) == ["gpt-4o-mini", "other-model"]
    assert sent_anthropic(fake_anthropic) == ["claude-2"]


def test_a_key_with_a_pattern_calls_what_matches_and_nothing_else(gateway, fake_openai, fake_anthropic):
    key = new_key(gateway, models=["anthropic/*"])
    call(gateway, "anthropic/claude-3-opus", key)
    for name in ("gpt-4o", "premium"):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            call(gateway, name, key)
        assert caught.value.body["code"] == "model_not_allowed"
    assert sent_anthropic(fake_anthropic) == ["claude-3-opus"] and sent_openai(fake_openai) == []


def test_an_access_group_key_reaches_its_groups_and_their_fallbacks_stay_held(gateway, fake_openai, fake_anthropic):
    key = new_key(gateway, models=["beta"])
    call(gateway, "premium", key)
    call(gateway, "anthropic/claude-3-opus", key)  # the group holds the wildcard
    for name in ("other", "anthropic/claude-3-haiku-x"):  # the longer wildcard is not in the group
        with pytest.raises(openai.PermissionDeniedError):
            call(gateway, name, key)
    with pytest.raises(openai.PermissionDeniedError) as caught:  # a named fallback outside the group
        call(gateway, "premium", key, fallbacks=["other"])
    assert caught.value.body["param"] == "fallbacks"
    with pytest.raises(openai.InternalServerError):  # the config fallback into `other` is skipped
        call(gateway, "failing", key)
    assert sent_openai(fake_openai) == ["gpt-3.5-turbo", "fail-500", "fail-500"]
    assert sent_anthropic(fake_anthropic) == ["claude-3-opus"]
    raw = call(gateway, "failing")  # the master key may: the fallback answers
    assert raw.headers["x-litellm-model-group"] == "other"


def test_all_team_models_is_what_the_keys_team_allows(gateway, fake_openai):
    team = admin(gateway, "POST", "/team/new", json={"models": ["premium", "anthropic/claude-3-haiku*"]})["team_id"]
    key = new_key(gateway, team_id=team, models=["all-team-models"])
    call(gateway, "premium", key)
    call(gateway, "anthropic/claude-3-haiku-x", key)
    for name in ("other", "gpt-4o", "anthropic/claude-3-opus"):
        with pytest.raises(openai.PermissionDeniedError):
            call(gateway, name, key)
    assert sent_openai(fake_openai) == ["gpt-3.5-turbo", "haiku-x"]
