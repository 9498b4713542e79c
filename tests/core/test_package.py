"""The package can be imported and its CLIs started without ComfyUI and without loading models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_FORBIDDEN = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_importing_the_pack_outside_comfyui_imports_no_comfy():
    # Import the repo root as a package, as ComfyUI would, but without ComfyUI on the path.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('tipai_pack', r'{REPO / '__init__.py'}',"
        f" submodule_search_locations=[r'{REPO}'])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['tipai_pack'] = m; spec.loader.exec_module(m)\n"
        "import tipai_core, tipai_core.train.__main__\n"
        f"bad = [n for n in {_FORBIDDEN!r} if n in sys.modules]\n"
        "heavy = [n for n in ('open_clip', 'lpips', 'onnxruntime') if n in sys.modules]\n"
        "assert callable(m.comfy_entrypoint)\n"
        "print(bad, heavy)\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] []"


def test_train_cli_lists_stages_and_rejects_unknown():
    ok = subprocess.run([sys.executable, "-m", "tipai_core.train", "--help"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0
    listed = [line.split()[0] for line in ok.stdout.split("stages:", 1)[1].splitlines() if line.strip()]
    assert listed == ["scorer", "editor", "tspo", "calibrate"]  # only stages that exist
    for stage in listed:  # every listed stage starts and explains itself
        helped = subprocess.run(
            [sys.executable, "-m", "tipai_core.train", stage, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert helped.returncode == 0, helped.stderr
        assert f"python -m tipai_core.train {stage}" in helped.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "tipai_core.train", "nonsense"], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "unknown stage 'nonsense'" in bad.stderr
