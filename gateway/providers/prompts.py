"""Chat messages -> one prompt string for text-generation models (TGI, SageMaker, Replicate, ...).

Built-in templates are chosen by model name; a deployment may instead give LiteLLM's custom template
keys (`initial_prompt_value`, `roles`, `final_prompt_value`, `bos_token`, `eos_token`) or a Jinja
`chat_template`, which is rendered only in jinja2's ImmutableSandboxedEnvironment.
"""

import re

from gateway.errors import BadRequestError
from gateway.providers.shapes import text_of
from gateway.errors import ConfigError

CUSTOM_KEYS = ("initial_prompt_value", "roles", "final_prompt_value", "bos_token", "eos_token")


def _turns(messages):
    """(role, text) pairs; tool results read as user turns, tool calls as assistant text."""
    out = []
    for m in messages:
        role = m.get("role")
        text = text_of(m.get("content"))
        if role in ("tool", "function"):
            role, text = "user", f"Tool result: {text}"
        elif role == "developer":
            role = "system"
        if role == "assistant" and m.get("tool_calls"):
            calls = "; ".join(f"{c['function']['name']}({c['function'].get('arguments', '')})"
                              for c in m["tool_calls"] if isinstance(c, dict) and c.get("function"))
            text = f"{text}\nCalled: {calls}".strip()
        out.append((role, text))
    return out


def _split_system(turns):
    system = "\n".join(t for r, t in turns if r == "system")
    return system, [(r, t) for r, t in turns if r != "system"]


def llama2(turns):
    """Llama-2 chat and CodeLlama instruct: [INST] blocks, system in <<SYS>>."""
    system, rest = _split_system(turns)
    prompt, pending_sys = "", f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system else ""
    for role, text in rest:
        if role == "user":
            prompt += f"<s>[INST] {pending_sys}{text} [/INST]"
            pending_sys = ""
        else:
            prompt += f" {text} </s>"
    return prompt


def mistral(turns):
    """Mistral / Mixtral instruct: system text joins the first user turn."""
    system, rest = _split_system(turns)
    prompt = "<s>"
    for role, text in rest:
        if role == "user":
            prompt += f"[INST] {(system + chr(10) + chr(10)) if system else ''}{text} [/INST]"
            system = ""
        else:
            prompt += f"{text}</s>"
    return prompt


def zephyr(turns):
    """Zephyr: <|role|> headers ended by </s>."""
    return "".join(f"<|{role}|>\n{text}</s>\n" for role, text in turns) + "<|assistant|>\n"


def chatml(turns):
    """ChatML (Qwen, OpenHermes, Dolphin, Yi...)."""
    return "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns) + "<|im_start|>assistant\n"


def llama3(turns):
    """Llama-3 instruct headers."""
    body = "".join(f"<|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>" for role, text in turns)
    return f"<|begin_of_text|>{body}<|start_header_id|>assistant<|end_header_id|>\n\n"


def falcon(turns):
    """Falcon instruct: `System:` / `User:` / `Falcon:` turns."""
    system, rest = _split_system(turns)
    lines = [f"System: {system}"] if system else []
    lines += [f"{'User' if role == 'user' else 'Falcon'}: {text}" for role, text in rest]
    return "\n".join(lines) + "\nFalcon:"


def vicuna(turns):
    """Vicuna v1.1: `USER:` / `ASSISTANT:` turns."""
    system, rest = _split_system(turns)
    prompt = f"{system}\n\n" if system else ""
    for role, text in rest:
        prompt += f"USER: {text}\n" if role == "user" else f"ASSISTANT: {text}</s>\n"
    return prompt + "ASSISTANT:"


def plain(turns):
    """No known family: `role: text` lines and an open assistant turn."""
    return "".join(f"{role}: {text}\n" for role, text in turns) + "assistant:"


# Checked in order; the first family whose pattern is in the lower-cased model name wins. ChatML
# fine-tunes come first (OpenHermes-2.5-Mistral is ChatML, not Mistral); `llama-3` must not match
# `codellama-34b`.
FAMILIES = (
    (re.compile(r"qwen|openhermes|dolphin|chatml|(^|/)yi-|nous-hermes-2"), chatml),
    (re.compile(r"llama-?_?3(?!\d)"), llama3),
    (re.compile(r"codellama|code-llama|llama-?2(?!\d)"), llama2),
    (re.compile(r"mistral|mixtral"), mistral),
    (re.compile(r"zephyr"), zephyr),
    (re.compile(r"falcon"), falcon),
    (re.compile(r"vicuna"), vicuna),
)


def family_for(model):
    """The built-in template function for a model name."""
    name = model.lower()
    for pattern, template in FAMILIES:
        if pattern.search(name):
            return template
    return plain


