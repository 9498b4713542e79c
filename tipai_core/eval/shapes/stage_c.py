"""Stage C and offline TSPO on the calibration set's tournaments, and the TiPAI rows that use them.

The loop (fixed knobs, δ = 0) runs on ``calibration_set``, the checker labels every candidate, then the
library functions the commands ``python -m tipai_core.train calibrate`` and ``tspo offline`` run fit the
guard and the policy on that log. Cached under a key of everything they depend on (``stage_c_key``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...worlds.shapes.checker import Checker
from .runs import LabellingAuditor, run_tipai
from .settings import LEARNED_MINER, EvalSettings, Pieces, make_suite


def _weights_digest(path: Path) -> str:
    """sha256 of a safetensors file's tensors (names and bytes in name order): its header's metadata
    order varies between writes of the same weights, so the file's bytes do not key them."""
    import hashlib

    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        h.update(name.encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def stage_c_key(model_meta: dict, auditor_folder: Path, s: EvalSettings, n_calib: int, target: float) -> str:
    """What the fitted guard and policy depend on: the base model, the auditor's weights (backbone and
    heads), the loop's settings and the checker's version."""
    import hashlib

    from ...worlds.shapes.checker import CHECKER_VERSION

    blob = {
        "model": [model_meta["recipe"], model_meta["step"]],
        "n": n_calib,
        "target": target,
        "checker": CHECKER_VERSION,
        "miner": LEARNED_MINER,
        "auditor": [_weights_digest(Path(auditor_folder) / f) for f in ("clip.safetensors", "heads.safetensors")],
        "settings": {k: v for k, v in s.__dict__.items() if k != "n_prompts"},
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def fit_stage_c(
    model, s: EvalSettings, pieces: "Pieces", folder: Path, n_calib: int, target: float = 0.9, log=print
) -> tuple[Path, Path]:
    """Stage C and offline TSPO on the calibration set; returns (calibration file, policy file).

    1. the loop (fixed knobs, δ = 0) on ``calibration_set(n_calib)``, every candidate labelled by the
       checker, written to ``tournaments.records.jsonl`` (a .partial name until complete);
    2. Stage C (``python -m tipai_core.train calibrate``) on it -> ``calibration.json`` (+ reliability PNG);
    3. offline TSPO (``python -m tipai_core.train tspo offline``) on it -> ``policy.safetensors`` + ``.json``.
    Each output is reused when present.
    """
    from ...train.calibrate import fit_calibration
    from ...train.tspo import TSPOSettings, train_offline
    from ...worlds.shapes.evaluate import calibration_set

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    logs, cal, pol = folder / "tournaments.records.jsonl", folder / "calibration.json", folder / "policy.safetensors"
    if not logs.is_file():
        part = folder / "tournaments.partial"
        part.unlink(missing_ok=True)
        suite = make_suite(s, LabellingAuditor(pieces.auditor, Checker()), pieces.miner)
        r = run_tipai(model, calibration_set(n_calib), s, suite, part)
        part.rename(logs)
        log(f"calibration set: {n_calib} prompts, {r.tournaments} tournaments logged ({r.seconds:.0f}s)")
    if not cal.is_file():
        fit_calibration([logs], cal, target=target, auditor=pieces.judge)
    if not pol.with_suffix(".json").is_file():
        knobs = {k: list(v[0]) for k, v in s.knobs.items()}  # the policy draws the fixed knobs' values
        n_classes = len(getattr(pieces.auditor, "classes", ("safe",)))
        train_offline([logs], TSPOSettings(out=pol, knobs=knobs, n_classes=n_classes, beta=0.2, seed=0))
    return cal, pol


def calibrated_pieces(base: "Pieces", cal_path: Path, policy_path: Path | None) -> "Pieces":
    """The same auditor and miner with the Stage C guard and, when given, the TSPO policy."""
    from ...guard.calibrated_guard import calibrated_guard
    from ...guard.calibration_file import Calibration
    from ...policy.policy_net import PolicyNet

    cal = Calibration.load(cal_path)
    policy = PolicyNet.load(policy_path) if policy_path is not None else None
    return Pieces(base.auditor, base.miner, base.judge, policy=policy, guard=calibrated_guard(cal))
