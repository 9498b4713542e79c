"""Importing the auditor and the Stage A trainer loads no model and no heavy or host package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_import_is_light_and_host_free():
    code = (
        "import sys, tipai_core.auditor, tipai_core.train.scorer, tipai_core.auditor.data, "
        "tipai_core.auditor.seam, tipai_core.auditor.metrics\n"
        "bad = [m for m in ('open_clip', 'transformers', 'lpips', 'pandas', 'comfy', 'folder_paths', "
        "'nodes', 'server', 'execution', 'comfy_api') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_no_absolute_tipai_core_imports():
    pkg = ROOT / "tipai_core"
    offenders = [
        str(p)
        for p in list((pkg / "auditor").rglob("*.py")) + [pkg / "train" / "scorer.py"]
        if "from tipai_core" in p.read_text() or "import tipai_core" in p.read_text()
    ]
    assert offenders == []
