"""The engine modules import no ComfyUI and only relative imports inside tipai_core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE = [
    "protocols", "diffusion", "analytic", "ddim", "sampler", "masks", "regions", "schedules", "blend",
    "audit_schedule", "actions", "editor", "guard", "costs", "record", "preview", "loop", "synthetic",
]
FORBIDDEN = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "execution", "nodes"}


def test_engine_sources_use_relative_imports_and_no_comfy():
    for name in ENGINE:
        tree = ast.parse((REPO / "tipai_core" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert "tipai_core" not in roots, f"{name}.py imports tipai_core absolutely"
            assert not roots & FORBIDDEN, f"{name}.py imports {roots & FORBIDDEN}"


def test_engine_imports_as_a_subpackage_of_the_pack(tmp_path):
    # the ComfyUI pack imports the library as <pack>.tipai_core
    pack = tmp_path / "somepack"
    pack.mkdir()
    (pack / "__init__.py").write_text("")
    (pack / "tipai_core").symlink_to(REPO / "tipai_core")
    mods = ", ".join(f"somepack.tipai_core.{m}" for m in ENGINE)
    code = (
        f"import sys; sys.path.insert(0, r'{tmp_path}')\n"
        f"import {mods}\n"
        "from somepack.tipai_core.loop import sample_with_audits, audit_step\n"
        f"bad = sorted(n for n in sys.modules if n.split('.')[0] in {sorted(FORBIDDEN)!r} or n == 'tipai_core')\n"
        "print(bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_shipped_implementations_satisfy_the_loop_protocols():
    from tipai_core import protocols as pr
    from tipai_core.synthetic import make_world, world_suite

    world = make_world("eps")
    suite = world_suite(world)
    pairs = [
        (world.denoiser, pr.Denoiser), (suite.decoder, pr.AuditDecoder), (suite.miner, pr.Miner),
        (suite.auditor, pr.Auditor), (suite.editor, pr.Editor), (suite.policy, pr.Policy), (suite.guard, pr.Guard),
    ]
    for obj, proto in pairs:
        assert isinstance(obj, proto), f"{type(obj).__name__} is not a {proto.__name__}"
    assert not isinstance(world.denoiser, pr.Auditor)
