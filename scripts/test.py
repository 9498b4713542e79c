#!/usr/bin/env python3
"""The test command: build (or reuse) the real ComfyUI test host, then run pytest in it.

    python3 scripts/test.py              everything: tests/core and tests/host
    python3 scripts/test.py -m core      the pure library only (no ComfyUI needed at test time)
    python3 scripts/test.py -k guard     any other pytest arguments pass through

If the host cannot be built (a package is unreachable, a checksum differs) this fails and
names the step; host tests never skip silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import host  # noqa: E402

NO_TESTS_COLLECTED = 5  # pytest's exit code when nothing ran


def main(argv: list[str]) -> int:
    t0 = time.time()
    try:
        host_dir = host.ensure_host()
    except host.StepFailed as exc:
        print(f"\n{exc}\nThe test host could not be built, so no test ran.", file=sys.stderr)
        return 3
    print(f"[test] host ready in {time.time() - t0:.0f} s: {host_dir}", flush=True)
    env = dict(os.environ, TIPAI_HOST=str(host_dir), PYTHONDONTWRITEBYTECODE="1")
    cmd = [str(host.venv_python(host_dir)), "-m", "pytest", *argv]
    rc = subprocess.call(cmd, cwd=host.REPO, env=env)
    if rc == NO_TESTS_COLLECTED:
        # A test command that runs nothing has not shown anything: report it as a failure.
        print("[test] pytest collected no tests for these arguments; failing on purpose.", file=sys.stderr)
        return 1
    print(f"[test] finished in {time.time() - t0:.0f} s (exit {rc})", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
