"""Checkpoints of the trainers: a module, its optimizer, scheduler and RNG state, without pickle.

``epoch-NNNN.safetensors`` holds the tensors (the module under ``<key>.``, the optimizer moments, the
generator and torch RNG states); ``epoch-NNNN.json`` holds the rest (epoch, step, scheduler, optimizer
hyperparameters, the run fingerprint, and any extra JSON state of the trainer). Each file is written to
a temporary name and renamed; the JSON goes last and marks the checkpoint as complete, so a kill at any
moment leaves the previous complete checkpoint usable. Used by Stage A (scorer) and Stage B3 (tspo).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..records.files import atomic_write


def complete_checkpoints(folder: Path) -> list[Path]:
    """Stems of checkpoints whose two files both exist, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(j.with_suffix("") for j in folder.glob("epoch-*.json") if j.with_suffix(".safetensors").is_file())


def remove_checkpoints(folder: Path) -> None:
    """Delete every checkpoint of a finished run (markers first), and the folder when it is left empty."""
    folder = Path(folder)
    for stem in complete_checkpoints(folder):
        stem.with_suffix(".json").unlink(missing_ok=True)
        stem.with_suffix(".safetensors").unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def save_checkpoint(
    folder: Path,
    epoch: int,
    step: int,
    module: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
    fingerprint: dict[str, Any],
    keep: int = 2,
    *,
    fmt: str,
    key: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``epoch`` of ``module`` (tensors under ``<key>.``); keep the ``keep`` newest."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    opt_state = opt.state_dict()
    tensors = {f"{key}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    slots: dict[str, list[str]] = {}
    for pid, state in opt_state["state"].items():
        slots[str(pid)] = sorted(state)
        for name, value in state.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.generator"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "format": fmt,
        "epoch": epoch,
        "step": step,
        "fingerprint": fingerprint,
        "optimizer": {"param_groups": opt_state["param_groups"], "slots": slots},
        "scheduler": sched.state_dict() if sched is not None else None,
        "extra": extra or {},
    }
    stem = folder / f"epoch-{epoch:04d}"
    atomic_write(
        stem.with_suffix(".safetensors"),
        lambda t: save_file(tensors, str(t), metadata={"format": fmt, "epoch": str(epoch)}),
    )
    atomic_write(stem.with_suffix(".json"), lambda t: t.write_text(json.dumps(meta, indent=1)))
    for old in complete_checkpoints(folder)[: -max(1, keep)]:
        old.with_suffix(".json").unlink(missing_ok=True)  # marker first: a half-deleted one is never "complete"
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return stem


def load_checkpoint(
    stem: Path,
    module: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
    fingerprint: dict[str, Any],
    *,
    fmt: str,
    key: str,
    what: str = "training",
) -> tuple[int, int, dict[str, Any]]:
    """Restore module, optimizer, scheduler and RNG from ``stem``; returns (epoch, step, extra).

    Refuses a checkpoint of another format or of a run whose fingerprint differs, naming the settings.
    """
    from safetensors.torch import load_file

    stem = Path(stem)
    meta = json.loads(stem.with_suffix(".json").read_text())
    if meta.get("format") != fmt:
        raise ValueError(f"{stem}.json is not a {what} checkpoint (format={meta.get('format')!r})")
    differ = {k: (meta["fingerprint"].get(k), v) for k, v in fingerprint.items() if meta["fingerprint"].get(k) != v}
    if differ:
        raise ValueError(
            f"checkpoint {stem} belongs to another run; these settings differ "
            f"(checkpoint, now): {differ}. Use the same arguments or another --checkpoint-dir"
        )
    tensors = load_file(str(stem.with_suffix(".safetensors")), device="cpu")
    module.load_state_dict({k[len(key) + 1 :]: v for k, v in tensors.items() if k.startswith(key + ".")}, strict=True)
    device = next(module.parameters()).device
    state = {}
    for pid, names in meta["optimizer"]["slots"].items():
        # 'step' stays on the CPU as AdamW keeps it; moments go where the parameters are
        state[int(pid)] = {n: tensors[f"optim.{pid}.{n}"].to(device if n != "step" else "cpu") for n in names}
    groups = meta["optimizer"]["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})
    if sched is not None and meta.get("scheduler") is not None:
        sched.load_state_dict(meta["scheduler"])
    gen.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return int(meta["epoch"]), int(meta["step"]), meta.get("extra") or {}
