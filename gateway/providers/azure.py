"""Azure OpenAI: OpenAI's wire format behind per-deployment URLs, `api-version` and `api-key`."""

from urllib.parse import quote

from gateway.providers.base import env_value
from gateway.providers.openai import OpenAIProvider
from gateway.providers.openai import PATHS
from gateway.errors import ConfigError

DEFAULT_API_VERSION = "2024-10-21"
STREAM_OPTIONS_SINCE = "2024-09-01"
RESPONSES_SINCE = "2025-03-01-preview"  # the first api-version with the Responses API


class AzureProvider(OpenAIProvider):
    """`azure/<deployment>` with `api_base`, `api_version` and `api_key` or `azure_ad_token`."""

    name = "azure"
    title = "Azure OpenAI"
    prefixes = ("azure",)
    bare_models = None
    key_env = ("AZURE_API_KEY", "AZURE_AD_TOKEN")  # read by connection() below; listed for the README
    base_env = None
    default_base = None
    # DALL-E, Whisper and TTS deployments; Azure has no moderations or rerank here
    surfaces = frozenset({"images", "transcriptions", "translations", "speech"})

    def connection(self, config):
        """api_base is required; `api-key` header, or an Entra ID bearer token."""
        params = config.params
        api_base = params.get("api_base") or env_value("AZURE_API_BASE")
        if not api_base:
            raise ConfigError(f"model_list[{config.index}].litellm_params.api_base: required for azure "
                              "(or set AZURE_API_BASE)")
        key = params.get("api_key")
        token = params.get("azure_ad_token") or env_value("AZURE_AD_TOKEN")
        key = self.env_key(key, own_upstream=token is None, names="AZURE_API_KEY")
        auth = {"api-key": key} if key else ({"Authorization": f"Bearer {token}"} if token else {})
        self.api_version = (params.get("api_version") or env_value("AZURE_API_VERSION")
                            or DEFAULT_API_VERSION)
        return api_base, auth, (key, token)

    def prepare_body(self, endpoint, body):
        """As OpenAI; api-versions before 2024-09-01 refuse `stream_options`, so the one the
        gateway added to bill the stream is left out there (its tokens are then estimated)."""
        from gateway.providers.base import AddedUsageOption
        out = super().prepare_body(endpoint, body)
        if isinstance(out.get("stream_options"), AddedUsageOption) and self.api_version[:10] < STREAM_OPTIONS_SINCE:
            out.pop("stream_options", None)
        return out

    def endpoint_urls(self):
        """`{api_base}/openai/deployments/{deployment}/{path}?api-version=...`."""
        root = f"{self.upstream_base}/openai/deployments/{quote(self.model, safe='')}"
        query = f"?api-version={quote(self.api_version, safe='')}"
        urls = {endpoint: root + path + query for endpoint, path in PATHS.items()}
        # The Responses API is not under the deployment: `{api_base}/openai/responses`, the deployment
        # named as the body's model, with an api-version that has it.
        version = self.api_version if self.api_version >= RESPONSES_SINCE else RESPONSES_SINCE
        urls["responses"] = f"{self.upstream_base}/openai/responses?api-version={quote(version, safe='')}"
        return urls


PROVIDERS = (AzureProvider,)
