"""OpenAI-compatible catalog providers through a real gateway: vLLM, Together AI, Groq (fake upstream)."""

import openai
import pytest

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello there"}]


def test_catalog_providers_reach_their_base_with_their_key(start_gateway, fake_openai):
    config = {"model_list": [
        {"model_name": "local-vllm", "litellm_params": {"model": "hosted_vllm/meta-llama/Llama-3-8B-Instruct",
                                                        "api_base": fake_openai.url + "/v1",
                                                        "api_key": fake_openai.api_key}},
        {"model_name": "vllm-short", "litellm_params": {"model": "vllm/qwen", "api_key": fake_openai.api_key}},
        {"model_name": "together", "litellm_params": {"model": "together_ai/mistralai/Mixtral-8x7B-Instruct-v0.1"}},
        {"model_name": "groq", "litellm_params": {"model": "groq/llama3-70b-8192"}},
    ]}
    # Each service's env vars name its base and key, as LiteLLM users set them.
    env = {"HOSTED_VLLM_API_BASE": fake_openai.url + "/v1", "TOGETHER_AI_API_BASE": fake_openai.url + "/v1",
           "TOGETHERAI_API_KEY": fake_openai.api_key, "GROQ_API_BASE": fake_openai.url + "/v1",
           "GROQ_API_KEY": fake_openai.api_key}
    gw = start_gateway(config, env=env)
    client = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    expected = {"local-vllm": "meta-llama/Llama-3-8B-Instruct", "vllm-short": "qwen",
                "together": "mistralai/Mixtral-8x7B-Instruct-v0.1", "groq": "llama3-70b-8192"}
    for name, upstream_model in expected.items():
        reply = client.chat.completions.create(model=name, messages=HELLO)
        assert reply.choices[0].message.content == "Hello from fake upstream: hello there"
        sent = fake_openai.requests[-1]
        assert sent["json"]["model"] == upstream_model
        assert sent["headers"]["authorization"] == f"Bearer {fake_openai.api_key}"
        chunks = client.chat.completions.create(model=name, messages=HELLO, stream=True,
                                                stream_options={"include_usage": True})
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Hello from fake upstream: hello there"
    vectors = client.embeddings.create(model="together", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 8


def test_catalog_key_is_not_sent_to_another_base(start_gateway, fake_openai):
    fake_openai.api_key, saved = None, fake_openai.api_key
    try:
        gw = start_gateway({"model_list": [{"model_name": "g", "litellm_params": {
            "model": "groq/llama3", "api_base": fake_openai.url + "/v1"}}]},
            env={"GROQ_API_KEY": "gsk-must-stay-with-groq"})
        client = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
        assert client.chat.completions.create(model="g", messages=HELLO).choices
    finally:
        fake_openai.api_key = saved
    assert "authorization" not in fake_openai.requests[-1]["headers"]


def test_vllm_without_base_is_a_config_error(tmp_path):
    import subprocess

    import yaml

    from tests.integration.conftest import REPO
    from tests.integration.conftest import gateway_command
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model_list": [{"model_name": "v", "litellm_params": {"model": "hosted_vllm/x"}}]}))
    out = subprocess.run(gateway_command() + ["--config", str(path)], capture_output=True, text=True, cwd=REPO,
                         timeout=60, env={"PATH": __import__("os").environ["PATH"]})
    assert out.returncode == 2
    assert "model_list[0].litellm_params.api_base: required for hosted_vllm" in out.stderr
