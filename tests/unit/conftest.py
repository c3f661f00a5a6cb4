"""Unit-test isolation: no test sees provider keys or gateway settings from the developer's shell."""

import pytest

# Variables the gateway reads at start-up; a value in the shell would change what the tests see.
GATEWAY_ENV = (
    "GATEWAY_CONFIG", "GATEWAY_MASTER_KEY",
    "OPENAI_API_KEY", "OPENAI_API_BASE", "AZURE_API_KEY", "AZURE_API_BASE", "AZURE_API_VERSION",
    "AZURE_AD_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_BASE", "COHERE_API_KEY", "CO_API_KEY", "COHERE_API_BASE",
    "AI21_API_KEY", "AI21_API_BASE", "OLLAMA_API_BASE", "OLLAMA_API_KEY", "REPLICATE_API_KEY",
    "REPLICATE_API_TOKEN", "REPLICATE_API_BASE", "HUGGINGFACE_API_KEY", "HF_TOKEN", "HF_API_BASE",
    "HUGGINGFACE_API_BASE", "PETALS_API_BASE",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION_NAME", "AWS_REGION",
    "AWS_DEFAULT_REGION", "AWS_PROFILE_NAME", "AWS_BEARER_TOKEN_BEDROCK", "AWS_BEDROCK_RUNTIME_ENDPOINT",
    "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_URL",
    "UI_USERNAME", "UI_PASSWORD", "LITELLM_UI_SESSION_DURATION",
)


@pytest.fixture(autouse=True)
def _clean_gateway_env(monkeypatch, tmp_path):
    """Remove the gateway's environment variables for the test; restored afterwards. Any key store
    a test opens lives in its own temporary folder."""
    for name in GATEWAY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'gateway.sqlite'}")


@pytest.fixture
def env_sandbox(monkeypatch):
    """Return forget(*names): make each name absent now and restore its old state after the test.

    Needed when code under test writes os.environ itself (config `environment_variables`):
    monkeypatch only restores variables it touched, so touch them first.
    """
    def forget(*names):
        for name in names:
            monkeypatch.setenv(name, "placeholder")
            monkeypatch.delenv(name)
    return forget
