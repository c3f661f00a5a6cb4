"""The shipped model table (gateway/data/models.json): its shape, known list prices, and coverage of
every provider that bills by the token."""

import json
from importlib import resources

import re

import pytest

from gateway import data as modeldata
from gateway.providers import CLASSES
from gateway.spend.meter import prompt_token_bound

FIELDS = {"max_input_tokens", "max_output_tokens", "input_cost_per_token", "output_cost_per_token",
          "cache_read_input_token_cost", "cache_creation_input_token_cost", "image_prices", "input_cost_per_query",
          "input_cost_per_second", "input_cost_per_character"}
IMAGE_KEY = re.compile(r"(standard|hd|low|medium|high)/\d+x\d+")
COSTS = ("input_cost_per_token", "output_cost_per_token")


def raw_table():
    text = resources.files("gateway").joinpath("data/models.json").read_text(encoding="utf-8")
    return json.loads(text)


def test_note_documents_the_file_and_the_self_hosted_rule():
    note = raw_table()["_note"]
    assert "USD per token" in note and "max_output_tokens" in note
    assert "no list price" in note and "ollama" in note and "input_cost_per_token" in note


def test_every_entry_has_known_fields_with_non_negative_numbers():
    table = modeldata.table()
    assert len(table) >= 150
    for name, entry in table.items():
        assert entry and set(entry) <= FIELDS, (name, set(entry) - FIELDS)
        for field, value in entry.items():
            if field == "image_prices":  # USD per image by "<quality>/<size>"
                assert value and all(IMAGE_KEY.fullmatch(k) and v > 0 for k, v in value.items()), name
                continue
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, field)
            assert value >= 0, (name, field)
        for field in ("max_input_tokens", "max_output_tokens"):
            if field in entry:
                assert isinstance(entry[field], int) and entry[field] > 0, (name, field)
        # A price is a pair: never one side alone.
        assert ("input_cost_per_token" in entry) == ("output_cost_per_token" in entry), name
        # Prompt-cache prices come with an input price: Anthropic's writes 1.25x, reads 0.1x of it.
        if "cache_read_input_token_cost" in entry:
            assert entry["cache_read_input_token_cost"] == pytest.approx(entry["input_cost_per_token"] * 0.1), name
            assert entry["cache_creation_input_token_cost"] == pytest.approx(
                entry["input_cost_per_token"] * 1.25), name
        if "max_input_tokens" in entry and "max_output_tokens" in entry:
            assert entry["max_output_tokens"] <= max(entry["max_input_tokens"], 131072), name


def test_no_duplicate_keys_in_the_file():
    """json.loads keeps the last of two equal keys; the file must not rely on that."""
    def no_duplicates(items):
        keys = [k for k, _ in items]
        assert len(keys) == len(set(keys)), sorted(k for k in set(keys) if keys.count(k) > 1)
        return dict(items)

    json.loads(resources.files("gateway").joinpath("data/models.json").read_text(encoding="utf-8"),
               object_pairs_hook=no_duplicates)


def test_prices_are_per_token_not_per_thousand_or_million():
    """The dearest list price here is gpt-4-32k's output ($120 per 1M tokens); a price written per 1K
    or per 1M tokens by mistake would be far above it."""
    for name, entry in modeldata.table().items():
        for field in COSTS:
            if field in entry:
                assert entry[field] <= 1.2e-4, (name, field, entry[field])


def test_embedding_models_cost_nothing_for_output():
    for name in ("text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
                 "amazon.titan-embed-text-v1", "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3",
                 "embed-english-v3.0", "embed-multilingual-v3.0", "embed-english-light-v3.0", "mistral-embed",
                 "text-embedding-004"):
        assert modeldata.table()[name]["output_cost_per_token"] == 0, name


