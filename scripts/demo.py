#!/usr/bin/env python3
"""The main job: build the host, start ComfyUI with the pack, run the shipped TiPAI workflow.

    python3 scripts/demo.py                      built-in default: the tiny random checkpoint + tiny auditor
    python3 scripts/demo.py --ckpt NAME          a checkpoint from this checkout's <instance>/models/checkpoints
    python3 scripts/demo.py --out DIR            where the image, overlay and report go (default ./out)

Besides the image, its overlay and the tournament log, it writes what the loop did in a form to look at:
``tipai_loop.png`` (the result, the overlay with accepted and rejected regions, and one strip per
tournament: the control and the N candidates with their scores S and utilities u, the winner framed)
and ``tipai_report.md`` (the run's summary and one line per tournament), and prints where they are.

Everything runs offline. With the built-in default the image is noise (random weights): the
run shows the mechanics (audits, tournaments, the guard) end to end, not a pretty picture.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import host  # this script's folder is first on sys.path
from comfy_server import ComfyError, ComfyServer

WORKFLOW = host.REPO / "workflows" / "api" / "tipai_txt2img.json"


def load_graph(ckpt: str) -> dict:
    graph = json.loads(WORKFLOW.read_text())
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = ckpt
    return graph


def summarise(entry: dict, server: ComfyServer, out: Path, seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    written, summary = [], None
    for outputs in entry["outputs"].values():
        for item in outputs.get("images", []) + outputs.get("tipai_logs", []):
            if item.get("type", "output") == "output":
                target = out / item["filename"]
            elif item["filename"].startswith("tipai_ksampler_loop"):
                target = out / "tipai_loop.png"  # the sampler node's own picture of the loop (a temp file)
            else:
                continue
            target.write_bytes(server.image_bytes(item))
            written.append(target)
        for rep in outputs.get("tipai_report", []):
            summary = rep
        for text in outputs.get("tipai_text", [])[:1]:
            if "TiPAI run" in text:
                (out / "tipai_report.md").write_text(text + "\n")
                written.append(out / "tipai_report.md")
    print(f"\nTiPAI demo finished in {seconds:.1f} s")
    if summary is not None:
        print(f"  audited steps:     {summary.get('audited_steps')}")
        print(f"  regions:           {summary.get('regions')}")
        print(f"  candidates:        {summary.get('candidates')}")
        print(f"  accepted edits:    {summary.get('accepted')}")
        print(
            f"  extra model calls: {summary.get('extra_model_calls')} "
            f"(plain sampling: {summary.get('base_model_calls')}, ratio {summary.get('extra_call_ratio')})"
        )
        print(f"  audit time:        {summary.get('seconds', 0):.2f} s")
    for path in sorted(set(written)):
        print(f"  wrote {path}")
    if out / "tipai_loop.png" in written:
        print(f"\n  what the loop did, as a picture: {out / 'tipai_loop.png'}")
        print(f"  and as text:                    {out / 'tipai_report.md'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--ckpt",
        default=host.TINY_CHECKPOINT,
        help="checkpoint name in this checkout's ComfyUI instance, <instance>/models/checkpoints "
        "(python3 scripts/host.py --instance prints the folder)",
    )
    ap.add_argument("--out", default="out", help="output folder (default ./out)")
    args = ap.parse_args(argv)
    try:
        host_dir = host.ensure_host()
    except host.StepFailed as exc:
        print(exc, file=sys.stderr)
        return 3
    graph = load_graph(args.ckpt)
    work = Path(tempfile.mkdtemp(prefix="tipai-demo-"))
    try:
        with host.in_use(host_dir):
            instance = host.install_pack(host_dir)
            host.make_default_models(host_dir, instance)
            with ComfyServer(host.venv_python(host_dir), host_dir / "ComfyUI", work, base_directory=instance) as server:
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