class CustomTemplate:
    """LiteLLM's per-deployment template keys."""

    def __init__(self, params):
        roles = params.get("roles") or {}
        if not isinstance(roles, dict) or not all(isinstance(v, dict) or v is None for v in roles.values()):
            raise ConfigError("litellm_params.roles: must map role -> {pre_message, post_message}")
        self.roles = {r: (str((v or {}).get("pre_message") or ""), str((v or {}).get("post_message") or ""))
                      for r, v in roles.items()}
        self.initial = str(params.get("initial_prompt_value") or "")
        self.final = str(params.get("final_prompt_value") or "")
        self.bos = str(params.get("bos_token") or "")
        self.eos = str(params.get("eos_token") or "")

    def __call__(self, turns):
        prompt = self.bos + self.initial
        open_turn = True
        for role, text in turns:
            if role in ("system", "user") and not open_turn:
                prompt += self.bos
                open_turn = True
            pre, post = self.roles.get(role, ("", ""))
            prompt += pre + text + post
            if role == "assistant":
                prompt += self.eos
                open_turn = False
        return prompt + self.final


class JinjaTemplate:
    """A Hugging Face style `chat_template`, sandboxed: no globals, unsafe attributes refused."""

    def __init__(self, source, bos="", eos=""):
        from jinja2 import TemplateError

        env = _sandbox()
        try:
            self.template = env.from_string(source)
        except TemplateError as exc:
            raise ConfigError(f"litellm_params.chat_template: {exc}") from None
        self.bos, self.eos = bos, eos
        try:  # refuse at start-up a template that cannot render an ordinary conversation
            self.render([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
        except BadRequestError as exc:
            raise ConfigError(f"litellm_params.chat_template: {exc.message}") from None

    def render(self, messages):
        """Render; any sandbox violation is a 400, and nothing runs."""
        from jinja2 import TemplateError
        from jinja2.exceptions import SecurityError

        plain_messages = [{"role": m.get("role"), "content": text_of(m.get("content"))} for m in messages]
        try:
            return self.template.render(messages=plain_messages, bos_token=self.bos, eos_token=self.eos,
                                        add_generation_prompt=True, tools=None, documents=None)
        except SecurityError:
            raise BadRequestError("chat_template refused: it tried to reach an unsafe attribute or "
                                  "build an oversized value.") from None
        except TemplateError as exc:
            raise BadRequestError(f"chat_template failed: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError, RuntimeError, MemoryError) as exc:
            # RuntimeError covers RecursionError from self-recursive macros.
            raise BadRequestError(f"chat_template failed: {type(exc).__name__}") from None


MAX_REPEAT = 100_000


def _sandbox():
    """jinja2's ImmutableSandboxedEnvironment, stricter: unsafe attribute access raises instead of
    rendering empty, `*` and `**` cannot build huge values, and there are no globals to climb from.
    Rendering is lenient about undefined names (as transformers is), so stock templates work."""
    from jinja2 import Undefined
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import missing

    class TopLevelStrict(Undefined):
        """Lenient for missing attributes (message.tool_calls), strict when a template prints or
        loops over a name it was never given (`{{ config }}`, `{{ request }}`)."""

        def __str__(self):
            if self._undefined_obj is missing:
                self._fail_with_undefined_error()
            return ""

        def __iter__(self):
            if self._undefined_obj is missing:
                self._fail_with_undefined_error()
            return iter(())

    class Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def unsafe_undefined(self, obj, attribute):
            raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} is unsafe")

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64:
                raise SecurityError("exponent too large")
            if operator == "*":
                sizes = [len(x) for x in (left, right) if isinstance(x, (str, list, tuple))]
                counts = [x for x in (left, right) if isinstance(x, int) and not isinstance(x, bool)]
                if sizes and counts and sizes[0] * max(counts[0], 0) > MAX_REPEAT:
                    raise SecurityError("repetition too large")
            return super().call_binop(context, operator, left, right)

    env = Sandbox(autoescape=False, trim_blocks=True, lstrip_blocks=True, undefined=TopLevelStrict)
    env.globals.clear()  # no lipsum, cycler, joiner, namespace, range: nothing to climb from
    env.globals["raise_exception"] = _raise_exception
    return env


def _raise_exception(message):
    """What HF chat templates call to reject a conversation."""
    from jinja2 import TemplateError
    raise TemplateError(str(message))


def prompt_builder(params, model):
    """The deployment's prompt function: Jinja template, custom keys, or the model family's."""
    if params.get("chat_template"):
        template = JinjaTemplate(str(params["chat_template"]), str(params.get("bos_token") or ""),
                                 str(params.get("eos_token") or ""))
        return template.render
    if any(params.get(k) for k in CUSTOM_KEYS):
        custom = CustomTemplate(params)
        return lambda messages: custom(_turns(messages))
    family = family_for(model)
    return lambda messages: family(_turns(messages))
