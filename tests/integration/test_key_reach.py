"""What a virtual key can reach and what a budgeted call can cost (issue #11 items 1, 2, 5, 20).

One real gunicorn gateway (2 gevent workers) in front of the fake OpenAI upstream:

* a key's `models` holds for every group a call can reach: request fallbacks and
  context-window fallbacks naming another group are a 403 before any upstream call; config,
  context-window and default fallbacks the key may not use are skipped; model-group aliases do not
  widen it; the spend row and headers name the group that answered;
* a budget hold bounds every field that reaches the upstream (a 40 KB tool description, functions,
  response_format, token ids), so concurrent calls cannot spend past the budget by more than the
  one call the budget mode allows;
* the output bound a hold assumed is sent upstream as max_tokens when nothing else bounds it;
* a limit of 0 allows nothing.
"""

import asyncio
import json
import time

import openai
import pytest

from gateway.spend import meter as spend
from gateway.config.settings import from_dict
from tests.integration.conftest import admin_call
from tests.integration.conftest import config_gateway

pytestmark = pytest.mark.integration

MASTER = "sk-reach-master-0123456789"
IN_PRICE, OUT_PRICE = 0.00001, 0.00002
HELLO = [{"role": "user", "content": "hello there"}]
LONG = [{"role": "user", "content": " ".join(["word"] * 40)}]  # over the small group's 20-token window


def _dep(fake, name, model, **extra):
    info = extra.pop("model_info", None)
    entry = {"model_name": name, "litellm_params": {
        "model": f"openai/{model}", "api_base": fake.url + "/v1", "api_key": fake.api_key,
        "input_cost_per_token": IN_PRICE, "output_cost_per_token": OUT_PRICE, **extra}}
    if info:
        entry["model_info"] = info
    return entry


@pytest.fixture(scope="module")
def gateway(fake_openai, tmp_path_factory):
    f = fake_openai
    config = {
        "model_list": [
            _dep(f, "cheap", "fail-500"),
            _dep(f, "cheap-default", "fail-500"),  # no fallbacks of its own: default_fallbacks apply
            _dep(f, "premium", "gpt-3.5-turbo"),
            _dep(f, "small", "tiny-model", model_info={"max_input_tokens": 20}),
            _dep(f, "private", "my-private-model"),  # no known output or context limit
            _dep(f, "bounded", "gpt-3.5-turbo", model_info={"max_output_tokens": 50}),
        ],
        "router_settings": {
            "num_retries": 0, "allowed_fails": 1000,
            "fallbacks": [{"cheap": ["premium"]}],
            "context_window_fallbacks": [{"small": ["premium"]}],
            "default_fallbacks": ["premium"],
            "model_group_alias": {"gpt-4": "premium"},
        },
        "general_settings": {"master_key": MASTER},
    }
    gw = config_gateway(tmp_path_factory.mktemp("gw-reach"), config)
    yield gw
    gw.stop()


def admin(gateway, method, path, **kwargs):
    return admin_call(gateway, MASTER, method, path, **kwargs)


def new_key(gateway, **rules):
    return admin(gateway, "POST", "/key/generate", json=rules)["key"]


def client(gateway, key):
    return openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0, timeout=30)


def rows(gateway, key, count, timeout=15):
    """The key's ledger rows once `count` of them are committed."""
    deadline = time.monotonic() + timeout
    while True:
        found = admin(gateway, "GET", "/spend/logs", params={"api_key": key})
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def upstream_models(fake):
    return [r["json"].get("model") for r in fake.requests if r["path"].endswith("/chat/completions")]


# ---- item 1: every group a call can reach is one the key may use ---------------------------------

@pytest.mark.parametrize("extra", [
    {"fallbacks": ["premium"]},
    {"fallbacks": [{"cheap": ["premium"]}]},
    {"context_window_fallbacks": ["premium"]},
    {"context_window_fallbacks": [{"cheap": ["premium"]}]},
    {"fallbacks": ["gpt-4"]},  # an alias of premium
])
def test_a_request_naming_a_fallback_the_key_may_not_use_is_403_before_any_upstream_call(
        gateway, fake_openai, extra):
    key = new_key(gateway, models=["cheap"])
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client(gateway, key).chat.completions.create(model="cheap", messages=HELLO, extra_body=extra)
    assert caught.value.body["code"] == "model_not_allowed"
    assert caught.value.body["param"] == next(iter(extra))
    assert upstream_models(fake_openai) == []


@pytest.mark.parametrize("model", ["cheap", "cheap-default"])
def test_config_and_default_fallbacks_the_key_may_not_use_are_skipped(gateway, fake_openai, model):
    key = new_key(gateway, models=["cheap", "cheap-default"])
    with pytest.raises(openai.InternalServerError):
        client(gateway, key).chat.completions.create(model=model, messages=HELLO)
    assert upstream_models(fake_openai) == ["fail-500"]  # premium never called
    [row] = rows(gateway, key, 1)
    assert row["model_group"] == model and row["status"] == "error"


def test_context_window_fallbacks_the_key_may_not_use_are_skipped(gateway, fake_openai):
    key = new_key(gateway, models=["small"])
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway, key).chat.completions.create(model="small", messages=LONG)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert upstream_models(fake_openai) == []


def test_a_model_group_alias_does_not_widen_a_key(gateway, fake_openai):
    key = new_key(gateway, models=["cheap"])
    with pytest.raises(openai.PermissionDeniedError):
        client(gateway, key).chat.completions.create(model="gpt-4", messages=HELLO)
    assert upstream_models(fake_openai) == []
    # ... and a key given the alias may use the group it names, fallbacks into it included
    aliased = new_key(gateway, models=["cheap", "gpt-4"])
    raw = client(gateway, aliased).chat.completions.with_raw_response.create(
        model="cheap", messages=HELLO, extra_body={"fallbacks": ["gpt-4"]})
    assert raw.headers["x-litellm-model-group"] == "premium"


