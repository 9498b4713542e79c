"""What one ShapesWorld evaluation runs with: its settings, a method's result, a TiPAI row's pieces
(auditor, miner and optionally a policy and a guard) and the ``AuditSuite`` built from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ...editing.diffusion_editor import DiffusionEditor
from ...guard.tournament_guard import TournamentGuard
from ...loop.audit_schedule import AuditSchedule
from ...loop.audit_step import AuditSuite
from ...mining.regions import SaliencyMiner
from ...policy.actions import FixedKnobPolicy
from ...worlds.shapes.checker import Checker
from ...worlds.shapes.generate import SAMPLE_SIGMA_MAX
from ...worlds.shapes.model import PixelDecoder
from ...worlds.shapes.oracle import CheckerAuditor, checker_saliency


@dataclass
class EvalSettings:
    n_prompts: int = 64
    n_steps: int = 20
    cfg: float = 3.0
    sampler: str = "ddim"
    sigma_max: float = SAMPLE_SIGMA_MAX
    n_candidates: int = 4
    k_regions: int = 2
    audit_every: int = 3
    audit_first: int = 3
    audit_skip_last: int = 3
    delta: float = 0.0
    knobs: dict = field(
        default_factory=lambda: {
            "editor": (["renoise"], [1.0]),
            "depth": ([2, 3, 4], [1 / 3, 1 / 3, 1 / 3]),
            "cfg_inside": ([3.0, 5.0, 7.0], [1 / 3, 1 / 3, 1 / 3]),
            "jitter": ([0.5, 1.0], [0.5, 0.5]),
            "dilation": ([0, 1], [0.5, 0.5]),
        }
    )


@dataclass
class MethodResult:
    name: str
    images: list[torch.Tensor]
    calls: list[int]
    seconds: float
    evals: list[int] = field(default_factory=list)  # batch rows through D: the compute that matters here
    tournaments: int = 0
    accepted: int = 0
    accepted_boxes: list[list[tuple[int, int, int, int]]] = field(default_factory=list)
    # the judge's share of the compute, per image: auditor images scored and images decoded
    auditor_images: list[int] = field(default_factory=list)
    decodes: list[int] = field(default_factory=list)
    editor_images: list[int] = field(default_factory=list)  # candidate rows through a learned editor's net


@dataclass
class Pieces:
    """What one TiPAI row runs with. ``policy``/``guard`` None: the fixed knobs and the δ of the settings.
    ``judge``: the label of the auditor, which also names the best-of-N row matched to it."""

    auditor: object
    miner: object
    judge: str
    policy: object = None
    guard: object = None


def make_suite(s: EvalSettings, auditor, miner, policy=None, guard=None) -> AuditSuite:
    return AuditSuite(
        decoder=PixelDecoder(),
        miner=miner,
        auditor=auditor,
        editor=DiffusionEditor(),
        policy=policy if policy is not None else FixedKnobPolicy(s.knobs),
        guard=guard if guard is not None else TournamentGuard(delta=s.delta),
        schedule=AuditSchedule(every=s.audit_every, first=s.audit_first, skip_last=s.audit_skip_last, scales=(1.0,)),
        n_candidates=s.n_candidates,
        seed=0,
    )


def oracle_pieces(checker: Checker):
    """(auditor, miner) read from the checker: an upper bound, see ``worlds/shapes/oracle.py``."""
    return CheckerAuditor(checker), SaliencyMiner(checker_saliency(checker), k=2, threshold=0.5)


# The learned miner's settings here. Grad-CAM alone: the miner's default fusion also adds the risk map
# (one "safe" class in this world: no signal), drift and feature change (they mark wherever the image is
# still changing). On 32 calibration prompts (``--diagnose``) the share of tournaments holding a true
# winner was 3.0% with the default fusion, 8.7% with Grad-CAM alone, 6.1% with the prompt-mismatch map
# alone, and 1.3% with regions capped at 12% of the image.
LEARNED_MINER: dict[str, Any] = {
    "weights": {"gradcam": 1.0, "drift": 0.0, "feature_change": 0.0, "risk": 0.0},
    "k": 2,
    "threshold": 0.5,
    "max_area_frac": 0.3,
}


def learned_miner(auditor, *, region_prompts: bool = False, prompter: Callable | None = None):
    """The learned loop's Grad-CAM RegionMiner (``LEARNED_MINER``), with or without the region words."""
    from ...mining.miner import RegionMiner

    return RegionMiner(
        auditor, **LEARNED_MINER, latent_factor=1, feather_radius=1, region_prompts=region_prompts, prompter=prompter
    )


def learned_pieces(folder):
    """(auditor, miner): the trained tiny open_clip + Stage A heads, and the Grad-CAM RegionMiner."""
    from ...worlds.shapes.auditor import load_auditor

    auditor = load_auditor(folder)
    return auditor, learned_miner(auditor)
