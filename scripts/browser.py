#!/usr/bin/env python3
"""Make sure the real browser of the browser tests (tests/browser) is on this machine.

Usage:  python3 scripts/browser.py    install Debian's chromium if missing, print its path and version

The browser tests drive ComfyUI's frontend with Python playwright (installed in the test host by
scripts/host-requirements.txt). playwright never downloads a browser here (no ``playwright install``):
it launches Debian's ``chromium`` at ``/usr/bin/chromium``, installed by this script with apt when it
is missing (``apt-get update`` runs only when apt has no package lists yet). Launch it with
``LAUNCH_ARGS``: without the background-networking flags chromium keeps calling out, and on a closed
network that is a flood of refused connections.

Only the standard library is used here, as in scripts/host.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from host import StepFailed  # this script's folder is first on sys.path

CHROMIUM = Path("/usr/bin/chromium")
APT_PACKAGE = "chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root in containers, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What apt says when it has no package lists (a fresh container): only then is `apt-get update` worth it.
_NO_LISTS = ("Unable to locate package", "has no installation candidate")


def _apt(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"[browser] apt-get {' '.join(args)}", flush=True)
    return subprocess.run(
        ["apt-get", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, check=False
    )


def _tail(proc: subprocess.CompletedProcess, lines: int = 25) -> str:
    return "\n".join(proc.stdout.strip().splitlines()[-lines:])


def install_chromium() -> None:
    if shutil.which("apt-get") is None:
        raise StepFailed("install chromium", f"{CHROMIUM} is missing and there is no apt-get; install chromium by hand")
    if os.geteuid() != 0:
        raise StepFailed(
            "install chromium",
            f"{CHROMIUM} is missing; as root run: apt-get install -y --no-install-recommends {APT_PACKAGE}",
        )
    install = ["install", "-y", "--no-install-recommends", APT_PACKAGE]
    proc = _apt(install)
    if proc.returncode != 0 and any(s in proc.stdout for s in _NO_LISTS):
        update = _apt(["update"])
        if update.returncode != 0:
            raise StepFailed("apt-get update", f"exit code {update.returncode}\n{_tail(update)}")
        proc = _apt(install)
    if proc.returncode != 0:
        raise StepFailed("install chromium", f"apt-get exit code {proc.returncode}\n{_tail(proc)}")
    if not CHROMIUM.is_file():
        raise StepFailed("install chromium", f"apt-get installed {APT_PACKAGE} but {CHROMIUM} does not exist")


def chromium_version(path: Path) -> str:
    proc = subprocess.run(
        [str(path), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise StepFailed("run chromium --version", f"exit code {proc.returncode}\n{_tail(proc)}")
    return proc.stdout.strip().splitlines()[-1]


def ensure_chromium() -> tuple[Path, str]:
    """Install chromium if it is missing; return its path and its version line. A no-op when present."""
    if not CHROMIUM.is_file():
        install_chromium()
    return CHROMIUM, chromium_version(CHROMIUM)


def main() -> int:
    try:
        path, version = ensure_chromium()
    except StepFailed as exc:
        print(str(exc), file=sys.stderr)
        return 3
    print(f"{path} ({version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
