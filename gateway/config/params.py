"""Which `litellm_params` keys are request parameters (sent upstream as a deployment's defaults) and
which configure the gateway (never sent upstream).

A deny-list, as LiteLLM itself works: LiteLLM hands a deployment's unknown keys to the provider as
provider-specific parameters (`top_k`, `repetition_penalty`, `min_p` for vLLM, ...), and consumes its
own settings (`mock_response`, `mock_timeout`, `tags`, `litellm_credential_name`, ...). An allow-list
of OpenAI parameters would silently drop those provider parameters that work today. So a key is
kept back when it is a connection or routing key this gateway reads, one of LiteLLM's own
parameters, or looks like one (`mock_*`, `litellm_*`, `aws_*`, `vertex_*`, `azure_*`, prices);
everything else goes upstream. `warn` logs, once at load, every key that is neither an OpenAI
parameter nor one we read: those LiteLLM has and we do not implement, and those sent upstream.
"""

import logging

log = logging.getLogger("gateway.config.params")

# Keys this gateway reads itself (connection, routing, prices, prompt templates).
CONNECTION_KEYS = frozenset({
    "model", "api_base", "base_url", "api_key", "api_version", "azure_ad_token", "organization",
    "timeout", "stream_timeout", "headers", "extra_headers", "rpm", "tpm", "weight", "order",
    "max_retries", "input_cost_per_token", "output_cost_per_token", "custom_llm_provider",
    "cache_read_input_token_cost", "cache_creation_input_token_cost", "output_cost_per_image",
    "input_cost_per_query", "input_cost_per_character", "input_cost_per_second", "output_cost_per_second",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
    "aws_profile_name", "vertex_project", "vertex_location", "vertex_credentials",
    "initial_prompt_value", "roles", "final_prompt_value", "bos_token", "eos_token",
    "chat_template", "health_check_timeout", "region_name", "api_type", "mock_response", "deployment_id",
    "drop_params", "num_retries", "merge_reasoning_content_in_choices",
    "aws_bedrock_runtime_endpoint", "aws_role_name", "aws_session_name", "aws_external_id",
    "aws_sts_endpoint", "aws_web_identity_token", "aws_sagemaker_allow_zero_temp", "hf_model_name",
    "model_id", "use_chat_api", "prompt_template", "supports_system_prompt",
})

# LiteLLM's own parameters (its `all_litellm_params` and deployment settings): never request fields.
LITELLM_KEYS = frozenset({
    "metadata", "litellm_metadata", "litellm_trace_id", "tags", "acompletion", "aimg_generation",
    "atext_completion", "text_completion", "caching", "mock_response", "mock_timeout",
    "mock_tool_calls", "mock_delay", "mock_testing_fallbacks", "mock_testing_context_fallbacks",
    "mock_testing_content_policy_fallbacks", "disable_add_transform_inline_image_block",
    "litellm_proxy_rate_limit_response", "prompt_id", "provider_specific_header", "prompt_variables",
    "force_timeout", "logger_fn", "verbose", "model_file_id_mapping", "litellm_logging_obj",
    "litellm_call_id", "use_client", "id", "fallbacks", "azure", "model_list", "context_window_fallback_dict",
    "retry_policy", "retry_strategy", "request_timeout", "complete_response", "client", "max_parallel_requests",
    "model_info", "proxy_server_request",
    "preset_cache_key", "caching_groups", "ttl", "cache", "no-log", "base_model", "supports_system_message",
    "allowed_model_region", "model_config", "fastest_response", "cooldown_time", "cache_key",
    "azure_ad_token_provider", "tenant_id", "client_id", "azure_username", "azure_password", "azure_scope",
    "client_secret", "user_continue_message", "assistant_continue_message", "configurable_clientside_auth_params",
    "ensure_alternating_roles", "fallback_depth", "max_fallbacks", "max_budget", "budget_duration",
    "use_in_pass_through", "use_litellm_proxy", "litellm_credential_name", "allowed_openai_params",
    "additional_drop_params", "litellm_session_id", "prompt_label", "auto_router_config",
    "auto_router_config_path", "auto_router_default_model", "auto_router_embedding_model",
    "guardrails", "access_groups", "tpm_limit", "rpm_limit", "stream_timeout", "turn_off_message_logging",
})
_PREFIXES = ("mock_", "litellm_", "aws_", "vertex_", "azure_")

# Request parameters of OpenAI's API (and common provider ones) that go upstream without a word.
REQUEST_PARAMS = frozenset({
    "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "logit_bias", "user", "seed", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "logprobs", "top_logprobs", "functions", "function_call", "stream_options",
    "extra_body", "reasoning_effort", "modalities", "audio", "prediction", "service_tier", "store",
    "web_search_options", "dimensions", "encoding_format", "input_type", "suffix", "echo", "best_of",
    "top_k", "thinking", "safety_identifier", "verbosity",
})


def forwarded(key):
    """Whether a litellm_params key is a request parameter sent upstream as a default."""
    return not (key in CONNECTION_KEYS or key in LITELLM_KEYS or key.startswith(_PREFIXES)
                or "_cost_per_" in key)


def warn(deployments):
    """Log once per key, at load, the litellm_params keys that are neither read by the gateway nor
    OpenAI request parameters: LiteLLM settings we do not implement (not sent upstream) and other
    keys (sent upstream as default request parameters)."""
    seen = {}
    for deployment in deployments:
        for key in deployment.params:
            if key not in CONNECTION_KEYS and key not in REQUEST_PARAMS:
                seen.setdefault(str(key), []).append(deployment.index)
    for key, where in sorted(seen.items()):
        entries = ", ".join(f"model_list[{i}]" for i in where[:5]) + (" ..." if len(where) > 5 else "")
        if forwarded(key):
            log.warning("litellm_params.%s (%s) is not an OpenAI parameter; it is sent upstream as a default "
                        "request parameter", key[:100], entries)
        else:
            log.warning("litellm_params.%s (%s) is a LiteLLM setting this gateway does not implement; it is "
                        "never sent upstream", key[:100], entries)