# (upstream model, input USD/token, output USD/token): list prices from the providers' own pages.
KNOWN_PRICES = [
    # OpenAI / Azure OpenAI
    ("gpt-4o", 2.5e-06, 1e-05),
    ("gpt-4o-mini", 1.5e-07, 6e-07),
    ("gpt-4-turbo", 1e-05, 3e-05),
    ("gpt-4", 3e-05, 6e-05),
    ("gpt-3.5-turbo", 5e-07, 1.5e-06),
    ("gpt-4.1", 2e-06, 8e-06),
    ("gpt-4.1-nano", 1e-07, 4e-07),
    ("o1", 1.5e-05, 6e-05),
    ("o3", 2e-06, 8e-06),
    ("o4-mini", 1.1e-06, 4.4e-06),
    ("gpt-35-turbo", 5e-07, 1.5e-06),
    ("text-embedding-3-small", 2e-08, 0.0),
    # Anthropic
    ("claude-3-5-sonnet-20241022", 3e-06, 1.5e-05),
    ("claude-3-haiku-20240307", 2.5e-07, 1.25e-06),
    ("claude-3-opus-20240229", 1.5e-05, 7.5e-05),
    ("claude-3-5-haiku-20241022", 8e-07, 4e-06),
    ("claude-sonnet-4-20250514", 3e-06, 1.5e-05),
    ("claude-opus-4-20250514", 1.5e-05, 7.5e-05),
    # Bedrock
    ("anthropic.claude-3-haiku-20240307-v1:0", 2.5e-07, 1.25e-06),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", 3e-06, 1.5e-05),
    ("anthropic.claude-v2:1", 8e-06, 2.4e-05),
    ("amazon.titan-embed-text-v2:0", 2e-08, 0.0),
    ("meta.llama3-70b-instruct-v1:0", 2.65e-06, 3.5e-06),
    ("cohere.command-r-plus-v1:0", 3e-06, 1.5e-05),
    # Gemini (prompts up to 128k tokens)
    ("gemini-1.5-flash", 7.5e-08, 3e-07),
    ("gemini-1.5-pro", 1.25e-06, 5e-06),
    ("gemini-2.0-flash", 1e-07, 4e-07),
    # Cohere
    ("command-r", 1.5e-07, 6e-07),
    ("command-r-plus-08-2024", 2.5e-06, 1e-05),
    ("command-a-03-2025", 2.5e-06, 1e-05),
    # AI21
    ("jamba-1.5-large", 2e-06, 8e-06),
    ("jamba-1.5-mini", 2e-07, 4e-07),
    # Mistral, Groq, DeepSeek, Together, xAI, Replicate
    ("mistral-large-latest", 2e-06, 6e-06),
    ("open-mixtral-8x7b", 7e-07, 7e-07),
    ("llama3-70b-8192", 5.9e-07, 7.9e-07),
    ("llama-3.1-8b-instant", 5e-08, 8e-08),
    ("deepseek-chat", 2.7e-07, 1.1e-06),
    ("deepseek-reasoner", 5.5e-07, 2.19e-06),
    ("meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo", 8.8e-07, 8.8e-07),
    ("grok-beta", 5e-06, 1.5e-05),
    ("meta/meta-llama-3-70b-instruct", 6.5e-07, 2.75e-06),
]


@pytest.mark.parametrize("model,inp,out", KNOWN_PRICES, ids=[m for m, _, _ in KNOWN_PRICES])
def test_known_list_prices(model, inp, out):
    entry = modeldata.table()[model]
    assert (entry["input_cost_per_token"], entry["output_cost_per_token"]) == (inp, out)


@pytest.mark.parametrize("model,window,most_out", [
    ("gpt-4o", 128000, 16384),
    ("o1", 200000, 100000),
    ("claude-3-5-sonnet-20241022", 200000, 8192),
    ("claude-3-7-sonnet-20250219", 200000, 64000),
    ("gemini-1.5-pro", 2097152, 8192),
    ("deepseek-chat", 65536, 8192),
])
def test_known_context_windows_and_output_limits(model, window, most_out):
    entry = modeldata.table()[model]
    assert (entry["max_input_tokens"], entry["max_output_tokens"]) == (window, most_out)


def test_lookup_falls_back_to_the_part_after_the_last_slash():
    # An OpenRouter-style id resolves to the upstream's own entry.
    assert modeldata.lookup("openai/gpt-4o")["input_cost_per_token"] == 2.5e-06
    # Full ids win over the fallback (Together AI's namespaced ids are keys as they are).
    assert modeldata.lookup("meta-llama/Llama-3-70b-chat-hf")["input_cost_per_token"] == 9e-07
    assert modeldata.lookup("no-such-model") == {}


# One priced model per provider that bills by the token, as the deployment's model names it after
# `provider/`. The lookup must give both prices, input above zero.
PRICED_SAMPLE = {
    "openai": "gpt-4o",
    "azure": "gpt-35-turbo",
    "anthropic": "claude-3-5-sonnet-latest",
    "bedrock": "anthropic.claude-3-haiku-20240307-v1:0",
    "cohere": "command-r",
    "gemini": "gemini-1.5-flash",
    "ai21": "jamba-1.5-mini",
    "replicate": "meta/meta-llama-3-8b-instruct",
    "together_ai": "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "groq": "llama-3.3-70b-versatile",
    "mistral": "mistral-small-latest",
    "codestral": "codestral-latest",
    "deepseek": "deepseek-chat",
    "openrouter": "anthropic/claude-3.5-sonnet",
    "fireworks_ai": "accounts/fireworks/models/llama-v3p1-8b-instruct",
    "perplexity": "sonar",
    "deepinfra": "meta-llama/Meta-Llama-3.1-70B-Instruct",
    "xai": "grok-2",
    "cerebras": "llama3.1-8b",
    "sambanova": "Meta-Llama-3.3-70B-Instruct",
    "friendliai": "meta-llama-3.1-8b-instruct",
    "github": "gpt-4o",  # GitHub Models' paid use follows the Azure OpenAI price of the same model
}

