"""``python -m tipai_core.eval shapes --referee``: referee inversion of the plain samples, judged three ways.

Each held-out prompt's plain sample (pixel space, so the latent is the image) is refined against the
learned auditor A with ``editing.referee.referee_refine`` under each setting of the grid (K
augmentations, SDS on or off, the number of steps). For every setting the table gives, per image
and then with paired bootstrap intervals over the prompts:

- (a) the rise of the optimised auditor's own score S_A;
- (b) the checker's whole-prompt accuracy (the ground truth), and its change from plain;
- (c) the rise of S_B, the score of a second auditor trained independently (another seed) that
  the optimisation never saw.

Both rises are in units of that auditor's standard deviation of S over the plain samples, so that
the adversarial gap (a) − (c) compares like with like. A gap that augmentation closes is what the
paper claims; a gap that stays, with no accuracy gained, is an adversarial pattern.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from ...diffusion.conditioning import Conditioning
from ...editing.referee import RefereeSettings, referee_refine
from ...worlds.shapes.checker import Checker
from ...worlds.shapes.evaluate import clause_accuracy, held_out
from ...worlds.shapes.generate import generate, sigmas_for
from ...worlds.shapes.model import PixelDecoder, ShapesDenoiser
from ..bootstrap import interval, paired

LR = 0.02  # fixed before any run: about 0.8 of pixel range over 40 Adam steps at most
SDS_WEIGHT, SDS_CFG = 1.0, 7.5


def grid() -> list[tuple[str, RefereeSettings]]:
    """The settings the issue asks for: K = 0 against K = 8, without and with SDS, at 10 and 40 steps."""
    rows = []
    for steps in (10, 40):
        for k in (0, 8):
            for sds in (False, True):
                s = RefereeSettings(steps=steps, lr=LR, n_augment=k, micro_batch=8, tv_weight=0.0)
                if sds:
                    s = replace(s, sds_weight=SDS_WEIGHT, sds_cfg=SDS_CFG)
                rows.append((f"steps {steps}, K={k}{', SDS' if sds else ''}", s))
    return rows


def _scores(auditor, images: list[torch.Tensor], prompts: list[str]) -> np.ndarray:
    with torch.no_grad():
        return np.array([float(auditor.similarity(img[None], p)[0]) for img, p in zip(images, prompts)])


def _all_correct(images: list[torch.Tensor], prompts: list[str], checker: Checker) -> np.ndarray:
    _, verdicts = clause_accuracy(images, prompts, checker)
    return np.array([float(all(v)) for v in verdicts])


def referee_table(model, auditor_a, auditor_b, n: int, steps: int, cfg: float, log=print) -> tuple[str, list[dict]]:
    """The table (text) and its rows; see the module docstring."""
    checker = Checker()
    items = held_out(n)
    prompts = [p for p, _ in items]
    t0 = time.time()
    plain = [generate(model, p, seed, steps, cfg) for p, seed in items]
    log(f"[referee] {n} plain samples in {time.time() - t0:.0f}s")
    sa0, sb0 = _scores(auditor_a, plain, prompts), _scores(auditor_b, plain, prompts)
    acc0 = _all_correct(plain, prompts, checker)
    sd_a, sd_b = float(sa0.std()) or 1.0, float(sb0.std()) or 1.0
    decoder = PixelDecoder()
    denoiser = ShapesDenoiser(model)
    sds_sigmas = sigmas_for(model, 20)[5:15]  # the middle of the sampling schedule
    mean, lo, hi = interval(acc0)
    lines = [
        f"referee inversion of {n} held-out plain samples ({steps} steps, CFG {cfg}); optimised: auditor A, "
        f"judged also by auditor B (independent seed) and the checker; plain accuracy {mean:.3f} [{lo:.3f}, {hi:.3f}]",
        "rises in units of each auditor's std over the plain samples; [95% paired bootstrap over prompts]",
        "",
        f"{'setting':<24} {'(a) ΔS_A':>22} {'(c) ΔS_B':>22} {'gap (a)-(c)':>22} {'(b) accuracy':>22} "
        f"{'Δ accuracy':>22} {'A fwd+bwd/img':>14} {'s/img':>7}",
    ]
    rows = []
    for name, s in grid():
        t = time.time()
        refined, fwd = [], 0
        for (p, _), img in zip(items, plain):
            res = referee_refine(
                (img * 2 - 1)[None],
                p,
                auditor_a,
                decoder,
                settings=s,
                denoiser=denoiser if s.sds_weight > 0 else None,
                cond=Conditioning(payload=p, cfg=cfg),
                sds_sigmas=sds_sigmas,
            )
            refined.append(decoder(res.latent)[0])
            fwd += res.auditor_forwards + res.auditor_backwards
        secs = (time.time() - t) / n
        da = (_scores(auditor_a, refined, prompts) - sa0) / sd_a
        db = (_scores(auditor_b, refined, prompts) - sb0) / sd_b
        acc = _all_correct(refined, prompts, checker)
        row: dict = {
            "setting": name,
            "a": interval(da),
            "c": interval(db),
            "gap": paired(da.tolist(), db.tolist()),
            "accuracy": interval(acc),
            "d_accuracy": paired(acc.tolist(), acc0.tolist()),
            "auditor_passes_per_image": fwd / n,
            "seconds_per_image": secs,
        }
        rows.append(row)

        def f(v):
            return f"{v[0]:+.3f} [{v[1]:+.2f},{v[2]:+.2f}]"

        a = row["accuracy"]
        accuracy = f"{a[0]:.3f} [{a[1]:.2f},{a[2]:.2f}]"
        lines.append(
            f"{name:<24} {f(row['a']):>22} {f(row['c']):>22} {f(row['gap']):>22} {accuracy:>22} "
            f"{f(row['d_accuracy']):>22} {fwd / n:>14.0f} {secs:>7.2f}"
        )
        log(lines[-1])
    return "\n".join(lines), rows


def tournament_table(model, s, auditor, miner, n: int, log=print) -> tuple[str, list[dict]]:
    """The referee backend inside the loop's tournaments against the diffusion editor, same auditor, miner,
    guard, N and schedule: accuracy, tournaments holding a winner (some candidate satisfies more clauses
    than the control, by the checker), accepted edits, and the compute each spends per image."""
    from ...editing.referee_editor import RefereeEditor
    from .runs import LabellingAuditor, run_plain, run_tipai
    from .settings import make_suite

    checker = Checker()
    items = held_out(n)
    plain = run_plain(model, items, s)
    acc0 = _all_correct(plain.images, [p for p, _ in items], checker)
    editors = {
        "diffusion editor": None,
        "referee editor": RefereeEditor(auditor, PixelDecoder(), None, RefereeSettings(steps=8, lr=LR, n_augment=4)),
    }
    lines = [
        f"the loop on {n} held-out prompts, learned auditor and miner, N={s.n_candidates}: "
        f"plain accuracy {acc0.mean():.3f}",
        f"{'editor':<18} {'accuracy':>22} {'Δ vs plain':>22} {'winnable':>9} {'accepted':>9} "
        f"{'D evals/img':>12} {'A images/img':>13} {'s/img':>7}",
    ]
    rows = []
    for name, editor in editors.items():
        labeller = LabellingAuditor(auditor, checker)
        suite = make_suite(s, labeller, miner)
        if editor is not None:
            suite = replace(suite, editor=editor)
        res = run_tipai(model, items, s, suite)
        acc = _all_correct(res.images, [p for p, _ in items], checker)
        labels = [lab for lab in labeller.labels if len(lab) > 1]
        winnable = float(np.mean([any(bool(v) for v in lab[1:]) for lab in labels])) if labels else 0.0
        row: dict = {
            "editor": name,
            "accuracy": interval(acc),
            "d_accuracy": paired(acc.tolist(), acc0.tolist()),
            "winnable": winnable,
            "tournaments": res.tournaments,
            "accepted": res.accepted,
            "denoiser_evals_per_image": float(np.mean(res.evals)),
            "auditor_images_per_image": float(np.mean(res.auditor_images)),
            "seconds_per_image": res.seconds / n,
        }
        rows.append(row)
        a, d = row["accuracy"], row["d_accuracy"]
        lines.append(
            f"{name:<18} {f'{a[0]:.3f} [{a[1]:.2f},{a[2]:.2f}]':>22} {f'{d[0]:+.3f} [{d[1]:+.2f},{d[2]:+.2f}]':>22} "
            f"{winnable:>9.3f} {res.accepted:>4}/{res.tournaments:<4} {row['denoiser_evals_per_image']:>12.1f} "
            f"{row['auditor_images_per_image']:>13.1f} {row['seconds_per_image']:>7.2f}"
        )
        log(lines[-1])
    return "\n".join(lines), rows
