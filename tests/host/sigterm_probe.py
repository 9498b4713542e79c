"""Run only by tests/host/test_server_signals.py (the name does not match test_*.py, so pytest does not
collect it otherwise): it starts the real ``comfy_server`` fixture, says which PIDs to watch, and waits
to be stopped by a signal."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def test_hold_the_server_until_a_signal(comfy_server):
    probe = Path(os.environ["TIPAI_SIGTERM_PROBE"])
    tmp = probe.with_suffix(".tmp")
    tmp.write_text(json.dumps({"server": comfy_server.pid, "pytest": os.getpid()}))
    tmp.replace(probe)
    time.sleep(300)
