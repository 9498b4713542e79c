#!/usr/bin/env python3
"""The main job: build the host, start ComfyUI with the pack, run the shipped TiPAI workflow.

    python3 scripts/demo.py                      built-in default: the tiny random checkpoint + tiny auditor
    python3 scripts/demo.py --ckpt NAME          a checkpoint from the host's models/checkpoints
    python3 scripts/demo.py --out DIR            where the image, overlay and report go (default ./out)

Everything runs offline. With the built-in default the image is noise (random weights): the
run shows the mechanics (audits, tournaments, the guard) end to end, not a pretty picture.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import host  # noqa: E402
from comfy_server import ComfyError, ComfyServer  # noqa: E402

TINY_CKPT = "tipai_tiny_sd15.safetensors"
WORKFLOW = host.REPO / "workflows" / "api" / "tipai_txt2img.json"


def prepare_defaults(host_dir: Path) -> None:
    """Write the built-in default models (tiny checkpoint, tiny auditor) into the host if missing."""
    py = str(host.venv_python(host_dir))
    comfy = host_dir / "ComfyUI"
    subprocess.run([py, str(host.REPO / "scripts" / "tiny_checkpoint.py"), str(comfy),
                    str(comfy / "models" / "checkpoints" / TINY_CKPT)], check=True, stdout=subprocess.DEVNULL)
    tiny_auditor = host.REPO / "scripts" / "tiny_auditor.py"
    if tiny_auditor.is_file():
        subprocess.run([py, str(tiny_auditor), str(comfy / "models" / "tipai")], check=True, stdout=subprocess.DEVNULL)


def load_graph(ckpt: str) -> dict:
    if WORKFLOW.is_file():
        graph = json.loads(WORKFLOW.read_text())
    else:  # before the TiPAI workflow exists: the host smoke graph
        sys.path.insert(0, str(host.REPO / "tests" / "host"))
        from graphs import txt2img

        graph = txt2img(TINY_CKPT, seed=7)
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = ckpt
    return graph


def summarise(entry: dict, server: ComfyServer, out: Path, seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    written, summary = [], None
    for outputs in entry["outputs"].values():
        for item in outputs.get("images", []) + outputs.get("tipai_logs", []):
            if item.get("type", "output") != "output":
                continue
            target = out / item["filename"]
            target.write_bytes(server.image_bytes(item))
            written.append(target)
        for rep in outputs.get("tipai_report", []):
            summary = rep
    print(f"\nTiPAI demo finished in {seconds:.1f} s")
    if summary is not None:
        print(f"  audited steps:     {summary.get('audited_steps')}")
        print(f"  regions:           {summary.get('regions')}")
        print(f"  candidates:        {summary.get('candidates')}")
        print(f"  accepted edits:    {summary.get('accepted')}")
        print(f"  extra model calls: {summary.get('extra_model_calls')} "
              f"(plain sampling: {summary.get('base_model_calls')}, ratio {summary.get('extra_call_ratio')})")
        print(f"  audit time:        {summary.get('seconds', 0):.2f} s")
    for path in sorted(set(written)):
        print(f"  wrote {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=TINY_CKPT, help="checkpoint name in the host's models/checkpoints")
    ap.add_argument("--out", default="out", help="output folder (default ./out)")
    args = ap.parse_args(argv)
    try:
        host_dir = host.ensure_host()
    except host.StepFailed as exc:
        print(exc, file=sys.stderr)
        return 3
    prepare_defaults(host_dir)
    graph = load_graph(args.ckpt)
    work = Path(tempfile.mkdtemp(prefix="tipai-demo-"))
    try:
        with ComfyServer(host.venv_python(host_dir), host_dir / "ComfyUI", work) as server:
            t0 = time.time()
            entry = server.run(graph, timeout=600)
            summarise(entry, server, Path(args.out).resolve(), time.time() - t0)
    except ComfyError as exc:
        print(f"TiPAI demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
