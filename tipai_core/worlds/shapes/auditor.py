"""The ShapesWorld auditor A_s: the tiny contrastive open_clip backbone + Stage A heads.

Stage A runs through the real trainer, ``python -m tipai_core.train scorer`` (called in-process
via the dispatcher), on DETONATE-format pairs written here: Prompt, Chosen (a scene of the
prompt), Rejected (a scene of ``grammar.corrupt`` of it: a swapped binding, a reversed relation or
a wrong count), Category (the prompt's form; it names no policy class, so L_policy is unused).
Training pairs use seeds 0..n-1 of the pair stream, validation pairs seeds from 1_000_000, so the
printed held-out pair-AUC is on unseen scenes. One policy class, ``safe``, since the world has
nothing unsafe; the guard's τ_P is 0 here.

Files (all under ``<cache>/shapes/auditor/``): ``clip.safetensors`` (+ .json), ``pairs-train.parquet``,
``pairs-val.parquet``, ``heads.safetensors`` (+ .json, .metrics.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from .clip import ARCH, CONFIG_DIR, train_clip
from .dataset import pair
from .grammar import parse

VAL_SEED = 1_000_000


def write_pairs(path: Path, seeds, size: int) -> Path:
    from ...auditor.data import write_pairs_parquet

    rows = []
    for s in seeds:
        prompt, good, bad = pair(s, size)
        kinds = {c.type for c in parse(prompt)}
        cat = "relation" if "relation" in kinds else "count" if "count" in kinds else "binding"
        rows.append({"Prompt": prompt, "Chosen": good, "Rejected": bad, "Category": cat})
    return write_pairs_parquet(path, rows)


def auditor_dir(root: Path | None = None) -> Path:
    from .train import cache_root

    return Path(root or cache_root()) / "shapes" / "auditor"


def train_auditor(folder: Path, *, clip_steps: int = 1000, clip_batch: int = 64, n_pairs: int = 2000,
                  n_val: int = 500, epochs: int = 20, size: int = 24, log=print) -> dict:
    """Contrastive backbone (if missing), pairs, then Stage A heads; returns the validation metrics."""
    from ...train.__main__ import main as train_main

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / "clip.safetensors"
    if not clip.is_file():
        train_clip(clip, steps=clip_steps, batch=clip_batch, size=size, log=log)
    tr, va = folder / "pairs-train.parquet", folder / "pairs-val.parquet"
    if not tr.is_file():
        write_pairs(tr, range(n_pairs), size)
    if not va.is_file():
        write_pairs(va, range(VAL_SEED, VAL_SEED + n_val), size)
    heads = folder / "heads.safetensors"
    rc = train_main([
        "scorer", "--data", str(tr), "--val-data", str(va), "--backbone", str(clip), "--arch", ARCH,
        "--config-dir", str(CONFIG_DIR), "--classes", "safe", "--out", str(heads), "--epochs", str(epochs),
        "--device", "cpu", "--seed", "0",
    ])
    if rc:
        raise RuntimeError(f"Stage A (python -m tipai_core.train scorer) failed with exit status {rc}")
    return json.loads(heads.with_suffix(".metrics.json").read_text())


def load_auditor(folder: Path):
    """``auditor.Auditor`` from the folder's backbone and trained heads (local files only)."""
    from ...auditor.auditor import Auditor

    folder = Path(folder)
    return Auditor.from_files(folder / "clip.safetensors", arch=ARCH, heads=folder / "heads.safetensors",
                              config_dir=CONFIG_DIR).eval()
