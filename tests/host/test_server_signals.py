"""SIGTERM to the test command (as CI sends it on a timeout) stops the real ComfyUI server it started:
scripts/test.py passes the signal to pytest, pytest tears its fixtures down, the server's process
group is ended. Runs the test command once more, on tests/host/sigterm_probe.py (about 20 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.processes import alive, wait_gone

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigterm_to_the_test_command_stops_the_server(tmp_path):
    probe = tmp_path / "pids.json"
    log = tmp_path / "test_command.log"
    env = dict(os.environ, TIPAI_SIGTERM_PROBE=str(probe))
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "test.py"),
        "tests/host/sigterm_probe.py",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not probe.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert probe.exists(), f"the probe never saw its server:\n{log.read_text()[-4000:]}"
        pids = json.loads(probe.read_text())
        assert alive(pids["server"]) and alive(pids["pytest"])
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert wait_gone([pids["server"], pids["pytest"]], 10) == [], (
            f"the server or pytest outlived SIGTERM to the test command:\n{log.read_text()[-4000:]}"
        )
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
