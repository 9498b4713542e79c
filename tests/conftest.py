"""Marks every test by where it lives, turns SIGTERM into a clean stop, and keeps torch's thread count
from leaking between tests: results that must match bit for bit (the in-process host against the
server) depend on it.

The folders, and the marker each gives its tests:

- ``tests/core``: ``core``, the pure library; needs no ComfyUI and no host (``pip install -e ".[test]"``,
  then ``pytest -m core``);
- ``tests/scripts``: ``scripts``, the host builder, test command and server launcher of ``scripts/``
  (standard library; a test that builds a venv is also marked ``slow``);
- ``tests/host``: ``host``, the pack inside the real ComfyUI of the test host (``python3 scripts/test.py``);
- ``tests/browser``: ``browser``, ComfyUI's own frontend in a real headless chromium (playwright) against a
  real server of the host: the shipped workflows dropped, run and shown (chromium from scripts/browser.py);
- ``tests/lint``: ``lint``, ruff (lint and format) and mypy over the repository.

The fixtures of a real ComfyUI (``comfy_server``, ``comfy_inproc``, ``tiny_checkpoint``, ...) live in
``tests/host/fixtures.py`` and are registered here, once, for tests/host and tests/browser alike.

Shared helpers are imported one way, by their full name from the repository root (pytest's
``pythonpath``): library helpers from ``tipai_core.testing``, host-test helpers from ``tests.host``
(``from tests.host.graphs import txt2img``; ``tests`` is a namespace package, no ``__init__.py``),
and the standalone scripts as top-level modules from ``scripts/`` (``import host``).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
FOLDER_MARKERS = {"core": "core", "scripts": "scripts", "host": "host", "browser": "browser", "lint": "lint"}
# One definition of each host fixture for every folder (see the module docstring).
pytest_plugins = ["tests.host.fixtures"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        part = Path(str(item.fspath)).resolve().relative_to(_HERE).parts[0]
        if part in FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, FOLDER_MARKERS[part]))


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


_DEFAULT_THREADS: int | None = None


def pytest_configure(config):
    global _DEFAULT_THREADS
    import tests

    found = [str(Path(p).resolve()) for p in getattr(tests, "__path__", [])]
    if str(_HERE) not in found:
        raise pytest.UsageError(
            f"`import tests` finds {found or tests}, not {_HERE}: another package "
            "named `tests` shadows this repository's tests/ on sys.path"
        )
    # SIGTERM (what scripts/test.py passes on, and what CI sends) stops the run as Ctrl-C does: pytest
    # tears every fixture down (the ComfyUI server among them) before it exits.
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    import torch

    _DEFAULT_THREADS = torch.get_num_threads()  # before any test or fixture can change it


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """After every test, torch runs with the thread count it started the session with (a test may lower
    it to 1 for speed on shared cores; see ``one_thread``)."""
    import torch

    yield
    if torch.get_num_threads() != _DEFAULT_THREADS:
        torch.set_num_threads(_DEFAULT_THREADS)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny tensors on the shared 2-core machine only gain contention
    from a second thread. Function-scoped on purpose: ``_restore_torch_threads`` resets the count after
    every test, so a module-scoped setting would hold for the first test only."""
    import torch

    torch.set_num_threads(1)
    yield
