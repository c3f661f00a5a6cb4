"""Fixtures that run the gateway as a real gunicorn + gevent process in front of fake upstreams."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.fakes.openai_server import FakeOpenAI

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30


def free_port():
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gateway_command():
    """The installed `gateway` console script (the way users start it), else the module."""
    exe = shutil.which("gateway")
    return [exe] if exe else [sys.executable, "-m", "gateway.cli"]


class GatewayProcess:
    """One gateway started through its CLI (or gunicorn directly), stopped with its process group."""

    def __init__(self, args, env, log_path, port, command=None):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        # Each gateway's key store (opened only with a master key) lives beside its log.
        full_env = {"DATABASE_URL": f"sqlite:///{Path(log_path).parent / 'gateway.sqlite'}", **os.environ, **env}
        self._log = open(log_path, "wb")
        cmd = command or gateway_command() + list(args) + ["--host", "127.0.0.1", "--port", str(port)]
        self.proc = subprocess.Popen(cmd, env=full_env, cwd=REPO, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout=READY_TIMEOUT):
        """Poll readiness until 200; fail with the process log if it dies or never gets ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health/readiness", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"gateway not ready after {timeout}s:\n{self.log()}")

    def log(self):
        """Everything the process wrote so far (all of it once stopped)."""
        if not self._log.closed:
            self._log.flush()
        return Path(self.log_path).read_text(errors="replace")

    def stop(self):
        """Quick shutdown (SIGINT) of the whole group, SIGKILL if it lingers.

        gunicorn's graceful SIGTERM waits out idle keep-alive connections the SDK clients hold.
        """
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self._log.close()


@pytest.fixture(scope="session")
def fake_openai():
    """One fake OpenAI/Azure upstream for the whole session."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _clean_fake(request):
    """Each test sees only its own upstream requests."""
    if "fake_openai" in request.fixturenames:
        request.getfixturevalue("fake_openai").reset()
    yield


@pytest.fixture
def start_gateway(tmp_path_factory):
    """Start gateways for a test: start_gateway(config=dict|path, args=[...], env={...})."""
    started = []

    def start(config=None, args=(), env=None, command=None, ready=True):
        tmp = tmp_path_factory.mktemp("gw")
        argv = list(args)
        if isinstance(config, dict):
            path = tmp / "config.yaml"
            path.write_text(yaml.safe_dump(config))
            argv = ["--config", str(path)] + argv
        elif config is not None:
            argv = ["--config", str(config)] + argv
        port = free_port()
        if command is not None:
            command = [part.format(port=port) for part in command]
        gw = GatewayProcess(argv, env or {}, tmp / "gateway.log", port, command=command)
        started.append(gw)
        return gw.wait_ready() if ready else gw

    yield start
    for gw in started:
        gw.stop()


def config_gateway(folder, config, env=None, workers=2):
    """A started gateway (for module-scoped fixtures) whose config is the mapping `config`, written
    to `folder`; its log beside it. The caller stops it."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return GatewayProcess(["--config", str(path), "--num_workers", str(workers)], env or {}, folder / "gw.log",
                          free_port()).wait_ready()


def admin_call(gateway, master_key, method, path, **kwargs):
    """A management call with the master key that must answer 200: its JSON."""
    resp = requests.request(method, gateway.url + path, headers={"Authorization": f"Bearer {master_key}"},
                            timeout=30, **kwargs)
    assert resp.status_code == 200, resp.text
    return resp.json()


def ledger_row(gateway, master_key, request_id, timeout=10):
    """The spend ledger's row of one request (through /spend/logs), once the flusher has written it."""
    deadline = time.monotonic() + timeout
    while not (rows := admin_call(gateway, master_key, "GET", "/spend/logs", params={"request_id": request_id})):
        assert time.monotonic() < deadline, f"no spend row for {request_id} after {timeout}s"
        time.sleep(0.05)
    return rows[0]


def openai_config(fake, *, master_key=None, extra_models=(), **litellm_settings):
    """A LiteLLM-style config with an OpenAI deployment, an Azure one and the fake's trigger models."""
    models = [
        {"model_name": "gpt-3.5-turbo",
         "litellm_params": {"model": "openai/gpt-3.5-turbo", "api_base": fake.url + "/v1",
                            "api_key": fake.api_key}},
        {"model_name": "azure-gpt",
         "litellm_params": {"model": "azure/my-deployment", "api_base": fake.url,
                            "api_key": fake.azure_key, "api_version": "2024-02-01"}},
        {"model_name": "text-embedding-3-small",
         "litellm_params": {"model": "openai/text-embedding-3-small", "api_base": fake.url + "/v1",
                            "api_key": fake.api_key}},
    ]
    for name in ("fail-400", "fail-401", "fail-403", "fail-404", "fail-429", "fail-500", "fail-503",
                 "context-length", "slow", "slow-stream", "stream-error", "malformed"):
        models.append({"model_name": name, "litellm_params": {
            "model": f"openai/{name}", "api_base": fake.url + "/v1", "api_key": fake.api_key}})
    models.extend(extra_models)
    config = {"model_list": models, "litellm_settings": dict(litellm_settings)}
    if master_key:
        config["general_settings"] = {"master_key": master_key}
    return config


def expect_error(client, model, messages, exc, *, absent, status=None, fragment=None, code=None,
                 retry_after=None):
    """Call `model` through the OpenAI SDK and check the gateway's error: the SDK exception class,
    HTTP status, a fragment of the message, the OpenAI `code`, the Retry-After header, and that
    none of `absent` (keys, tracebacks, upstream HTML) is in the answer. Returns the exception."""
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=model, messages=messages)
    err = info.value
    if status is not None:
        assert err.status_code == status
    if fragment is not None:
        assert fragment in (err.body.get("message", "") if isinstance(err.body, dict) else err.message)
    if code is not None:
        assert err.code == code
    if retry_after is not None:
        assert err.response.headers.get("retry-after") == retry_after
    for text in absent:
        assert text not in err.response.text
    return err
