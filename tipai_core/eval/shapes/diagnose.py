"""Which piece limits the loop: the learned or the oracle auditor and miner, in every combination; and how
well one suite's tournaments can be won and ranked (``tournament_quality``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ...loop.audit_step import AuditSuite
from ...worlds.shapes.checker import Checker
from .runs import LabellingAuditor, run_tipai
from .settings import EvalSettings, make_suite


def tournament_quality(
    model, s: EvalSettings, suite_for: Callable[[object], AuditSuite], auditor, items, path: Path
) -> dict:
    """The loop built by ``suite_for(labelling auditor)`` on ``items``, δ as the suite has it, every
    candidate labelled by the checker on the image the auditor scored. Returns the true-win rate per
    candidate, the share of tournaments holding a true winner (what the miner and editor make possible),
    the ROC-AUC of the margin S_i − S_0 for a true win (how well the auditor ranks them) and the accept rate."""
    from ...auditor.metrics import roc_auc
    from ...records.tournament_log import iter_records

    path.unlink(missing_ok=True)
    r = run_tipai(model, items, s, suite_for(LabellingAuditor(auditor, Checker())), path)
    m, y, has = [], [], []
    for rec in iter_records([path]):
        wins = rec.true_win
        assert wins is not None  # the labelling auditor labelled every tournament it logged
        has.append(any(wins[1:]))
        for i in range(1, len(rec.actions) + 1):
            m.append(rec.scores["S"][i] - rec.scores["S"][0])
            y.append(bool(wins[i]))
    auc = roc_auc(torch.tensor(m), torch.tensor(y)) if 0 < sum(y) < len(y) else None
    return {
        "tournaments": r.tournaments,
        "candidate_win": sum(y) / max(1, len(y)),
        "tournaments_with_winner": sum(has) / max(1, len(has)),
        "auc_margin": auc,
        "accept_rate": r.accepted / max(1, r.tournaments),
    }


def quality_line(label: str, row: dict) -> str:
    auc = row["auc_margin"]
    return (
        f"{label:<34} tournaments {row['tournaments']:4d}  candidate true-win {row['candidate_win']:.3f}  "
        f"tournaments with a winner {row['tournaments_with_winner']:.3f}  AUC(margin) "
        f"{'-' if auc is None else format(auc, '.3f')}  accepted {row['accept_rate']:.3f}"
    )


def diagnose(model, s: EvalSettings, pairs: dict, n: int, folder: Path, log=print) -> list[dict]:
    """For each label -> (auditor, miner): the local loop (fixed knobs, δ = 0) on n prompts of the
    calibration set, measured by ``tournament_quality``. Logs go to ``folder``."""
    from ...worlds.shapes.evaluate import calibration_set

    out = []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for label, (auditor, miner) in pairs.items():

        def suite_for(a, miner=miner) -> AuditSuite:
            return make_suite(s, a, miner)

        row = tournament_quality(
            model,
            s,
            suite_for,
            auditor,
            calibration_set(n),
            folder / f"diagnose-{label}.records.jsonl",
        )
        row = {"pieces": label, **row, "accept_rate_delta0": row.pop("accept_rate")}
        log("diagnose " + quality_line(label, {**row, "accept_rate": row["accept_rate_delta0"]}))
        out.append(row)
    return out
