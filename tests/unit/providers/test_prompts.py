"""Chat messages -> prompt strings: built-in families, LiteLLM custom keys, sandboxed Jinja templates."""

import os

import pytest

from gateway.errors import BadRequestError
from gateway.providers import prompts
from gateway.providers.prompts import CustomTemplate
from gateway.providers.prompts import JinjaTemplate
from gateway.providers.prompts import family_for
from gateway.providers.prompts import prompt_builder
from gateway.config.settings import ConfigError

# The conversation every family is checked with: system, user, assistant, user.
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "What is 2+2?"},
]
NO_SYSTEM = CONVERSATION[1:]


# --- family_for: realistic Hugging Face repo ids --------------------------------------------------

@pytest.mark.parametrize("model, family", [
    ("meta-llama/Llama-2-7b-chat-hf", prompts.llama2),
    ("meta-llama/Llama-2-70b-chat-hf", prompts.llama2),
    ("TheBloke/Llama-2-13B-chat-GPTQ", prompts.llama2),
    ("codellama/CodeLlama-34b-Instruct-hf", prompts.llama2),
    ("codellama/CodeLlama-7b-Instruct-hf", prompts.llama2),
    ("mistralai/Mistral-7B-Instruct-v0.2", prompts.mistral),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", prompts.mistral),
    ("HuggingFaceH4/zephyr-7b-beta", prompts.zephyr),
    ("stabilityai/stablelm-zephyr-3b", prompts.zephyr),
    ("Qwen/Qwen2-7B-Instruct", prompts.chatml),
    ("Qwen/Qwen1.5-7B-Chat", prompts.chatml),
    ("01-ai/Yi-34B-Chat", prompts.chatml),
    ("meta-llama/Meta-Llama-3-8B-Instruct", prompts.llama3),
    ("meta-llama/Meta-Llama-3.1-8B-Instruct", prompts.llama3),
    ("meta-llama/Llama-3.2-3B-Instruct", prompts.llama3),
    ("tiiuae/falcon-7b-instruct", prompts.falcon),
    ("tiiuae/falcon-40b-instruct", prompts.falcon),
    ("lmsys/vicuna-13b-v1.5", prompts.vicuna),
    ("lmsys/vicuna-7b-v1.5", prompts.vicuna),
    ("gpt2", prompts.plain),
    ("openai-community/gpt2", prompts.plain),
    ("bigscience/bloom-560m", prompts.plain),
])
def test_family_for_known_repos(model, family):
    assert family_for(model) is family


@pytest.mark.parametrize("model", [
    # Each model card says "uses ChatML"; the code lists these names as ChatML markers, but the
    # `mistral`/`mixtral` markers are checked first and win.
    "teknium/OpenHermes-2.5-Mistral-7B",
    "NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO",
    "cognitivecomputations/dolphin-2.6-mistral-7b",
])
def test_family_for_chatml_finetunes_of_mistral(model):
    assert family_for(model) is prompts.chatml


# --- built-in families: exact prompt text for system + user + assistant + user -------------------
# Expected strings written by hand from each family's published format (model card / the repo's
# tokenizer_config chat_template / the format page the model card links to).

