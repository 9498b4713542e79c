"""Marks every test by where it lives (tests/core -> `core`, tests/host -> `host`), and keeps torch's
thread count from leaking between tests: results that must match bit for bit (the in-process host
against the server) depend on it."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        part = Path(str(item.fspath)).resolve().relative_to(_HERE).parts[0]
        if part in ("core", "host"):
            item.add_marker(getattr(pytest.mark, part))


_DEFAULT_THREADS: int | None = None


def pytest_configure(config):
    global _DEFAULT_THREADS
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
