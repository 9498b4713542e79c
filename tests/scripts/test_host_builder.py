"""The test command fails loudly, naming the step, when the host cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # it creates a venv before pip finds nothing


def test_unreachable_packages_fail_the_test_command_and_name_the_step(tmp_path):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    # No index and an empty wheel folder: as if PyPI were unreachable.
    env = dict(
        os.environ,
        TIPAI_CACHE=str(tmp_path / "cache"),
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(empty),
        PIP_CONFIG_FILE=os.devnull,
    )
    env.pop("TIPAI_HOST", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "test.py"), "-m", "core"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3
    assert "step 'install torch (CPU)' failed" in proc.stderr
    assert "no test ran" in proc.stderr
    # nothing half-built is taken for a host: only the .partial folder exists (besides the lock files)
    hosts = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("host-")]
    assert hosts and all(name.endswith(".partial") for name in hosts)
    assert {p.name for p in (tmp_path / "cache").iterdir()} - set(hosts) <= {"locks"}