FAMILY_PROMPTS = [
    # Llama-2 chat (Meta's format, HF blog "Llama 2 is here"): system inside <<SYS>> in the first [INST].
    ("meta-llama/Llama-2-7b-chat-hf",
     "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]"),
    # CodeLlama instruct uses the same [INST]/<<SYS>> format.
    ("codellama/CodeLlama-34b-Instruct-hf",
     "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]"),
    # Mistral/Mixtral instruct (tokenizer_config template): bos, `[INST] u [/INST]a</s>`; the
    # optional system message joins the first user turn with a blank line.
    ("mistralai/Mixtral-8x7B-Instruct-v0.1",
     "<s>[INST] You are terse.\n\nHi! [/INST]Hello.</s>[INST] What is 2+2? [/INST]"),
    # Zephyr (model card): <|role|>\ncontent</s>\n, open assistant turn.
    ("HuggingFaceH4/zephyr-7b-beta",
     "<|system|>\nYou are terse.</s>\n<|user|>\nHi!</s>\n<|assistant|>\nHello.</s>\n"
     "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n"),
    # ChatML (Qwen2 model card / template).
    ("Qwen/Qwen2-7B-Instruct",
     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
     "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
     "<|im_start|>assistant\n"),
    # Llama-3 instruct (Meta's model card prompt format).
    ("meta-llama/Meta-Llama-3-8B-Instruct",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    # Falcon (prompt format in Hugging Face's "Falcon 180B" blog post, huggingface.co/blog/falcon-180b):
    # `System: ...` / `User: ...` / `Falcon: ...` lines.
    ("tiiuae/falcon-7b-instruct",
     "System: You are terse.\nUser: Hi!\nFalcon: Hello.\nUser: What is 2+2?\nFalcon:"),
    # Vicuna v1.1/v1.3/v1.5 (FastChat docs/vicuna_weights_version.md, linked from the model card):
    # system, blank line, `USER: ...` / `ASSISTANT: ...</s>` each on its own line.
    ("lmsys/vicuna-13b-v1.5",
     "You are terse.\n\nUSER: Hi!\nASSISTANT: Hello.</s>\nUSER: What is 2+2?\nASSISTANT:"),
    # No known family: `role: text` lines, open assistant turn.
    ("gpt2", "system: You are terse.\nuser: Hi!\nassistant: Hello.\nuser: What is 2+2?\nassistant:"),
]


@pytest.mark.parametrize("model, expected", FAMILY_PROMPTS, ids=[m for m, _ in FAMILY_PROMPTS])
def test_family_prompt_text(model, expected):
    build = prompt_builder({"model": f"huggingface/{model}"}, model)
    assert build(CONVERSATION) == expected


FAMILY_PROMPTS_NO_SYSTEM = [
    ("meta-llama/Llama-2-7b-chat-hf", "<s>[INST] Hi! [/INST] Hello. </s><s>[INST] What is 2+2? [/INST]"),
    ("mistralai/Mistral-7B-Instruct-v0.2", "<s>[INST] Hi! [/INST]Hello.</s>[INST] What is 2+2? [/INST]"),
    ("HuggingFaceH4/zephyr-7b-beta",
     "<|user|>\nHi!</s>\n<|assistant|>\nHello.</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n"),
    ("Qwen/Qwen2-7B-Instruct",
     "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
     "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"),
    ("meta-llama/Meta-Llama-3-8B-Instruct",
     "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("tiiuae/falcon-7b-instruct", "User: Hi!\nFalcon: Hello.\nUser: What is 2+2?\nFalcon:"),
    ("gpt2", "user: Hi!\nassistant: Hello.\nuser: What is 2+2?\nassistant:"),
]


@pytest.mark.parametrize("model, expected", FAMILY_PROMPTS_NO_SYSTEM,
                         ids=[m for m, _ in FAMILY_PROMPTS_NO_SYSTEM])
def test_family_prompt_without_system(model, expected):
    assert prompt_builder({}, model)(NO_SYSTEM) == expected


# --- message shapes: tools, tool calls, content parts, developer role -------------------------------

TOOL_CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
]


@pytest.mark.parametrize("model, expected", [
    ("Qwen/Qwen2-7B-Instruct",
     "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
     "<|im_start|>assistant\nCalled: get_weather({\"city\": \"Paris\"})<|im_end|>\n"
     "<|im_start|>user\nTool result: 18C, cloudy<|im_end|>\n<|im_start|>assistant\n"),
    ("meta-llama/Llama-2-7b-chat-hf",
     "<s>[INST] Weather in Paris? [/INST] Called: get_weather({\"city\": \"Paris\"}) </s>"
     "<s>[INST] Tool result: 18C, cloudy [/INST]"),
    ("gpt2",
     "user: Weather in Paris?\nassistant: Called: get_weather({\"city\": \"Paris\"})\n"
     "user: Tool result: 18C, cloudy\nassistant:"),
])
def test_tool_calls_and_results_rendered_as_text(model, expected):
    assert prompt_builder({}, model)(TOOL_CONVERSATION) == expected


def test_assistant_text_and_several_tool_calls():
    messages = [{"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": '{"x":1}'}}]}]
    assert prompt_builder({}, "gpt2")(messages) == 'assistant: Checking.\nCalled: f({}); g({"x":1})\nassistant:'


