"""The ShapesWorld auditor A_s: the tiny contrastive open_clip backbone + Stage A heads.

Stage A runs through the real trainer, ``train.scorer.train_scorer`` (what ``python -m
tipai_core.train scorer`` runs), on DETONATE-format pairs written here: Prompt, Chosen (a scene of the
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
from collections.abc import Callable
from pathlib import Path

import torch

from .clip import ARCH, CONFIG_DIR, train_clip
from .dataset import audit_pair, edit_pair, pair
from .grammar import parse

VAL_SEED = 1_000_000
# "audit": half in-place edits, most degraded like mid-sampling previews (dataset.audit_pair), what the
# loop's tournaments look like; "fresh": chosen and rejected scenes laid out apart, clean (dataset.pair)
PAIR_KINDS: dict[str, Callable[[int, int], tuple[str, torch.Tensor, torch.Tensor]]] = {
    "audit": audit_pair,
    "fresh": pair,
    # "local": in-place edits only, degraded by one draw for both (they differ only in the edited region):
    # what the learned editor trains on (chosen = the region as the prompt wants it)
    "local": edit_pair,
}


def write_pairs(path: Path, seeds, size: int, kind: str = "audit") -> Path:
    from ...auditor.data import write_pairs_parquet

    make = PAIR_KINDS[kind]
    rows = []
    for s in seeds:
        prompt, good, bad = make(s, size)
        kinds = {c.type for c in parse(prompt)}
        cat = "relation" if "relation" in kinds else "count" if "count" in kinds else "binding"
        rows.append({"Prompt": prompt, "Chosen": good, "Rejected": bad, "Category": cat})
    return write_pairs_parquet(path, rows)


def auditor_dir(root: Path | None = None, seed: int = 0) -> Path:
    """``<cache>/shapes/auditor`` for training seed 0, ``auditor-seed<N>`` for an independent one."""
    from .train import cache_root

    return Path(root or cache_root()) / "shapes" / ("auditor" if seed == 0 else f"auditor-seed{seed}")


def train_auditor(
    folder: Path,
    *,
    clip_steps: int = 1000,
    clip_batch: int = 64,
    n_pairs: int = 2000,
    n_val: int = 500,
    epochs: int = 20,
    size: int = 24,
    pairs: str = "audit",
    seed: int = 0,
    log=print,
) -> dict:
    """Contrastive backbone (if missing), pairs of ``pairs`` kind (``PAIR_KINDS``), then Stage A heads;
    returns the validation metrics (with the pair kind under "pairs"). ``seed`` seeds the backbone's
    initialisation and batches and the heads' training: another seed is an independently trained
    auditor on the same pairs (what referee inversion is checked against)."""
    from ...train.scorer import ScorerSettings, train_scorer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip = folder / "clip.safetensors"
    if not clip.is_file():
        train_clip(clip, steps=clip_steps, batch=clip_batch, size=size, seed=seed, log=log)
    tag = "" if pairs == "fresh" else f"-{pairs}"  # "fresh" keeps the first version's file names
    tr, va = folder / f"pairs-train{tag}.parquet", folder / f"pairs-val{tag}.parquet"
    if not tr.is_file():
        write_pairs(tr, range(n_pairs), size, pairs)
    if not va.is_file():
        write_pairs(va, range(VAL_SEED, VAL_SEED + n_val), size, pairs)
    heads = folder / "heads.safetensors"
    train_scorer(
        ScorerSettings(
            data=str(tr),
            val_data=str(va),
            backbone=str(clip),
            arch=ARCH,
            config_dir=str(CONFIG_DIR),
            classes="safe",
            out=str(heads),
            epochs=epochs,
            device="cpu",
            seed=seed,
        )
    )
    metrics_path = heads.with_suffix(".metrics.json")
    metrics = {**json.loads(metrics_path.read_text()), "pairs": pairs}
    metrics_path.write_text(json.dumps(metrics, indent=1))
    return metrics


def heads_pairs(folder: Path) -> str | None:
    """The pair kind the folder's heads were trained on ("fresh" for heads from before the field), or None."""
    m = Path(folder) / "heads.metrics.json"
    return json.loads(m.read_text()).get("pairs", "fresh") if m.is_file() else None


def load_auditor(folder: Path):
    """``auditor.Auditor`` from the folder's backbone and trained heads (local files only)."""
    from ...auditor.auditor import Auditor

    folder = Path(folder)
    return Auditor.from_files(
        folder / "clip.safetensors", arch=ARCH, heads=folder / "heads.safetensors", config_dir=CONFIG_DIR
    ).eval()