# Providers that take a key but publish no per-token list price: the operator prices the deployment.
NO_LIST_PRICE = {
    "hosted_vllm": "self-hosted",
    "lm_studio": "self-hosted",
    "llamafile": "self-hosted",
    "xinference": "self-hosted",
    "ollama": "self-hosted (the key is only for a proxy in front)",
    "ollama_chat": "self-hosted (the key is only for a proxy in front)",
    "huggingface": "TGI/TEI and Inference Endpoints bill by instance time, not by token",
    "sagemaker": "billed by endpoint instance time, not by token",
    "litellm_proxy": "another gateway: the price is whatever it charges",
    "nvidia_nim": "free trial credits, then self-hosted NIM licensing; no per-token list",
    "meta_llama": "Llama API preview publishes no per-token price",
    "anyscale": "Anyscale Endpoints closed in 2024; its model ids would clash with Together AI's",
}


def needs_key(cls):
    value = getattr(cls, "key_env", None)
    names = value if isinstance(value, (tuple, list)) else (value,)
    return not cls.local and any(names)


def test_every_provider_with_a_key_is_priced_or_named_as_unpriced():
    keyed = {cls.name for cls in CLASSES if needs_key(cls)}
    unclassified = keyed - set(PRICED_SAMPLE) - set(NO_LIST_PRICE)
    assert not unclassified, f"add a priced model to models.json (and PRICED_SAMPLE) for: {sorted(unclassified)}"
    assert set(PRICED_SAMPLE) <= keyed and set(NO_LIST_PRICE) <= keyed
    assert not set(PRICED_SAMPLE) & set(NO_LIST_PRICE)


@pytest.mark.parametrize("provider", sorted(PRICED_SAMPLE))
def test_priced_provider_has_a_priced_model(provider):
    facts = modeldata.lookup(PRICED_SAMPLE[provider])
    assert facts.get("input_cost_per_token", 0) > 0, provider
    assert facts.get("output_cost_per_token", 0) > 0, provider


def test_self_hosted_names_have_no_invented_price():
    """Typical self-hosted model names (Ollama tags, Hugging Face repo ids) resolve to no price."""
    for model in ("llama3", "llama3:8b", "mistral", "HuggingFaceH4/zephyr-7b-beta", "bigscience/bloom"):
        facts = modeldata.lookup(model)
        assert "input_cost_per_token" not in facts and "output_cost_per_token" not in facts, model


# ---- the prompt bound (issue #11 item 2): every field that reaches the upstream counts ----------


_BIG = "lorem " * 7_000  # 42 KB of text


@pytest.mark.parametrize("body,at_least", [
    ({"messages": [{"role": "user", "content": "hi"}],
      "tools": [{"type": "function", "function": {"name": "f", "description": _BIG}}]}, len(_BIG)),
    ({"messages": [{"role": "user", "content": "hi"}], "functions": [{"name": "f", "description": _BIG}]},
     len(_BIG)),
    ({"messages": [{"role": "user", "content": "hi"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"description": _BIG}}}},
     len(_BIG)),
    ({"messages": [{"role": "system", "content": [{"type": "text", "text": _BIG}]}]}, len(_BIG)),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
                    }] * 3}, 3 * modeldata.IMAGE_TOKEN_BOUND),
    ({"prompt": list(range(5_000))}, 5_000),  # token ids: one token each, not zero
    ({"prompt": [[7] * 3_000, [8] * 2_000]}, 5_000),  # nested token lists: their ids, not characters
    ({"input": [[1] * 4_000]}, 4_000),
    ({"input": "ü" * 1_000}, 2_000),  # bytes, not characters: a byte-level tokenizer may spend one each
    ({"messages": [{"role": "user", "content": "hi"}], "some_new_field": _BIG}, len(_BIG)),
])
def test_the_prompt_bound_counts_every_field_that_reaches_the_upstream(body, at_least):
    assert prompt_token_bound(body) >= at_least


def test_the_estimate_counts_tools_and_token_ids_too():
    # a disconnected stream is billed from this estimate: a 40 KB tool is not 7 tokens
    body = {"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "description": _BIG}}]}
    assert modeldata.estimate_tokens(body) >= len(_BIG) // 4
    assert modeldata.estimate_tokens({"prompt": [1, 2, 3]}) == 3
    assert modeldata.estimate_tokens({"prompt": [[1, 2], [3]]}) == 3


def test_the_bound_stops_at_a_depth_limit_without_recursing_forever():
    deep = current = {}
    for _ in range(500):
        current["a"] = {}
        current = current["a"]
    assert prompt_token_bound({"messages": [], "x": deep}) > 0