def test_legacy_function_role_reads_as_tool_result():
    messages = [{"role": "function", "name": "get_weather", "content": "sunny"}]
    assert prompt_builder({}, "gpt2")(messages) == "user: Tool result: sunny\nassistant:"


def test_content_as_list_of_parts():
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Describe "},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "text", "text": "this."}]},
    ]
    assert prompt_builder({}, "Qwen/Qwen2-7B-Instruct")(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nDescribe this.<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_developer_role_is_system():
    messages = [{"role": "developer", "content": "Rules."}, {"role": "user", "content": "Go"}]
    assert prompt_builder({}, "meta-llama/Llama-2-7b-chat-hf")(messages) == (
        "<s>[INST] <<SYS>>\nRules.\n<</SYS>>\n\nGo [/INST]")


# --- LiteLLM custom template keys ------------------------------------------------------------------

# The example from LiteLLM's proxy docs ("Custom prompt templates" / model_list litellm_params).
LITELLM_DOCS_PARAMS = {
    "model": "huggingface/mistralai/Mistral-7B-Instruct-v0.1",
    "initial_prompt_value": "\n",
    "roles": {"system": {"pre_message": "<|im_start|>system\n", "post_message": "<|im_end|>"},
              "assistant": {"pre_message": "<|im_start|>assistant\n", "post_message": "<|im_end|>"},
              "user": {"pre_message": "<|im_start|>user\n", "post_message": "<|im_end|>"}},
    "final_prompt_value": "\n",
    "bos_token": "<s>",
    "eos_token": "</s>",
}
# LiteLLM's register_prompt_template example (Llama-2 style; assistant has only post_message).
LITELLM_LLAMA_ROLES = {
    "roles": {"system": {"pre_message": "[INST] <<SYS>>\n", "post_message": "\n<</SYS>>\n [/INST]\n"},
              "user": {"pre_message": "[INST] ", "post_message": " [/INST]\n"},
              "assistant": {"post_message": "\n"}},
}


@pytest.mark.parametrize("params, expected", [
    (LITELLM_DOCS_PARAMS,
     "<s>\n<|im_start|>system\nYou are terse.<|im_end|><|im_start|>user\nHi!<|im_end|>"
     "<|im_start|>assistant\nHello.<|im_end|></s><s><|im_start|>user\nWhat is 2+2?<|im_end|>\n"),
    (LITELLM_LLAMA_ROLES,
     "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n [/INST]\n[INST] Hi! [/INST]\nHello.\n[INST] What is 2+2? [/INST]\n"),
    ({"initial_prompt_value": "Chat:\n", "final_prompt_value": "Bot:"},
     "Chat:\nYou are terse.Hi!Hello.What is 2+2?Bot:"),
    ({"roles": {"user": {"pre_message": "Q: ", "post_message": "\n"},
                "assistant": {"pre_message": "A: ", "post_message": "\n"}},
      "final_prompt_value": "A:", "eos_token": "<eos>", "bos_token": "<bos>"},
     "<bos>You are terse.Q: Hi!\nA: Hello.\n<eos><bos>Q: What is 2+2?\nA:"),
])
def test_litellm_custom_template(params, expected):
    build = prompt_builder(params, "some/model-without-family")
    assert build(CONVERSATION) == expected


def test_custom_template_wins_over_family():
    build = prompt_builder(LITELLM_LLAMA_ROLES, "Qwen/Qwen2-7B-Instruct")
    assert "<|im_start|>" not in build(NO_SYSTEM)


def test_custom_template_null_pre_message_renders_nothing():
    # YAML `pre_message:` with no value loads as None; it must not appear as the text "None".
    params = {"roles": {"user": {"pre_message": None, "post_message": "\n"},
                        "assistant": {"pre_message": "A: ", "post_message": None}}}
    assert prompt_builder(params, "x")(NO_SYSTEM) == "Hi!\nA: Hello.What is 2+2?\n"


@pytest.mark.parametrize("roles", [
    ["user"], "user", 3,
    {"user": "[INST] "},                       # a role given a string instead of {pre_message, ...}
    {"user": ["[INST] ", " [/INST]"]},
])
def test_custom_template_roles_must_be_mapping(roles):
    with pytest.raises(ConfigError, match="roles"):
        CustomTemplate({"roles": roles})


def test_custom_template_tool_turns():
    params = {"roles": {"user": {"pre_message": "U:", "post_message": "|"},
                        "assistant": {"pre_message": "A:", "post_message": "|"}}}
    assert prompt_builder(params, "x")(TOOL_CONVERSATION) == (
        'U:Weather in Paris?|A:Called: get_weather({"city": "Paris"})|U:Tool result: 18C, cloudy|')


# --- Jinja chat_template: ordinary templates ---------------------------------------------------------

HF_STYLE_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# The HuggingFaceH4/zephyr-7b-beta chat_template (one block tag per line, as in its tokenizer_config.json):
# it relies on transformers rendering chat templates with trim_blocks=True and lstrip_blocks=True.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)

# Qwen/Qwen2.5-7B-Instruct tokenizer_config.json chat_template (verbatim): relies on `tools` being
# defined (transformers passes tools=None) and on undefined attributes (`message.tool_calls`) being falsy.
QWEN25_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


def test_jinja_hf_style_template():
    build = prompt_builder({"chat_template": HF_STYLE_TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"},
                           "Qwen/Qwen2-7B-Instruct")
    assert build(CONVERSATION) == (
        "<s><|system|>\nYou are terse.</s>\n<|user|>\nHi!</s>\n<|assistant|>\nHello.</s>\n"
        "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n")


def test_jinja_template_wins_over_custom_keys_and_family():
    params = {"chat_template": "{% for m in messages %}[{{ m.role }}]{% endfor %}",
              "roles": {"user": {"pre_message": "X"}}}
    assert prompt_builder(params, "meta-llama/Llama-2-7b-chat-hf")(NO_SYSTEM) == "[user][assistant][user]"


def test_jinja_zephyr_repo_template():
    build = prompt_builder({"chat_template": ZEPHYR_TEMPLATE, "eos_token": "</s>"}, "x")
    assert build(CONVERSATION) == (
        "<|system|>\nYou are terse.</s>\n<|user|>\nHi!</s>\n<|assistant|>\nHello.</s>\n"
        "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n")


def test_jinja_qwen25_repo_template():
    build = prompt_builder({"chat_template": QWEN25_TEMPLATE}, "x")
    assert build(CONVERSATION) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_jinja_content_parts_and_no_template_injection():
    build = prompt_builder({"chat_template": "{% for m in messages %}{{ m.content }}|{% endfor %}"}, "x")
    messages = [{"role": "user", "content": [{"type": "text", "text": "{{ 7*7 }} "},
                                             {"type": "text", "text": "{% raw %}"}]}]
    assert build(messages) == "{{ 7*7 }} {% raw %}|"


def test_jinja_raise_exception_at_render_is_400():
    source = ("{% for m in messages %}{% if m.role == 'assistant' and loop.first %}"
              "{{ raise_exception('Conversation must start with a user') }}{% endif %}"
              "{{ m.content }}{% endfor %}")
    build = prompt_builder({"chat_template": source}, "x")
    with pytest.raises(BadRequestError, match="Conversation must start with a user") as info:
        build([{"role": "assistant", "content": "a"}])
    assert info.value.status == 400


@pytest.mark.parametrize("source", [
    "{% for m in messages %}{{ m.content }",
    "{% if messages %}unclosed",
    "{{ }}",
    "{% endfor %}",
    "{% nosuchtag %}",
])
def test_jinja_syntax_error_is_config_error(source):
    with pytest.raises(ConfigError, match="chat_template"):
        prompt_builder({"chat_template": source}, "x")


# --- Jinja chat_template: hostile templates are refused and run nothing ------------------------------

HOSTILE = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ lipsum.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__.os }}",
    "{{ messages|attr('__class__') }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ config }}",
    "{{ request }}",
    "{{ range(10) }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{% endfor %}",
    "{{ raise_exception('x') }}",
    "{{ raise_exception.__globals__ }}",
    "{{ '{0.__class__}'.format(messages) }}",
    "{{ messages.append(1) }}",
    "{{ messages[0].update({'role': 'x'}) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_template_refused_at_construction(source):
    with pytest.raises(ConfigError, match="chat_template"):
        prompt_builder({"chat_template": source}, "x")


