#!/usr/bin/env python3
"""The test command: build (or reuse) the real ComfyUI test host, then run pytest in it.

    python3 scripts/test.py              everything: tests/core, tests/scripts, tests/host and tests/browser
    python3 scripts/test.py -m core      the pure library only (no ComfyUI needed at test time)
    python3 scripts/test.py -k guard     any other pytest arguments pass through

If the host cannot be built (a package is unreachable, a checksum differs) this fails and
names the step; host tests never skip silently. The same goes for the browser tests' chromium,
which scripts/browser.py installs with apt when it is missing (a no-op when it is there).

The host is held in use while pytest runs (another checkout's build does not delete it), and
SIGTERM or SIGINT to this command is passed on to pytest, which then tears its fixtures down
(the ComfyUI server among them) before it exits. pytest runs in its own session, so a Ctrl-C
reaches it once, through here; if this command is killed outright, pytest gets SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import browser
import host  # this script's folder is first on sys.path
from comfy_server import die_with_parent

NO_TESTS_COLLECTED = 5  # pytest's exit code when nothing ran
FORWARDED = (signal.SIGTERM, signal.SIGINT)


_DIE_WITH_PARENT = die_with_parent()


def _child_setup() -> None:
    """In the child, before exec: the default action for the forwarded signals (a shell starts a
    background job with SIGINT ignored, and the child would inherit that), and SIGTERM when we die."""
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    if _DIE_WITH_PARENT is not None:
        _DIE_WITH_PARENT()


def run_forwarding_signals(cmd: list[str], **popen_kw) -> int:
    """Run ``cmd`` and wait for it, passing SIGTERM/SIGINT on to it; returns its exit code
    (128 + N when signal N ended it)."""
    proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_child_setup, **popen_kw)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        rc = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - rc if rc < 0 else rc


def _may_select_browser_tests(argv: list[str]) -> bool:
    """False only for a ``-m`` selection that cannot hold browser tests (``-m core``, ``-m lint``...), so those
    need no chromium; anything else may run them (the browser fixtures set chromium up again if needed)."""
    marks = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-m"]
    return not marks or any("browser" in m or "not" in m for m in marks)


def main(argv: list[str]) -> int:
    t0 = time.time()
    try:
        host_dir = host.ensure_host()
    except host.StepFailed as exc:
        print(f"\n{exc}\nThe test host could not be built, so no test ran.", file=sys.stderr)
        return 3
    print(f"[test] host ready in {time.time() - t0:.0f} s: {host_dir}", flush=True)
    if _may_select_browser_tests(argv):
        try:
            chromium, version = browser.ensure_chromium()
        except host.StepFailed as exc:
            print(f"\n{exc}\nThe browser tests' chromium could not be set up, so no test ran.", file=sys.stderr)
            return 3
        print(f"[test] browser ready: {chromium} ({version})", flush=True)
    env = dict(os.environ, TIPAI_HOST=str(host_dir), PYTHONDONTWRITEBYTECODE="1")
    cmd = [str(host.venv_python(host_dir)), "-m", "pytest", *argv]
    with host.in_use(host_dir):
        rc = run_forwarding_signals(cmd, cwd=host.REPO, env=env)
    if rc == NO_TESTS_COLLECTED:
        # A test command that runs nothing has not shown anything: report it as a failure.
        print("[test] pytest collected no tests for these arguments; failing on purpose.", file=sys.stderr)
        return 1
    print(f"[test] finished in {time.time() - t0:.0f} s (exit {rc})", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
