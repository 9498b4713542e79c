"""Marks every test by where it lives: tests/core -> `core`, tests/host -> `host`."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        part = Path(str(item.fspath)).resolve().relative_to(_HERE).parts[0]
        if part in ("core", "host"):
            item.add_marker(getattr(pytest.mark, part))
