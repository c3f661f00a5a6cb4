"""Debian packages some test suites drive (chromium for the UI, nginx for the cluster): installed when
missing, by root with apt-get (as .ci/run and a fresh machine are); otherwise a failure naming them."""

import os
import shutil
import subprocess

import pytest


def ensure(packages, executables):
    """Make sure every path in `executables` exists, installing `packages` with apt-get if needed."""
    if all(os.path.exists(path) for path in executables):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env)
    if not all(os.path.exists(path) for path in executables):
        pytest.fail(f"These tests need Debian's {' and '.join(packages)}: apt-get install {' '.join(packages)}")