@pytest.fixture
def os_canary(monkeypatch):
    """Record any call that would run a command; the sandbox must never reach them."""
    calls = []
    for name in ("system", "popen"):
        monkeypatch.setattr(os, name, lambda *a, _n=name, **k: calls.append((_n, a)))
    return calls


def _write_attempts(path):
    return [
        f"{{{{ cycler.__init__.__globals__.os.system('touch {path}') }}}}",
        f"{{{{ lipsum.__globals__['os'].popen('touch {path}').read() }}}}",
        f"{{{{ self.__init__.__globals__.__builtins__.open('{path}', 'w').write('x') }}}}",
        f"{{{{ raise_exception.__globals__.__builtins__.open('{path}', 'w').write('x') }}}}",
        f"{{{{ messages.__class__.__mro__[1].__subclasses__()[0].__init__.__globals__['os']"
        f".system('touch {path}') }}}}",
        f"{{{{ (messages|attr('__class__')).__init__.__globals__['os'].system('touch {path}') }}}}",
        f"{{% for c in ''.__class__.__base__.__subclasses__() %}}{{% if c.__name__ == 'catch_warnings' %}}"
        f"{{{{ c()._module.__builtins__['open']('{path}', 'w').write('x') }}}}{{% endif %}}{{% endfor %}}",
    ]


