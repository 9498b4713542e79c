"""Which piece limits the loop: the learned or the oracle auditor and miner, in every combination."""

from __future__ import annotations

from pathlib import Path

import torch

from ...worlds.shapes.checker import Checker
from .runs import LabellingAuditor, run_tipai
from .settings import EvalSettings, make_suite


def diagnose(model, s: EvalSettings, pairs: dict, n: int, folder: Path, log=print) -> list[dict]:
    """Which piece limits the loop: for each label -> (auditor, miner), the loop (fixed knobs, δ = 0) on
    n prompts of the calibration set with checker labels, and per candidate: the true-win rate, the share
    of tournaments that hold a true winner (what the miner and editor make possible) and the ROC-AUC of
    the auditor's margin S_i - S_0 for a true win (how well it ranks them). Logs go to ``folder``."""
    from ...auditor.metrics import roc_auc
    from ...records.tournament_log import iter_records
    from ...worlds.shapes.evaluate import calibration_set

    out = []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for label, (auditor, miner) in pairs.items():
        path = folder / f"diagnose-{label}.records.jsonl"
        path.unlink(missing_ok=True)
        r = run_tipai(model, calibration_set(n), s, make_suite(s, LabellingAuditor(auditor, Checker()), miner), path)
        m, y, has = [], [], []
        for rec in iter_records([path]):
            wins = rec.true_win
            assert wins is not None  # the labelling auditor labelled every tournament it logged
            has.append(any(wins[1:]))
            for i in range(1, len(rec.actions) + 1):
                m.append(rec.scores["S"][i] - rec.scores["S"][0])
                y.append(bool(wins[i]))
        auc = roc_auc(torch.tensor(m), torch.tensor(y)) if 0 < sum(y) < len(y) else None
        row = {
            "pieces": label,
            "tournaments": r.tournaments,
            "candidate_win": sum(y) / max(1, len(y)),
            "tournaments_with_winner": sum(has) / max(1, len(has)),
            "auc_margin": auc,
            "accept_rate_delta0": r.accepted / max(1, r.tournaments),
        }
        log(
            f"diagnose {label:<34} tournaments {row['tournaments']:4d}  candidate true-win {row['candidate_win']:.3f}  "
            f"tournaments with a winner {row['tournaments_with_winner']:.3f}  AUC(margin) "
            f"{'-' if auc is None else format(auc, '.3f')}"
        )
        out.append(row)
    return out
