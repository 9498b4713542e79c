"""Stage A on the loop's own images: a judge trained to rank what TiPAI's tournaments actually compare.

The learned auditor's Stage A pairs are rendered scenes (``worlds/shapes/auditor.py``: clean or degraded
like previews). Inside the loop it ranks the candidates of a global tournament at an AUC of about 0.6,
because the images it judges there are the base model's own x̂0 previews at step g, and its finals' and
best-of-N's final samples, not rendered scenes. Here the pairs come from those images:

1. the finals (``loop/finals.py``: a global tournament at step g with N re-noised candidates, m finalists
   finished and judged on their final images) run on *training* items (their own prompt stream and seeds,
   never the development, calibration or held-out sets), judged by the current learned auditor;
2. every image a tournament shows the auditor (the N + 1 previews, then the m + 1 final images) is
   labelled by the checker with its satisfied clauses, the stand-in for human preference labels;
3. within a tournament, every pair (i, j) with more clauses satisfied by i than by j is a pair with i
   chosen, at most ``per_tournament`` of them drawn per tournament, so that no prompt dominates;
4. Stage A heads are trained by the real trainer (``train.scorer.train_scorer``) on these pairs plus the
   rendered audit pairs, on the same frozen contrastive backbone (copied into the judge's folder).

The folder is ``<cache>/shapes/auditor-loop-<key>``, the key covering the base model's recipe and step,
the first auditor's heads and these settings; a folder that holds its heads is reused as it is.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...loop.finals import FinalsPlan, finals_candidates
from ...worlds.shapes.checker import Checker
from ...worlds.shapes.evaluate import training_set
from ...worlds.shapes.grammar import parse
from .curve import global_suite
from .runs import run_tipai
from .settings import EvalSettings

VAL_FIRST = 100_000  # items of the validation pairs start here, after any training item


@dataclass(frozen=True)
class LoopJudgeSettings:
    n_train: int = 1500  # training items whose tournaments give pairs
    n_val: int = 200
    g: int = 8  # the finals' preview step
    finalists: int = 2
    budget: int = 4  # N from the finals' budget at this multiple of the plain evaluations
    per_tournament: int = 6  # pairs drawn per tournament at most
    epochs: int = 20
    seed: int = 0


class CapturingAuditor:
    """Wraps an auditor: every tournament it scores (more than one image) is kept as (prompt, images)."""

    def __init__(self, inner):
        self.inner = inner
        self.classes = getattr(inner, "classes", None)
        self.tournaments: list[tuple[str, torch.Tensor]] = []

    def score(self, images, prompt, mask=None):
        if len(images) > 1:
            self.tournaments.append((prompt, images.detach().float().cpu().clone()))
        return self.inner.score(images, prompt, mask)


def _category(prompt: str) -> str:
    kinds = {c.type for c in parse(prompt)}
    return "relation" if "relation" in kinds else "count" if "count" in kinds else "binding"


def tournament_pairs(prompt: str, images: torch.Tensor, checker: Checker, rng: random.Random, cap: int) -> list[dict]:
    """DETONATE rows from one tournament's images: i chosen over j whenever the checker finds more of the
    prompt's clauses satisfied in i; at most ``cap`` of them, drawn by ``rng``."""
    sat = [sum(ok for _, ok in checker(img, prompt)) for img in images]
    pairs = [(i, j) for i in range(len(sat)) for j in range(len(sat)) if sat[i] > sat[j]]
    if len(pairs) > cap:
        pairs = rng.sample(pairs, cap)
    cat = _category(prompt)
    return [{"Prompt": prompt, "Chosen": images[i], "Rejected": images[j], "Category": cat} for i, j in pairs]


def loop_pairs(model, auditor, items, s: EvalSettings, c: LoopJudgeSettings, log=print) -> list[dict]:
    """Run the finals on ``items`` with ``auditor`` and turn every tournament into pairs (see the module doc)."""
    n = finals_candidates(c.budget, s.n_steps, c.g, c.finalists)
    if n < 1:
        raise ValueError(f"a {c.budget}x budget holds no finals at g={c.g} with m={c.finalists}")
    capture = CapturingAuditor(auditor)
    run_tipai(model, items, s, global_suite(s, capture, c.g, n), finals=FinalsPlan(c.g, c.finalists))
    checker, rng = Checker(), random.Random(c.seed)
    rows: list[dict] = []
    for prompt, images in capture.tournaments:
        rows += tournament_pairs(prompt, images, checker, rng, c.per_tournament)
    log(f"[loop judge] {len(items)} items, {len(capture.tournaments)} tournaments, {len(rows)} pairs")
    return rows


def judge_key(meta: dict, first: Path, s: EvalSettings, c: LoopJudgeSettings) -> str:
    heads = hashlib.sha256((Path(first) / "heads.safetensors").read_bytes()).hexdigest()
    blob = json.dumps(
        {"model": meta.get("recipe"), "step": meta.get("step"), "heads": heads, "eval": asdict(s), "judge": asdict(c)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def train_loop_judge(model, meta: dict, first: Path, s: EvalSettings, c: LoopJudgeSettings, log=print) -> Path:
    """The judge's folder (trained into the cache when its heads are missing); ``first``: the auditor
    folder whose backbone is reused and whose heads steer the tournaments the pairs come from."""
    from ...auditor.data import write_pairs_parquet
    from ...train.scorer import ScorerSettings, train_scorer
    from ...worlds.shapes.auditor import load_auditor
    from ...worlds.shapes.clip import ARCH, CONFIG_DIR

    first = Path(first)
    folder = first.parent / f"auditor-loop-{judge_key(meta, first, s, c)}"
    heads = folder / "heads.safetensors"
    if heads.is_file():
        log(f"[loop judge] reusing {folder}")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("clip.safetensors", "clip.json"):
        shutil.copyfile(first / name, folder / name)
    auditor = load_auditor(first)
    # the training folder holds the loop's pairs and a copy of the rendered audit pairs (when there): the
    # judge must still read any scene; the trainer reads every *.parquet of a folder as one table
    train_dir, va = folder / "train", folder / "pairs-val-loop.parquet"
    tr = train_dir / "pairs-loop.parquet"
    if not tr.is_file():
        train_dir.mkdir(exist_ok=True)
        audit = first / "pairs-train-audit.parquet"
        if audit.is_file():
            shutil.copyfile(audit, train_dir / "pairs-audit.parquet")
        write_pairs_parquet(tr, loop_pairs(model, auditor, training_set(c.n_train), s, c, log))
    if not va.is_file():
        write_pairs_parquet(va, loop_pairs(model, auditor, training_set(c.n_val, VAL_FIRST), s, c, log))
    train_scorer(
        ScorerSettings(
            data=str(train_dir),
            val_data=str(va),
            backbone=str(folder / "clip.safetensors"),
            arch=ARCH,
            config_dir=str(CONFIG_DIR),
            classes="safe",
            out=str(heads),
            epochs=c.epochs,
            device="cpu",
            seed=c.seed,
        )
    )
    return folder
