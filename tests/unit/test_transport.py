"""curl_command: a runnable debug line with every secret header masked entirely."""

import shlex

import pytest

from gateway.providers.base import UpstreamRequest
from gateway.transport import curl_command

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