@pytest.mark.parametrize("index", range(7))
def test_hostile_template_runs_nothing_at_construction(tmp_path, os_canary, index):
    target = tmp_path / "pwned"
    source = _write_attempts(target)[index]
    with pytest.raises(ConfigError):
        prompt_builder({"chat_template": source}, "x")
    assert not target.exists()
    assert os_canary == []


@pytest.mark.parametrize("index", range(7))
def test_hostile_template_runs_nothing_at_render(tmp_path, os_canary, index):
    """A template that behaves for the start-up check and attacks on a later conversation: 400."""
    target = tmp_path / "pwned"
    attack = _write_attempts(target)[index]
    source = ("{% for m in messages %}{{ m.content }}{% endfor %}"
              "{% if messages|length > 2 %}" + attack + "{% endif %}")
    build = prompt_builder({"chat_template": source}, "x")  # passes the ordinary-conversation check
    with pytest.raises(BadRequestError):
        build(CONVERSATION)
    assert not target.exists()
    assert os_canary == []


def test_recursive_template_at_render_is_400():
    source = ("{% macro f() %}{{ f() }}{% endmacro %}{% for m in messages %}{{ m.content }}{% endfor %}"
              "{% if messages|length > 2 %}{{ f() }}{% endif %}")
    build = prompt_builder({"chat_template": source}, "x")
    with pytest.raises(BadRequestError):
        build(CONVERSATION)


def test_jinja_template_bos_eos_passed():
    template = JinjaTemplate("{{ bos_token }}{{ messages|length }}{{ eos_token }}", "<B>", "<E>")
    assert template.render(CONVERSATION) == "<B>4<E>"
