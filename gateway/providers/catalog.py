"""OpenAI-compatible services: one catalog entry each (base URL, env vars), no translation code.

Names, default base URLs and env vars follow what LiteLLM users write (`groq/llama3-70b-8192`,
`GROQ_API_KEY`, ...). A provider's key env var is only sent to its default base URL or to the base
its own base env var names, never to a different `api_base` set on one deployment.
"""

from dataclasses import dataclass

from gateway.providers.openai import OpenAIProvider
from gateway.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    """One OpenAI-compatible service."""

    name: str
    title: str
    default_base: str | None  # None: the deployment must give api_base (or the base env var)
    base_env: str | None
    key_envs: tuple = ()
    embeddings: bool = False
    aliases: tuple = ()
    rerank: bool = False  # serves /rerank (Jina's / Cohere's shape)
    audio: bool = False  # serves Whisper's /audio/transcriptions and /audio/translations


CATALOG = (
    Entry("hosted_vllm", "vLLM (OpenAI-compatible server)", None, "HOSTED_VLLM_API_BASE",
          ("HOSTED_VLLM_API_KEY",), embeddings=True, aliases=("vllm",), rerank=True, audio=True),
    Entry("together_ai", "Together AI", "https://api.together.xyz/v1", "TOGETHER_AI_API_BASE",
          ("TOGETHER_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_TOKEN"),
          embeddings=True, rerank=True),
    Entry("groq", "Groq", "https://api.groq.com/openai/v1", "GROQ_API_BASE", ("GROQ_API_KEY",), audio=True),
    Entry("mistral", "Mistral AI", "https://api.mistral.ai/v1", "MISTRAL_API_BASE", ("MISTRAL_API_KEY",),
          embeddings=True),
    Entry("codestral", "Mistral Codestral", "https://codestral.mistral.ai/v1", "CODESTRAL_API_BASE",
          ("CODESTRAL_API_KEY",)),
    Entry("deepseek", "DeepSeek", "https://api.deepseek.com/v1", "DEEPSEEK_API_BASE", ("DEEPSEEK_API_KEY",)),
    Entry("openrouter", "OpenRouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_BASE",
          ("OPENROUTER_API_KEY", "OR_API_KEY")),
    Entry("fireworks_ai", "Fireworks AI", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_BASE",
          ("FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY", "FIREWORKSAI_API_KEY"), embeddings=True),
    Entry("perplexity", "Perplexity", "https://api.perplexity.ai", "PERPLEXITY_API_BASE",
          ("PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY")),
    Entry("deepinfra", "DeepInfra", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_BASE",
          ("DEEPINFRA_API_KEY",), embeddings=True),
    Entry("anyscale", "Anyscale Endpoints", "https://api.endpoints.anyscale.com/v1", "ANYSCALE_API_BASE",
          ("ANYSCALE_API_KEY",), embeddings=True),
    Entry("xai", "xAI", "https://api.x.ai/v1", "XAI_API_BASE", ("XAI_API_KEY",)),
    Entry("cerebras", "Cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_BASE", ("CEREBRAS_API_KEY",)),
    Entry("sambanova", "SambaNova", "https://api.sambanova.ai/v1", "SAMBANOVA_API_BASE", ("SAMBANOVA_API_KEY",)),
    Entry("nvidia_nim", "NVIDIA NIM", "https://integrate.api.nvidia.com/v1", "NVIDIA_NIM_API_BASE",
          ("NVIDIA_NIM_API_KEY",), embeddings=True),
    Entry("github", "GitHub Models", "https://models.inference.ai.azure.com", "GITHUB_API_BASE",
          ("GITHUB_API_KEY",), embeddings=True),
    Entry("meta_llama", "Meta Llama API", "https://api.llama.com/compat/v1", "LLAMA_API_BASE", ("LLAMA_API_KEY",)),
    Entry("friendliai", "FriendliAI", "https://api.friendli.ai/serverless/v1", "FRIENDLI_API_BASE",
          ("FRIENDLIAI_API_KEY", "FRIENDLI_TOKEN")),
    Entry("lm_studio", "LM Studio", "http://localhost:1234/v1", "LM_STUDIO_API_BASE", ("LM_STUDIO_API_KEY",),
          embeddings=True),
    Entry("llamafile", "llamafile", "http://127.0.0.1:8080/v1", "LLAMAFILE_API_BASE", ("LLAMAFILE_API_KEY",),
          embeddings=True),
    Entry("xinference", "Xinference", "http://127.0.0.1:9997/v1", "XINFERENCE_API_BASE",
          ("XINFERENCE_API_KEY",), embeddings=True),
    Entry("litellm_proxy", "A LiteLLM proxy or another gateway", None, "LITELLM_PROXY_API_BASE",
          ("LITELLM_PROXY_API_KEY",), embeddings=True, rerank=True),
)


class CatalogProvider(OpenAIProvider):
    """Base of the generated catalog classes: OpenAI's wire format at the entry's base URL."""

    bare_models = None
    key_envs = ()
    native_responses = False  # OpenAI-compatible services answer the Responses API through chat

    def connection(self, config):
        """Like OpenAI's, with the entry's key env vars and a clear error when no base is known."""
        api_base, auth, secrets = super().connection(config)
        if not api_base:
            env = f" (or set {self.base_env})" if self.base_env else ""
            raise ConfigError(f"model_list[{config.index}].litellm_params.api_base: required for "
                              f"{self.name}{env}")
        return api_base, auth, secrets


def _make(entry):
    attrs = {"name": entry.name, "title": entry.title, "prefixes": (entry.name,) + entry.aliases,
             "default_base": entry.default_base, "base_env": entry.base_env, "key_env": entry.key_envs,
             "embeddings": entry.embeddings, "native_encoding": entry.embeddings,
             "surfaces": frozenset(({"rerank"} if entry.rerank else set())
                                   | ({"transcriptions", "translations"} if entry.audio else set())),
             "__doc__": f"{entry.title}: OpenAI-compatible; `{entry.name}/<model>`."}
    return type(f"{entry.name.title().replace('_', '')}Provider", (CatalogProvider,), attrs)


PROVIDERS = tuple(_make(entry) for entry in CATALOG)
