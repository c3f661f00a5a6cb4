"""curl_command: a runnable debug line with every secret header masked entirely; display_url and the
Basic credentials of an api_base."""

import base64
import shlex

import pytest

from gateway.providers.base import UpstreamRequest
from gateway.wire.transport import curl_command
from gateway.wire.transport import display_url
from gateway.wire.transport import split_credentials
from gateway.wire.transport import with_basic_auth

SECRET = "sk-proj-SECRETvalue0123456789"


@pytest.mark.parametrize("header, value", [
    ("Authorization", f"Bearer {SECRET}"),
    ("authorization", f"Bearer {SECRET}"),
    ("api-key", SECRET),
    ("API-Key", SECRET),
    ("x-api-key", SECRET),
    ("X-Api-Key", SECRET),
    ("x-goog-api-key", SECRET),
    ("Proxy-Authorization", f"Basic {SECRET}"),
    ("Ocp-Apim-Subscription-Key", SECRET),
    ("Cookie", f"session={SECRET}"),
])
def test_secret_headers_are_masked_entirely(header, value):
    req = UpstreamRequest("POST", "https://api.example.com/v1/chat/completions",
                          {"Content-Type": "application/json", header: value}, b'{"model": "m"}')
    out = curl_command(req)
    parts = shlex.split(out)
    assert f"{header}: ****" in parts
    # No part of the key survives, not even a prefix or suffix.
    for fragment in (SECRET, SECRET[:8], SECRET[-6:], "SECRET", "Bearer"):
        assert fragment not in out


def test_output_splits_back_into_the_same_parts():
    body = '{"messages": [{"role": "user", "content": "it\'s \\"quoted\\" $HOME `id` ; rm -rf / \\n héllo 🌍"}]}'
    req = UpstreamRequest("POST", "https://h.example/v1/x?api-version=2024-02-01&a=b c",
                          {"Content-Type": "application/json", "X-Note": "a 'b' \"c\" $d",
                           "api-key": SECRET},
                          body.encode())
    assert shlex.split(curl_command(req)) == [
        "curl", "-X", "POST", "https://h.example/v1/x?api-version=2024-02-01&a=b c",
        "-H", "Content-Type: application/json",
        "-H", "X-Note: a 'b' \"c\" $d",
        "-H", "api-key: ****",
        "-d", body,
    ]


def test_no_body_no_data_flag():
    req = UpstreamRequest("GET", "https://h/v1/models", {"Authorization": f"Bearer {SECRET}"})
    assert shlex.split(curl_command(req)) == ["curl", "-X", "GET", "https://h/v1/models",
                                              "-H", "Authorization: ****"]


def test_non_secret_headers_are_shown():
    req = UpstreamRequest("POST", "https://h", {"OpenAI-Organization": "org-1", "X-Team": "t"}, b"{}")
    parts = shlex.split(curl_command(req))
    assert "OpenAI-Organization: org-1" in parts
    assert "X-Team: t" in parts


def test_non_utf8_body_does_not_crash():
    req = UpstreamRequest("POST", "https://h", {}, b'{"a": "\xff"}')
    parts = shlex.split(curl_command(req))
    assert parts[-2] == "-d"
    assert parts[-1].startswith('{"a": "')


# --- upstream addresses for humans, and credentials in them (issue #11 item 6) ---------------------

@pytest.mark.parametrize("url, shown", [
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("http://user:p4ss@127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ("http://token@host/v1/", "http://host/v1/"),
    ("https://u:p%40ss@[::1]:443/x#frag", "https://[::1]:443/x"),
    ("https://h/v1?key=AIzaSECRET&alt=sse", "https://h/v1?key=****&alt=sse"),
    ("https://h/x?api-version=2024-02-01&api-key=SECRET", "https://h/x?api-version=2024-02-01&api-key=****"),
    ("https://h/x?sv=1&sig=SECRET%3D&X-Amz-Security-Token=T", "https://h/x?sv=1&sig=****&X-Amz-Security-Token=****"),
    ("localhost:11434", "localhost:11434"),
    (None, None),
    ("", ""),
])
def test_display_url(url, shown):
    assert display_url(url) == shown


def test_split_credentials():
    clean, auth, secrets = split_credentials("http://us%3Aer:p%40ss-word@127.0.0.1:9/v1?a=b")
    assert clean == "http://127.0.0.1:9/v1?a=b"
    assert auth == "Basic " + base64.b64encode(b"us:er:p@ss-word").decode()
    assert "p@ss-word" in secrets and "p%40ss-word" in secrets and auth.split()[1] in secrets
    assert split_credentials("https://h/v1/models/a@b") == ("https://h/v1/models/a@b", None, ())
    assert split_credentials("http://only-user@h/v1")[1] == "Basic " + base64.b64encode(b"only-user:").decode()


def test_with_basic_auth_replaces_any_authorization_and_strips_the_url():
    req = UpstreamRequest("POST", "http://u:pw-secret@h:1/v1/chat/completions",
                          {"authorization": f"Bearer {SECRET}", "x-api-key": "k"}, b"{}")
    sent = with_basic_auth(req, "Basic dTpwdy1zZWNyZXQ=")
    assert sent.url == "http://h:1/v1/chat/completions"
    assert sent.headers == {"x-api-key": "k", "Authorization": "Basic dTpwdy1zZWNyZXQ="}
    assert req.headers["authorization"] == f"Bearer {SECRET}"  # the deployment's own request is untouched


def test_curl_command_never_shows_url_credentials():
    req = UpstreamRequest("POST", "http://u:pw-secret@h:1/v1?key=AIzaSECRET", {}, b"{}")
    out = curl_command(req)
    assert "pw-secret" not in out and "AIzaSECRET" not in out and "http://h:1/v1?key=****" in out
