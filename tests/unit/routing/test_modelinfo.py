"""gateway/routing/modelinfo.py: the facts /model/info and /model_group/info give per deployment and
per group (model table, configured overrides, provider capabilities, limits), in LiteLLM's keys."""

from gateway.config.settings import from_dict
from gateway.routing import modelinfo
from gateway.routing.router import Router
from gateway.wire.transport import Transport

BASE = "http://127.0.0.1:9/v1"
DEPLOYMENT_KEYS = {"id", "db_model", "mode", "max_tokens", "max_input_tokens", "max_output_tokens",
                   "input_cost_per_token", "output_cost_per_token", "litellm_provider", "access_groups",
                   *modelinfo.SUPPORTS}
GROUP_KEYS = {"model_group", "providers", "max_input_tokens", "max_output_tokens", "input_cost_per_token",
              "output_cost_per_token", "mode", "tpm", "rpm", "supported_openai_params", *modelinfo.SUPPORTS}


def router(entries):
    return Router(from_dict({"model_list": entries}, source="test_modelinfo", environ=False), Transport())


def dep(name, model, params=None, info=None):
    return {"model_name": name, "litellm_params": {"model": model, "api_base": BASE, "api_key": "sk-x",
                                                   **(params or {})}, "model_info": info or {}}


def test_a_deployment_in_litellm_shape_with_the_model_tables_facts():
    r = router([dep("gpt", "openai/gpt-4o", {"rpm": 5})])
    (d,) = r.deployments()
    entry = modelinfo.deployment_info(d)
    assert set(entry) == {"model_name", "litellm_params", "model_info"}
    assert entry["model_name"] == "gpt" and entry["litellm_params"] == {"model": "openai/gpt-4o", "api_base": BASE,
                                                                          "rpm": 5}
    info = entry["model_info"]
    assert set(info) == DEPLOYMENT_KEYS
    assert info["id"] == d.id and info["db_model"] is False and info["mode"] == "chat"
    assert info["litellm_provider"] == "openai" and info["access_groups"] == []
    # gateway/data/models.json's gpt-4o row
    assert (info["max_input_tokens"], info["max_output_tokens"], info["max_tokens"]) == (128000, 16384, 16384)
    assert (info["input_cost_per_token"], info["output_cost_per_token"]) == (2.5e-06, 1e-05)
    assert info["supports_function_calling"] is True and info["supports_vision"] is True
    assert info["supports_response_schema"] is None  # not known here


def test_own_prices_configured_model_info_and_unknown_models():
    r = router([dep("own", "openai/my-finetune", {"input_cost_per_token": 1e-6, "output_cost_per_token": 3e-6},
                    {"access_groups": ["beta", "internal"], "mode": "completion", "base_model": "gpt-4",
                     "supports_vision": False, "max_input_tokens": 4096, "secret_note": "hidden", "db_model": True}),
                dep("bare", "openai/unknown-model")])
    own, bare = (modelinfo.deployment_info(d)["model_info"] for d in r.deployments())
    assert (own["input_cost_per_token"], own["output_cost_per_token"]) == (1e-6, 3e-6)
    assert own["access_groups"] == ["beta", "internal"] and own["mode"] == "completion"
    assert own["base_model"] == "gpt-4" and "secret_note" not in own and own["db_model"] is True
    assert own["supports_vision"] is False and own["max_input_tokens"] == 4096
    assert bare["max_input_tokens"] is None and bare["input_cost_per_token"] is None and bare["max_tokens"] is None


def test_embedding_models_and_providers_without_tools():
    r = router([dep("emb", "openai/text-embedding-3-small"),
                {"model_name": "sm", "litellm_params": {"model": "sagemaker/endpoint", "aws_region_name": "us-east-1",
                                                        "aws_access_key_id": "AK", "aws_secret_access_key": "SK"}}])
    emb, sm = (modelinfo.deployment_info(d)["model_info"] for d in r.deployments())
    assert emb["mode"] == "embedding" and emb["supports_function_calling"] is False and emb["supports_vision"] is False
    assert emb["max_input_tokens"] == 8191
    assert sm["litellm_provider"] == "sagemaker" and sm["supports_function_calling"] is False


def test_a_group_sums_limits_takes_the_largest_window_and_price_and_needs_every_deployment_for_a_flag():
    r = router([dep("mix", "openai/gpt-4o", {"rpm": 10, "tpm": 1000}),
                dep("mix", "openai/gpt-3.5-turbo", {"rpm": 5}, {"supports_vision": False}),
                {"model_name": "mix", "litellm_params": {"model": "anthropic/claude-3-5-sonnet-20240620",
                                                         "api_key": "sk-a", "api_base": BASE}},
                dep("solo", "openai/unknown-model")])
    mix, solo = modelinfo.group_info(r.groups["mix"]), modelinfo.group_info(r.groups["solo"])
    assert set(mix) == GROUP_KEYS
    assert mix["model_group"] == "mix" and mix["providers"] == ["anthropic", "openai"]
    assert (mix["rpm"], mix["tpm"]) == (15, 1000)
    assert (mix["max_input_tokens"], mix["max_output_tokens"]) == (200000, 16384)
    assert mix["input_cost_per_token"] == 3e-06 and mix["output_cost_per_token"] == 1.5e-05
    assert mix["supports_function_calling"] is True and mix["supports_vision"] is False
    assert mix["supports_response_schema"] is None and mix["mode"] == "chat"
    assert mix["supported_openai_params"] is None  # OpenAI deployments pass every parameter through
    assert (solo["rpm"], solo["tpm"], solo["max_input_tokens"], solo["input_cost_per_token"]) == (None,) * 4


def test_a_group_of_mapping_providers_lists_the_params_every_deployment_maps():
    r = router([{"model_name": "c", "litellm_params": {"model": "anthropic/claude-3-5-sonnet-20240620",
                                                       "api_key": "sk-a", "api_base": BASE}},
                {"model_name": "c", "litellm_params": {"model": "cohere/command-r", "api_key": "co-a",
                                                       "api_base": BASE}}])
    params = modelinfo.group_info(r.groups["c"])["supported_openai_params"]
    anthropic, cohere = (d.provider.supported_params for d in r.groups["c"].deployments)
    assert params == sorted(set(anthropic) & set(cohere)) and set(params) != set(anthropic) | set(cohere)
    assert "temperature" in params and "tools" in params


def test_facts_configured_from_the_environment_are_not_shown(monkeypatch):
    monkeypatch.setenv("MODELINFO_SECRETISH", "424242")
    r = router([dep("g", "openai/gpt-4o", info={"max_tokens": "os.environ/MODELINFO_SECRETISH",
                                                "mode": "os.environ/MODELINFO_SECRETISH",
                                                "access_groups": ["os.environ/MODELINFO_SECRETISH", "beta"]})])
    info = modelinfo.deployment_info(r.deployments()[0])["model_info"]
    assert "424242" not in repr(info)
    assert info["max_tokens"] is None and info["mode"] is None and info["access_groups"] == ["beta"]
