"""`gateway --config` with a bad value: exit 2 and one line naming the key, never a traceback."""

import os
import signal
import subprocess

import pytest
import yaml

from tests.integration.conftest import REPO
from tests.integration.conftest import free_port
from tests.integration.conftest import gateway_command

pytestmark = pytest.mark.integration

DEMO = [{"model_name": "demo", "litellm_params": {"model": "demo/echo"}}]


@pytest.mark.parametrize("general, env, line", [
    ({"background_health_checks": True, "health_check_interval": "soon"}, {},
     "general_settings.health_check_interval: must be a positive number of seconds"),
    ({"disable_spend_logs": "os.environ/T_SPEND_OFF"}, {"T_SPEND_OFF": "maybe"},
     "general_settings.disable_spend_logs: must be true or false"),
    ({"default_key_duration": "soon"}, {},
     "general_settings.default_key_duration: must look like 30s, 30m (30min), 30h, 30d, or be \"never\""),
    ({"master_key": "sk-master-0123456789", "maximum_spend_logs_retention_period": "never"}, {},
     "general_settings.maximum_spend_logs_retention_period: must be a duration like 30s, 30m (30min), 30h, "
     "30d (at least 1s)"),
])
def test_a_bad_value_exits_2_with_a_line_naming_the_key(tmp_path, general, env, line):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model_list": DEMO, "general_settings": general}))
    proc = subprocess.Popen(gateway_command() + ["--config", str(path), "--port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **env}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it started serving: stop the whole process group
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    assert proc.returncode == 2, out + err
    assert err == f"gateway: config error:\n  {line}\n"
