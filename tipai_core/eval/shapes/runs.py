"""The methods the evaluation compares, run over the held-out items: plain sampling, best-of-N whole
images picked by the auditor, FK steering (particles resampled by the judge's score of x̂0), and the
TiPAI loop (its tournaments optionally logged with the checker's ``true_win``)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ...diffusion.conditioning import Conditioning
from ...diffusion.sampler import sample
from ...loop.audit_step import AuditSuite
from ...loop.finals import FinalsPlan, sample_with_finals
from ...loop.sampling import sample_with_audits
from ...records.costs import Costs, CountingDenoiser
from ...worlds.shapes.checker import Checker
from ...worlds.shapes.generate import sigmas_for, start_latent
from ...worlds.shapes.model import ShapesDenoiser, ShapesUNet
from .settings import EvalSettings, MethodResult

SEED_STRIDE = 100_003  # image j of a prompt starts from seed + j·SEED_STRIDE (j = 0: the plain run's noise)


def _to_image(x: torch.Tensor) -> torch.Tensor:
    return ((x[0] + 1) / 2).clamp(0, 1)


def run_plain(model: ShapesUNet, items, s: EvalSettings, seed_offset: int = 0) -> MethodResult:
    den, sig = ShapesDenoiser(model), sigmas_for(model, s.n_steps, s.sigma_max)
    images, calls, evals, t = [], [], [], time.time()
    for prompt, seed in items:
        c = Costs()
        x = sample(
            CountingDenoiser(den, c),
            sig,
            start_latent(model, sig, seed + seed_offset),
            Conditioning(payload=prompt, cfg=s.cfg),
            "eps",
            s.sampler,
        )
        images.append(_to_image(x))
        calls.append(c.denoiser_calls)
        evals.append(c.denoiser_evals)
    n = len(items)
    return MethodResult("plain", images, calls, time.time() - t, evals, auditor_images=[0] * n, decodes=[1] * n)


def run_best_of_n(
    model, items, s: EvalSettings, n: int, auditor, first: MethodResult | None = None, memo: dict | None = None
) -> MethodResult:
    """N whole images per prompt; the auditor's S picks (ties: the lowest j). j = 0 is the plain image.
    ``memo`` (j -> run) shares the whole-image runs between rows; their time is counted in each row."""
    memo = {} if memo is None else memo
    for j in range(1, n):
        if j not in memo:
            memo[j] = run_plain(model, items, s, seed_offset=j * SEED_STRIDE)
    runs = [first] + [memo[j] for j in range(1, n)]
    t = time.time()
    images, calls, evals = [], [], []
    for i, (prompt, _) in enumerate(items):
        cands = torch.stack([r.images[i] for r in runs])
        S = auditor.score(cands, prompt).S
        images.append(cands[int(torch.argmax(S))])
        calls.append(sum(r.calls[i] for r in runs))
        evals.append(sum(r.evals[i] for r in runs))
    # wall time as if run alone: its N whole-image runs plus the auditor's picks
    seconds = time.time() - t + sum(r.seconds for r in runs)
    k = len(items)
    return MethodResult(f"best-of-{n}", images, calls, seconds, evals, auditor_images=[n] * k, decodes=[n] * k)


class LabellingAuditor:
    """Wraps an auditor: every tournament it scores is also judged by the checker, so each record can
    carry ``true_win[i] = sat(C_i) > sat(C_0)`` (sat = satisfied clauses), what Stage C calibrates on.
    A call with one image (a policy that reads the control's scores first) is no tournament: not labelled."""

    def __init__(self, inner, checker: Checker):
        self.inner, self.checker = inner, checker
        self.labels: list[list[bool | None]] = []
        self.classes = getattr(inner, "classes", None)

    def score(self, images, prompt, mask=None):
        if len(images) > 1:
            sat = [sum(ok for _, ok in self.checker(img, prompt)) for img in images]
            self.labels.append([None] + [v > sat[0] for v in sat[1:]])
        return self.inner.score(images, prompt, mask)


def run_tipai(
    model, items, s: EvalSettings, suite: AuditSuite, log_path: Path | None = None, finals: FinalsPlan | None = None
) -> MethodResult:
    """The loop on every item; with ``log_path`` its tournaments (with checker ``true_win``) go to JSONL.
    With ``finals`` the loop is ``sample_with_finals``: a preview tournament at step g whose best m
    candidates are finished and judged against the control on their final images."""
    labeller = suite.auditor if isinstance(suite.auditor, LabellingAuditor) else None
    den, sig = ShapesDenoiser(model), sigmas_for(model, s.n_steps, s.sigma_max)
    res = MethodResult("tipai", [], [], 0.0)
    t = time.time()
    for prompt, seed in items:
        if hasattr(suite.miner, "reset"):
            suite.miner.reset()  # drift and feature change start afresh in every run
        c = Costs()
        x, cond = start_latent(model, sig, seed), Conditioning(payload=prompt, cfg=s.cfg)
        if finals is None:
            out = sample_with_audits(CountingDenoiser(den, c), sig, x, cond, "eps", prompt, suite, s.sampler)
        else:
            out = sample_with_finals(CountingDenoiser(den, c), sig, x, cond, "eps", prompt, suite, finals, s.sampler)
        res.images.append(_to_image(out.latent))
        res.auditor_images.append(out.costs.auditor_images)
        res.editor_images.append(out.costs.editor_images)
        # the audit views and crops, and the final image (the finals decode it themselves)
        res.decodes.append(out.costs.decoded_images + (1 if finals is None else 0))
        # c counts every call through the wrapper: the base steps, the editor's and the restarts
        res.calls.append(c.denoiser_calls)
        res.evals.append(c.denoiser_evals)
        res.tournaments += len(out.records)
        if log_path is not None and labeller is not None:
            from ...records.tournament_log import append_records

            # one auditor call per tournament (FixedKnobPolicy reads no control scores), in order
            labels, labeller.labels = labeller.labels[-len(out.records) :] if out.records else [], []
            for rec, lab in zip(out.records, labels):
                rec.true_win = lab
            append_records(log_path, out.records)
        acc = [r for r in out.records if r.accepted]
        res.accepted += len(acc)
        res.accepted_boxes.append([tuple(r.region["bbox"]) for r in acc])
    res.seconds = time.time() - t
    return res


def start_latents(model: ShapesUNet, sig: torch.Tensor, seed: int, k: int) -> torch.Tensor:
    """The k start latents best-of-k draws for one item (j = 0 is the plain run's): shared noise, fair pairs."""
    return torch.cat([start_latent(model, sig, seed + j * SEED_STRIDE) for j in range(k)])


def run_fk(model, items, s: EvalSettings, auditor, fk) -> MethodResult:
    """FK steering (``loop.fk_steering``) per item: ``fk.k`` particles from best-of-k's start latents, the
    auditor's S of the decoded x̂0 as the reward, the judge's best final particle returned."""
    from ...loop.fk_steering import fk_steering
    from ...worlds.shapes.model import PixelDecoder

    den, sig = ShapesDenoiser(model), sigmas_for(model, s.n_steps, s.sigma_max)
    res = MethodResult(f"fk-{fk.k}", [], [], 0.0)
    t = time.time()
    for prompt, seed in items:

        def judge(images: torch.Tensor, prompt: str = prompt) -> torch.Tensor:
            return auditor.score(images, prompt).S

        out = fk_steering(
            den,
            sig,
            start_latents(model, sig, seed, fk.k),
            Conditioning(payload=prompt, cfg=s.cfg),
            "eps",
            judge,
            fk,
            decoder=PixelDecoder(),
            generator=torch.Generator().manual_seed(seed),
        )
        res.images.append(_to_image(out.latent))
        res.calls.append(out.costs.denoiser_calls)
        res.evals.append(out.costs.denoiser_evals)
        res.auditor_images.append(out.costs.auditor_images)
        res.decodes.append(out.costs.decoded_images)
    res.seconds = time.time() - t
    return res
