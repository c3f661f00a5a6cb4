"""Wildcard model names and access groups in the router (no upstream calls: the groups, providers and
what a caller may reach; calls through a real gateway are in tests/integration/test_wildcards.py)."""

import pytest

from gateway import errors
from gateway.config.settings import from_dict
from gateway.errors import ConfigError
from gateway.routing.patterns import Pattern
from gateway.routing.patterns import fill
from gateway.routing.router import MAX_CONCRETE_GROUPS
from gateway.routing.router import Router


def entry(name, model, **extra):
    params = {"model": model, "api_key": "sk-test-wildcard-0001", **extra.pop("params", {})}
    return {"model_name": name, "litellm_params": params, **extra}


@pytest.fixture
def make(tmp_path):
    def build(*entries, **sections):
        config = {"model_list": list(entries), **sections,
                  "router_settings": {**sections.get("router_settings", {}),
                                      "local_state_path": str(tmp_path / "state.sqlite")}}
        return Router(from_dict(config), None)
    return build


def served(router, name):
    """(provider name, upstream model) of each deployment serving `name`."""
    group = router.group(router.resolve(name))
    return [(d.provider.name, d.provider.model) for d in group.deployments]


def test_star_with_a_provider_sends_the_requested_name_upstream(make):
    router = make(entry("*", "openai/*"))
    assert router.resolve("gpt-4o") == "gpt-4o"
    assert served(router, "gpt-4o") == [("openai", "gpt-4o")]
    assert served(router, "my-fine-tune:v2") == [("openai", "my-fine-tune:v2")]
    assert router.names == [] and router.groups == {}  # a wildcard is no exact group


def test_star_alone_takes_the_provider_from_the_requested_name(make):
    router = make(entry("*", "*"))
    assert served(router, "gpt-4o") == [("openai", "gpt-4o")]
    assert served(router, "anthropic/claude-3-haiku") == [("anthropic", "claude-3-haiku")]
    with pytest.raises(errors.NotFoundError) as caught:  # no provider to tell: a 404, not a 500
        router.group(router.resolve("no-such-provider/x"))
    assert caught.value.code == "model_not_found"


def test_provider_pattern_routes_every_name_under_it(make):
    router = make(entry("anthropic/*", "anthropic/*"), entry("gpt-4o", "openai/gpt-4o"))
    assert served(router, "anthropic/claude-3-5-sonnet") == [("anthropic", "claude-3-5-sonnet")]
    with pytest.raises(errors.NotFoundError):
        router.resolve("mistral/large")
    with pytest.raises(errors.NotFoundError):
        router.resolve("anthropic/")  # an empty match is none


def test_exact_names_win_and_longer_patterns_win_over_shorter(make):
    router = make(entry("*", "openai/*"), entry("claude-*", "anthropic/claude-*"),
                  entry("claude-3-opus", "openai/exact-opus"), entry("claude-3-*", "anthropic/claude-3-*"))
    assert served(router, "claude-3-opus") == [("openai", "exact-opus")]  # exact
    assert router.pattern_of("claude-3-opus") is None
    assert router.pattern_of("claude-3-haiku") == "claude-3-*"  # the longer pattern
    assert served(router, "claude-3-haiku") == [("anthropic", "claude-3-haiku")]
    assert router.pattern_of("claude-2") == "claude-*"
    assert router.pattern_of("gpt-4o") == "*"


def test_a_pattern_name_is_never_sent_upstream(make):
    router = make(entry("*", "openai/*"), entry("anthropic/*", "anthropic/*"))
    for name in ("*", "anthropic/*", "a*b"):
        with pytest.raises(errors.NotFoundError):
            router.resolve(name)
    for name in ("huggingface/https://evil.example/x", "gpt 4", "x" * 300):  # never an address
        with pytest.raises(errors.NotFoundError):
            router.resolve(name)


