"""The packages a chat call visits, in order (issue #12): counted, printed, and kept from growing.

One non-streamed chat call with a virtual key, through the Flask app, to the fake OpenAI upstream on
loopback. A profiler follows control as it enters and leaves gateway code; each frame belongs to
its package (app.py counts as api/; errors, config/, infra/ and data/ are shared building blocks,
not layers). A call into another package that calls nothing further in gateway (a property, a pure
helper) is a look, not a visit, and is left out. What remains is the path a maintainer follows;
every change of package along it, returns included, is a layer change (the issue counted 19 for
the flat layout with the same rule).

`python -m pytest tests/unit/test_call_path.py -s` prints the path.
"""

import inspect
import os
import sys

import pytest

from gateway.app import create_app
from gateway.config.settings import from_dict
from tests.fakes.openai_server import FakeOpenAI

GATEWAY_DIR = os.path.dirname(inspect.getfile(create_app)) + os.sep
SHARED = {"errors", "config", "infra", "data", "__init__"}
MASTER = "sk-master-callpath-0123456789"
MAX_LAYER_CHANGES = 15  # may only shrink


def package_of(filename):
    """The layer a source file belongs to, or None (not gateway code, or a shared building block)."""
    if not filename.startswith(GATEWAY_DIR):
        return None
    head = filename[len(GATEWAY_DIR):].split(os.sep)[0]
    name = head[:-3] if head.endswith(".py") else head
    name = "api" if name == "app" else name
    return None if name in SHARED else name


def trace(fn):
    """Run fn() under a profiler: the (event, frame id, package, function) of gateway frames."""
    events = []

    def innermost(frame):
        while frame is not None:
            found = package_of(frame.f_code.co_filename)
            if found is not None:
                return found
            frame = frame.f_back
        return None

    def profile(frame, event, _arg):
        if event == "call":
            found = package_of(frame.f_code.co_filename)
            if found is not None:
                events.append(("call", id(frame), found, frame.f_code.co_name))
        elif event == "return" and package_of(frame.f_code.co_filename) is not None:
            found = innermost(frame.f_back)
            if found is not None:
                events.append(("return", id(frame), found, frame.f_code.co_name))
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return events


def visits(events):
    """The packages in the order control visits them, leaf calls (looks) left out."""
    kept, open_calls = [], []  # open_calls: [index in kept, has a child call]
    for event in events:
        if event[0] == "call":
            if open_calls:
                open_calls[-1][1] = True
            open_calls.append([len(kept), False])
            kept.append(event)
            continue
        if open_calls and kept[open_calls[-1][0]][1] == event[1]:
            index, has_child = open_calls.pop()
            if not has_child:
                del kept[index:]
                continue
        kept.append(event)
    path = []
    for event in kept:
        if not path or path[-1] != event[2]:
            path.append(event[2])
    return path


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI() as fake:
        yield fake


def test_a_chat_calls_path_through_the_packages(upstream, tmp_path):
    settings = from_dict({
        "model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/gpt-4o", "api_base": upstream.url + "/v1", "api_key": upstream.api_key}}],
        "general_settings": {"master_key": MASTER, "database_url": f"sqlite:///{tmp_path / 'keys.sqlite'}",
                             "spend_spool_dir": str(tmp_path / "spool")}})
    app = create_app(settings)
    client = app.test_client()
    key = client.post("/key/generate", json={}, headers={"Authorization": f"Bearer {MASTER}"}).get_json()["key"]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(2):  # warm: imports, the key cache, the connection pool
        client.post("/v1/chat/completions", json=body, headers=headers).close()

    def one_call():
        resp = client.post("/v1/chat/completions", json=body, headers=headers)
        assert resp.status_code == 200
        resp.get_data()
        resp.close()  # the row and the observers, as gunicorn closes the response
    path = visits(trace(one_call))
    print(f"\n{len(path) - 1} layer changes: " + " -> ".join(path))
    assert path[0] == "api" and "routing" in path and "providers" in path and "wire" in path
    assert path.index("routing") < path.index("providers") < path.index("wire")
    assert len(path) - 1 <= MAX_LAYER_CHANGES, " -> ".join(path)
    app.extensions["gateway"].store.get().engine.dispose()
