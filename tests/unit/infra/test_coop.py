"""gevent helpers (gateway/infra/coop.py): what they say in a plain process and under monkey patching."""

import subprocess
import sys

from gateway.infra import coop


def test_a_plain_process_is_not_cooperative_and_never_imports_gevent_to_say_so():
    code = ("import sys\nfrom gateway.infra import coop\ncoop.let_others_run()\n"
            "print(coop.cooperative(), coop.patched('socket'), 'gevent' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False", "False"]


def test_under_monkey_patching_it_is_cooperative_and_yields_to_other_greenlets():
    code = ("from gevent import monkey\nmonkey.patch_all()\nimport gevent\nfrom gateway.infra import coop\n"
            "order = []\ng = gevent.spawn(order.append, 'other')\norder.append('before')\n"
            "coop.let_others_run()\norder.append('after')\ncoop.yield_now()\n"
            "print(coop.cooperative(), coop.patched('socket'), order)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "True True ['before', 'other', 'after']"


def test_patched_reads_gevents_own_answer(monkeypatch):
    class Monkey:
        @staticmethod
        def is_module_patched(name):
            return name == "threading"
    monkeypatch.setitem(sys.modules, "gevent.monkey", Monkey)
    assert coop.patched("threading") and coop.cooperative() and not coop.patched("socket")
