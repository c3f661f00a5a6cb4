"""HTTPS upstreams from a gevent worker started by the CLI (the ssl module must be patched in time)."""

import ssl
import subprocess

import openai
import pytest

from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.integration

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def tls_fake(tmp_path):
    """The fake OpenAI upstream behind TLS, with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    fake = FakeOpenAI()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    fake._server.socket = context.wrap_socket(fake._server.socket, server_side=True)
    with fake:
        yield fake, cert


def test_https_upstream_with_private_ca(start_gateway, tls_fake):
    fake, cert = tls_fake
    base = f"https://127.0.0.1:{fake.port}/v1"
    config = {"model_list": [{"model_name": "tls", "litellm_params": {
        "model": "openai/gpt-4o", "api_base": base, "api_key": fake.api_key}}]}
    gw = start_gateway(config, env={"SSL_CERT_FILE": str(cert)})
    client = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    assert client.chat.completions.create(model="tls", messages=HELLO).choices[0].message.content
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model="tls", messages=HELLO, stream=True) if c.choices)
    assert text == "Hello from fake upstream: hello there"
    assert "MonkeyPatchWarning" not in gw.log() and "RecursionError" not in gw.log()


def test_https_upstream_with_unknown_certificate_is_a_502(start_gateway, tls_fake):
    fake, _cert = tls_fake
    config = {"model_list": [{"model_name": "tls", "litellm_params": {
        "model": "openai/gpt-4o", "api_base": f"https://127.0.0.1:{fake.port}/v1", "api_key": fake.api_key}}]}
    gw = start_gateway(config)
    client = openai.OpenAI(base_url=gw.url, api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="tls", messages=HELLO)
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_connection_error"
