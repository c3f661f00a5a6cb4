"""Anthropic's routes answer every error in Anthropic's envelope, those Flask raises before a view
runs (a wrong method, an unknown path under /anthropic) included; other routes keep OpenAI's."""

import pytest

from gateway.app import create_app
from gateway.config.settings import from_dict


@pytest.fixture
def client():
    return create_app(from_dict({"model_list": [{"model_name": "demo", "litellm_params": {"model": "demo/x"}}]})
                      ).test_client()


@pytest.mark.parametrize("method,path,status,kind", [
    ("GET", "/v1/messages", 405, "invalid_request_error"),
    ("POST", "/anthropic/v1/nothing", 404, "not_found_error"),
    ("POST", "/v1/messages", 400, "invalid_request_error"),  # no body
])
def test_anthropic_paths_answer_anthropics_envelope(client, method, path, status, kind):
    resp = client.open(path, method=method)
    assert resp.status_code == status
    assert resp.get_json()["type"] == "error" and resp.get_json()["error"]["type"] == kind


def test_other_paths_keep_openais_envelope(client):
    resp = client.get("/v1/chat/completions")
    assert resp.status_code == 405 and resp.get_json()["error"]["code"] == "method_not_allowed"
