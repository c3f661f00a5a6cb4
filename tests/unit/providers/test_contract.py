"""The provider contract (#12): one prepared body per call, keys from env vars in one helper, custom
I/O only through named hooks, and no socket/HTTP error handled below wire/ (checked with `ast`)."""

import ast
from pathlib import Path

import orjson
import pytest

from gateway import providers
from gateway.config.settings import DeploymentConfig
from gateway.providers.base import Provider
from gateway.providers.base import env_first
from gateway.wire.upstream import CallContext

PROVIDERS_DIR = Path(providers.__file__).parent
GATEWAY_DIR = PROVIDERS_DIR.parent
CHAT = {"messages": [{"role": "user", "content": "hi"}]}

# Modules whose errors are socket/HTTP errors: handled in gateway/wire/ only.
IO_MODULES = ("urllib3", "socket", "ssl", "http.client", "requests", "botocore.exceptions")
IO_NAMES = {"OSError", "IOError", "ConnectionError", "TimeoutError", "EnvironmentError"}


def make(model, **params):
    """The provider for one deployment, built through the registry as the router does."""
    return providers.build(DeploymentConfig(model_name="g", params={"model": model, **params},
                                            model_info={}, index=0))


def provider_modules():
    return sorted(PROVIDERS_DIR.glob("*.py"))


def parsed(path):
    return ast.parse(path.read_text(), filename=str(path))


def io_imports(tree):
    """Every import of a socket/HTTP error-raising module (at any depth: lazy imports count)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [n for n in names if any(n == m or n.startswith(m + ".") for m in IO_MODULES)]
    return found


def io_handlers(tree):
    """Every `except` clause naming a builtin socket-level error."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            kinds = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            found += [k.id for k in kinds if isinstance(k, ast.Name) and k.id in IO_NAMES]
    return found


class Sent:
    """A transport that records what it was given and answers one OpenAI chat completion."""

    def __init__(self):
        self.requests = []

    def send(self, provider, req, *, timeout, stream=False):
        self.requests.append(req)
        answer = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        return type("Resp", (), {"data": orjson.dumps(answer), "status": 200, "headers": {}})()


# --- one prepared body per call (defect 3 of #12) ---------------------------------------------------

@pytest.mark.parametrize("model, params", [
    ("openai/gpt-4o-mini", {"api_key": "k", "temperature": 0.2}),
    ("azure/dep", {"api_key": "k", "api_base": "https://res.openai.azure.com"}),
    ("anthropic/claude-3-haiku", {"api_key": "k"}),
    ("ollama_chat/llama3", {}),
])
def test_one_call_prepares_its_body_once_and_builds_from_that_copy(monkeypatch, model, params):
    provider = make(model, **params)
    prepared, built = [], []
    prepare, build = provider.prepare_body, provider.build_request

    def counting_prepare(endpoint, body):
        prepared.append(prepare(endpoint, body))
        return prepared[-1]

    def recording_build(endpoint, body, stream):
        built.append(body)
        return build(endpoint, body, stream)

    monkeypatch.setattr(provider, "prepare_body", counting_prepare)
    monkeypatch.setattr(provider, "build_request", recording_build)
    try:
        provider.execute(CallContext(Sent(), 5.0), "chat", {**CHAT, "caching": True}, False)
    except Exception:  # noqa: BLE001  (a non-OpenAI parser may refuse the canned answer: not the point)
        pass
    assert len(prepared) == 1, "the body was prepared (copied) more than once"
    assert len(built) == 1 and built[0] is prepared[0]


def test_build_request_takes_the_prepared_body_as_it_is():
    provider = make("openai/gpt-4o-mini", api_key="k", temperature=0.2)
    body = provider.prepare_body("chat", CHAT)
    assert orjson.loads(provider.build_request("chat", body, False).body) == body


# --- keys from env vars: one helper ---------------------------------------------------------------

def test_env_first_takes_the_first_set_non_empty_variable(monkeypatch):
    monkeypatch.setenv("GW_TEST_A", "")
    monkeypatch.setenv("GW_TEST_B", "b-value")
    monkeypatch.delenv("GW_TEST_C", raising=False)
    assert env_first(("GW_TEST_C", "GW_TEST_A", "GW_TEST_B")) == "b-value"
    assert env_first("GW_TEST_B") == "b-value"
    assert env_first("GW_TEST_A") is None and env_first(None) is None and env_first(()) is None


def test_env_key_reads_the_environment_only_without_a_key_and_for_the_own_upstream(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    provider = make("openai/m", api_key="k")
    assert provider.env_key("sk-param") == "sk-param"
    assert provider.env_key(None) == "sk-env"
    assert provider.env_key(None, own_upstream=False) is None
    assert provider.env_key(None, names=("NO_SUCH_VAR_GW", "OPENAI_API_KEY")) == "sk-env"


def test_only_the_base_module_reads_the_environment():
    readers = []
    for path in provider_modules():
        for node in ast.walk(parsed(path)):
            if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                readers.append(f"{path.name}:{node.lineno}")
    assert {r.split(":")[0] for r in readers} <= {"base.py"}, readers


# --- custom I/O only through named hooks -----------------------------------------------------------

def test_no_provider_runs_its_own_io_outside_the_named_hooks():
    # execute() is the shared flow; only providers that never touch the network replace it.
    overriding = {cls.__name__ for cls in providers.CLASSES if "execute" in vars(cls)}
    assert overriding <= {"DemoProvider", "PalmProvider"}
    assert all(cls.local or cls.__name__ == "PalmProvider" for cls in providers.CLASSES if "execute" in vars(cls))
    hooked = {cls.__name__: [h for h in ("poll", "invoke") if getattr(cls, h) is not None]
              for cls in providers.CLASSES}
    assert hooked["ReplicateProvider"] == ["poll"]
    assert hooked["BedrockProvider"] == hooked["SageMakerProvider"] == ["invoke"]
    assert Provider.poll is None and Provider.invoke is None
    # ... and they reach the network only through the wire handle they are given.
    for path in provider_modules():
        touches = [node.lineno for node in ast.walk(parsed(path))
                   if isinstance(node, ast.Attribute) and node.attr == "transport"]
        assert not touches, f"{path.name} uses a transport directly (lines {touches})"


# --- one I/O error boundary: wire/ --------------------------------------------------------------------

@pytest.mark.parametrize("path", provider_modules(), ids=lambda p: p.name)
def test_no_provider_module_handles_socket_or_http_errors(path):
    tree = parsed(path)
    assert not io_imports(tree), f"{path.name} imports {io_imports(tree)}: map I/O errors in gateway/wire/"
    assert not io_handlers(tree), f"{path.name} catches {io_handlers(tree)}: map I/O errors in gateway/wire/"


def test_callback_sinks_send_through_wire():
    tree = parsed(GATEWAY_DIR / "telemetry" / "sinks.py")
    assert not io_imports(tree), "the callback sinks must send through gateway.wire.transport"


def test_the_checks_see_what_they_look_for():
    tree = ast.parse("import socket\nfrom urllib3.exceptions import HTTPError\n"
                     "def f():\n    from botocore import exceptions\n    try:\n        pass\n"
                     "    except (OSError, ValueError):\n        pass\n")
    assert io_imports(tree) == ["socket", "urllib3.exceptions", "urllib3.exceptions.HTTPError",
                                "botocore.exceptions"]
    assert io_handlers(tree) == ["OSError"]
