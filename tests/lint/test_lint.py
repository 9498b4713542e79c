"""Lint, format and type checks, run by the test command so CI fails on any of them.

ruff's rules and mypy's settings live in pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``); the same
checks run before a commit through .pre-commit-config.yaml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_check():
    proc = _run("ruff", "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format():
    proc = _run("ruff", "format", "--no-cache", "--check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_tipai_core():
    proc = _run("mypy", "--no-incremental", "--cache-dir=/dev/null")
    assert proc.returncode == 0, proc.stdout + proc.stderr