def test_concrete_groups_are_made_once_share_the_wildcard_deployment_and_are_bounded(make):
    router = make(entry("*", "openai/*", params={"rpm": 5}, model_info={"id": "wild-1"}))
    first = router.group(router.resolve("gpt-4o"))
    assert router.group("gpt-4o") is first  # cached: no provider per request
    (deployment,) = first.deployments
    assert deployment.id == "wild-1" and deployment.rpm == 5  # rpm windows and cooldowns are the wildcard's
    assert router.group("gpt-4o-mini").deployments[0].id == "wild-1"
    assert deployment.input_price is not None  # priced from the model table for the concrete model
    for i in range(MAX_CONCRETE_GROUPS + 5):
        router.group(f"m-{i}")
    assert len(router._concrete) <= MAX_CONCRETE_GROUPS


def test_aliases_and_fallbacks_reach_names_a_wildcard_serves(make):
    router = make(entry("*", "openai/*"), entry("main", "openai/gpt-4o"),
                  router_settings={"model_group_alias": {"fast": "gpt-4o-mini"},
                                   "fallbacks": [{"main": ["claude-like"]}]})
    assert router.resolve("fast") == "gpt-4o-mini"
    assert served(router, "fast") == [("openai", "gpt-4o-mini")]
    assert router._chain("main", router.fallbacks, None) == ["claude-like"]
    assert router._chain("main", router.fallbacks, None, router.allowed_groups(("main",))) == []


def test_allowed_groups_understands_stars_patterns_and_access_groups(make):
    router = make(entry("*", "openai/*"), entry("anthropic/*", "anthropic/*", model_info={"access_groups": ["beta"]}),
                  entry("gpt-4o", "openai/gpt-4o", model_info={"access_groups": ["beta", "prod"]}),
                  entry("small", "openai/gpt-4o-mini", model_info={"access_groups": ["prod"]}))
    assert router.allowed_groups(("*",)) is None
    assert router.allowed_groups(("all-proxy-models", "x")) is None
    pattern = router.allowed_groups(("anthropic/*",))
    assert "anthropic/claude-3" in pattern and "gpt-4o" not in pattern and "small" not in pattern
    beta = router.allowed_groups(("beta",))
    assert "gpt-4o" in beta and "anthropic/claude-3" in beta and "anthropic/*" in beta
    assert "small" not in beta and "o1-preview" not in beta
    prod = router.allowed_groups(("prod",))
    assert "small" in prod and "gpt-4o" in prod and "anthropic/claude-3" not in prod
    plain = router.allowed_groups(("small",))
    assert "small" in plain and "gpt-4o" not in plain
    assert router.allowed_groups(("small",)) is plain  # cached per models list
    assert router.access_group_members("prod") == {"gpt-4o", "small"}
    assert router.access_group_members("small") is None


def test_config_refuses_bad_access_groups_and_wildcards_that_would_send_a_star(make):
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.model_info\.access_groups"):
        make(entry("a", "openai/gpt-4o", model_info={"access_groups": "beta"}))
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.model_info\.access_groups"):
        make(entry("a", "openai/gpt-4o", model_info={"access_groups": ["ok", 3]}))
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.litellm_params\.model"):
        make(entry("gpt-4o", "openai/*"))  # an exact name whose model is a pattern
    with pytest.raises(ConfigError, match=r"model_list\[1\]\.litellm_params\.model"):
        make(entry("a", "openai/gpt-4o"), entry("x/*", "openai/*/*"))
    router = make(entry("*", "openai/gpt-4o-mini"))  # a fixed model behind a wildcard: allowed
    assert served(router, "anything") == [("openai", "gpt-4o-mini")]


def test_pattern_helpers():
    assert Pattern("openai/*").segments("openai/gpt-4") == ("gpt-4",)
    assert Pattern("a/*/b/*").segments("a/x/b/y") == ("x", "y")
    assert Pattern("openai/*").segments("anthropic/x") is None
    assert fill("bedrock/*/v*", ("m", "2")) == "bedrock/m/v2"
    assert Pattern("anthropic/*").covers("anthropic/claude-*")  # a narrower pattern is within
    assert not Pattern("anthropic/claude-*").covers("anthropic/*")