def test_an_allowed_fallback_answers_and_the_row_names_the_group_that_answered(gateway, fake_openai):
    key = new_key(gateway, models=["cheap", "premium"])
    raw = client(gateway, key).chat.completions.with_raw_response.create(model="cheap", messages=HELLO)
    assert raw.headers["x-litellm-model-group"] == "premium"
    assert raw.headers["x-litellm-attempted-fallbacks"] == "1"
    assert upstream_models(fake_openai) == ["fail-500", "gpt-3.5-turbo"]
    [row] = rows(gateway, key, 1)
    assert row["model_group"] == "premium" and row["status"] == "success"


def test_an_unknown_model_does_not_list_the_gateways_other_models_to_a_key(gateway):
    key = new_key(gateway, models=["cheap", "ghost"])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client(gateway, key).chat.completions.create(model="nope", messages=HELLO)
    with pytest.raises(openai.NotFoundError) as missing:
        client(gateway, key).chat.completions.create(model="ghost", messages=HELLO)
    for caught in (denied, missing):
        assert "premium" not in caught.value.body["message"]


# ---- item 2: the hold bounds every field that reaches the upstream --------------------------------

TOOL = {"type": "function", "function": {"name": "lookup", "description": "detail " * 5_700,  # ~40 KB
                                         "parameters": {"type": "object", "properties": {}}}}


def test_the_prompt_bound_covers_every_field_the_fake_bills():
    body = {"model": "premium", "messages": HELLO, "max_tokens": 10, "tools": [TOOL]}
    billed = 2 + len(json.dumps([TOOL]).split())  # the fake: whitespace words
    assert spend.prompt_token_bound(body) >= billed > 5_700


def test_concurrent_calls_with_a_large_tool_cannot_spend_past_the_budget(gateway, fake_openai):
    body = {"model": "premium", "messages": HELLO, "max_tokens": 10, "tools": [TOOL]}
    deployment_cost = (2 + len(json.dumps([TOOL]).split())) * IN_PRICE + 10 * OUT_PRICE
    budget = 0.05
    assert deployment_cost > budget / 2  # two calls would overshoot: the hold has to see the tool
    key = new_key(gateway, max_budget=budget)

    async def run():
        async with openai.AsyncOpenAI(base_url=gateway.url, api_key=key, max_retries=0, timeout=60) as aclient:
            async def one():
                try:
                    await aclient.chat.completions.create(**body)
                    return 200
                except openai.APIStatusError as exc:
                    return exc.status_code
            return await asyncio.gather(*[one() for _ in range(10)])
    codes = asyncio.run(run())
    admitted = codes.count(200)
    assert set(codes) <= {200, 429} and admitted <= 1, codes
    found = rows(gateway, key, admitted)
    spent = sum(r["spend"] for r in found)
    assert spent <= budget + deployment_cost  # at most one call past the budget, never ten
    info = admin(gateway, "GET", "/key/info", params={"key": key})["info"]
    assert info["spend"] == pytest.approx(spent)


# ---- item 5: the output bound a hold assumed is sent upstream -------------------------------------

def test_a_budgeted_call_without_max_tokens_sends_the_bound_its_hold_assumed(gateway, fake_openai):
    budgeted = new_key(gateway, max_budget=10.0)
    client(gateway, budgeted).chat.completions.create(model="private", messages=HELLO)
    client(gateway, budgeted).chat.completions.create(model="bounded", messages=HELLO)  # the model bounds it
    client(gateway, budgeted).chat.completions.create(model="private", messages=HELLO, max_tokens=7)
    unbudgeted = new_key(gateway)
    client(gateway, unbudgeted).chat.completions.create(model="private", messages=HELLO)
    sent = [r["json"] for r in fake_openai.requests if r["path"].endswith("/chat/completions")]
    assert [b.get("max_tokens") for b in sent] == [spend.DEFAULT_OUTPUT_BOUND, None, 7, None]
    # the hold covered what the cap allows
    settings = from_dict({"model_list": [{"model_name": "private", "litellm_params": {
        "model": "openai/my-private-model", "input_cost_per_token": IN_PRICE,
        "output_cost_per_token": OUT_PRICE}}]})
    from gateway import providers
    from gateway.routing.balancer import Deployment
    private = Deployment(providers.build(settings.deployments[0]))
    assert spend.output_is_assumed(private, {"messages": HELLO})
    assert spend.completion_bound(private, {"messages": HELLO}, 10) == spend.DEFAULT_OUTPUT_BOUND


# ---- item 20: a limit of 0 allows nothing ----------------------------------------------------------

@pytest.mark.parametrize("limit", ["rpm_limit", "tpm_limit", "max_parallel_requests"])
def test_a_limit_of_zero_allows_nothing(gateway, fake_openai, limit):
    key = new_key(gateway, **{limit: 0})
    with pytest.raises(openai.RateLimitError):
        client(gateway, key).chat.completions.create(model="premium", messages=HELLO)
    assert upstream_models(fake_openai) == []


# ---- item 4: per-key limits follow the key, not its hash ------------------------------------------

def test_a_regenerated_key_keeps_its_rate_window(gateway, fake_openai):
    key = new_key(gateway, rpm_limit=2)
    for _ in range(2):
        client(gateway, key).chat.completions.create(model="premium", messages=HELLO)
    fresh = admin(gateway, "POST", "/key/regenerate", json={"key": key})["key"]
    with pytest.raises(openai.RateLimitError):
        client(gateway, fresh).chat.completions.create(model="premium", messages=HELLO)
    assert upstream_models(fake_openai) == ["gpt-3.5-turbo"] * 2
