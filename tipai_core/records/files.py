"""Writing files so that nothing is ever left half-written: the one atomic writer of the library.

``atomic_write`` writes to a temporary file in the target's folder, flushes it to disk (fsync) and
renames it over the target. A reader, or a run killed at any moment, sees the old file or the new
one, never part of one. Every file the library writes (logs, reports, checkpoints, policies,
calibration files, trained weights) goes through it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], Any] | str | bytes) -> Path:
    """Write ``path`` atomically; ``write`` is the text, the bytes, or ``write(tmp_path)`` that writes them."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        if isinstance(write, str):
            tmp.write_text(write, encoding="utf-8", newline="\n")
        elif isinstance(write, bytes):
            tmp.write_bytes(write)
        else:
            write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
