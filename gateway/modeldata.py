"""The package's model table (context windows, list prices), loaded once."""

import functools
import json
from importlib import resources


@functools.lru_cache(maxsize=1)
def table():
    """Every known model's facts, keyed by upstream model name."""
    text = resources.files("gateway").joinpath("data/models.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def lookup(model, model_info=None):
    """Facts for one deployment: the table's entry under its upstream name, overridden by model_info."""
    facts = dict(table().get(model) or table().get(model.rsplit("/", 1)[-1]) or {})
    facts.update({k: v for k, v in (model_info or {}).items() if v is not None})
    return facts


def prices(params, facts):
    """(input, output) USD per token: the deployment's litellm_params, else model_info and the table;
    None when the model has no known price. Raises ValueError naming a bad value."""
    found = {}
    for name in ("input_cost_per_token", "output_cost_per_token"):
        value = params.get(name, facts.get(name))
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name}: must be a number >= 0 (USD per token)")
        found[name] = value
    if found["input_cost_per_token"] is None and found["output_cost_per_token"] is None:
        return None, None
    return float(found["input_cost_per_token"] or 0.0), float(found["output_cost_per_token"] or 0.0)


def estimate_tokens(body):
    """A rough prompt size (4 characters a token): enough to see a prompt that cannot fit."""
    chars = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        chars += len(prompt)
    elif isinstance(prompt, list):
        chars += sum(len(p) if isinstance(p, (str, list)) else 0 for p in prompt)
    inputs = body.get("input")
    if isinstance(inputs, str):
        chars += len(inputs)
    elif isinstance(inputs, list):
        chars += sum(len(i) for i in inputs if isinstance(i, (str, list)))
    return chars // 4
