"""The settings objects the TiPAI nodes pass along (MINER, EDITOR, GUARD, POLICY, AUDITOR sockets).

Each settings node builds its object with the ``*_spec`` function below, and an unconnected input
of the TiPAI KSampler gets the same function called with the defaults of ``defaults.py``: so "left
unconnected" and "wired at its defaults" are one object, by construction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import comfy.model_management
import comfy.model_patcher
import torch

from ..tipai_core.diffusion.schedules import Schedule
from ..tipai_core.editing.diffusion_editor import DiffusionEditor
from ..tipai_core.editing.learned_editor import LearnedEditor
from ..tipai_core.editing.learned_file import load_editor
from ..tipai_core.editing.referee_editor import RefereeEditor
from ..tipai_core.editing.routing import RoutedEditor
from ..tipai_core.guard.tournament_guard import TournamentGuard
from ..tipai_core.loop.audit_schedule import AuditSchedule
from ..tipai_core.mining.miner import AuditMemory, MinerSettings, RegionMiner
from ..tipai_core.policy.actions import FixedKnobPolicy
from . import defaults as D
from .model_files import NONE, resolve

# the Region Miner's weight inputs (without "_weight") -> the miner's signal names
MINER_WEIGHT_SIGNALS = {
    "faithfulness": "gradcam",
    "risk": "risk",
    "drift": "drift",
    "mismatch": "prompt_mismatch",
    "change": "feature_change",
    "nsfw": "nsfw",
    "age": "age",
    "text": "text",
}


@dataclass
class AuditorHandle:
    """The auditor A_s and the ModelPatcher that lets ComfyUI load and offload it."""

    auditor: Any
    patcher: Any
    name: str = ""

    @classmethod
    def wrap(cls, auditor, name: str = "") -> "AuditorHandle":
        # ModelPatcher writes bookkeeping attributes (device, ...) onto the module it manages, so it
        # manages a plain holder module whose child is the auditor.
        holder = torch.nn.Module()
        holder.auditor = auditor
        patcher = comfy.model_patcher.ModelPatcher(
            holder,
            load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device(),
        )
        return cls(auditor, patcher, name)

    def ready(self):
        comfy.model_management.load_model_gpu(self.patcher)
        return self.auditor


def miner_settings(
    k: int = D.MINER_K,
    threshold: float = D.MINER_THRESHOLD,
    min_area: float = D.MINER_MIN_AREA,
    max_area: float = D.MINER_MAX_AREA,
    merge_margin: int = D.MINER_MERGE_MARGIN,
    weights: dict[str, float] | None = None,
    latent_align: bool = D.MINER_LATENT_ALIGN,
    feather: int = D.MINER_FEATHER,
    region_prompt: str = "",
    region_words: bool = D.MINER_REGION_WORDS,
) -> MinerSettings:
    """The Region Miner's inputs, in its own names, as the core's ``MinerSettings``."""
    w = {**D.MINER_WEIGHTS, **(weights or {})}
    return MinerSettings(
        k=k,
        threshold=threshold,
        min_area_frac=min_area,
        max_area_frac=max_area,
        merge_margin=merge_margin,
        weights={MINER_WEIGHT_SIGNALS[n]: float(v) for n, v in w.items()},
        latent_factor=8 if latent_align else None,
        feather_radius=feather,
        region_prompt=region_prompt.strip() or None,
        region_prompts=bool(region_words),
    )


@dataclass
class MinerSpec:
    settings: MinerSettings = field(default_factory=miner_settings)
    user_mask: torch.Tensor | None = None  # [B or 1, 1, H, W] pixel mask, always a region
    detectors: tuple[str, ...] = ()  # "nsfw", "age", "text"
    llm: str | None = None  # region_llm's file: a language model rewrites each region's prompt during the run
    # the previous audit's Grad-CAM and tokens, for drift; start_run() clears it
    memory: AuditMemory = field(default_factory=AuditMemory, repr=False, compare=False)

    @property
    def k(self) -> int:
        return self.settings.k

    def start_run(self) -> None:
        """A new sampling run: drift and feature change start again from 0."""
        self.memory.reset()

    def build(self, auditor, prompter=None) -> RegionMiner:
        dets = {}
        if self.detectors:
            from ..tipai_core.mining.detectors import build_detectors, providers_for
            from .model_files import folders

            dets = build_detectors(
                list(self.detectors), providers_for(comfy.model_management.get_torch_device()), folders()
            )
        return RegionMiner(auditor, self.settings, detectors=dets, memory=self.memory, prompter=prompter)


@lru_cache(maxsize=8)
def _editor_file(path: str, mtime: float, size: int):  # keyed by mtime and size: a retrained file re-reads
    return load_editor(path)


def learned_editor_file(path: str):
    """(net, identity) of a learned editor file, loaded once per version of the file."""
    st = os.stat(path)
    return _editor_file(path, st.st_mtime, st.st_size)


def learned_editor(path: str, auditor, model, vae, mode: str = "vae") -> LearnedEditor:
    """The file's editor for this ComfyUI model: refused for another model family or another text encoder,
    its RGB space reached through the VAE, or TAESD when the audit decoder is ``taesd`` (decode, and encode
    back into the model's space)."""
    from .comfy_adapters import VAESpace, model_family

    net, identity = learned_editor_file(path)
    identity.check_family(model_family(model))
    identity.check_text_encoder(auditor.backbone.identity())
    space = VAESpace(vae, model, mode)
    net = net.to(comfy.model_management.get_torch_device())
    return LearnedEditor(
        net,
        identity,
        lambda p: auditor.text_features([p])[0],
        to_space=space.to_rgb,
        from_space=space.from_rgb,
        strength=D.LEARNED_STRENGTH,
    )


@dataclass
class EditorSpec:
    backend: str = D.EDITOR_BACKEND
    refine_iters: int = D.EDITOR_REFINE_ITERS
    crop_margin: int = D.EDITOR_CROP_MARGIN
    decoder: str = D.EDITOR_DECODER
    learned: str = NONE  # the learned editor file in models/tipai ("learned" and "mixed" backends)

    @property
    def uses_learned(self) -> bool:
        return self.backend in ("learned", "mixed")

    def check_learned(self, node: str) -> None:
        """Before any work: the learned backends need a learned editor file that loads."""
        if not self.uses_learned:
            return
        if self.learned in (None, "", NONE):
            raise ValueError(
                f"{node}: backend {self.backend!r} needs a learned_editor file (python -m tipai_core.train editor "
                "writes one; put it in models/tipai)"
            )
        learned_editor_file(resolve(self.learned, "learned editor"))

    def check_for(self, node: str, model, auditor) -> None:
        """Before sampling: a learned editor file fits this model's family and this auditor's text encoder."""
        if not self.uses_learned:
            return
        from .comfy_adapters import model_family

        self.check_learned(node)
        _, identity = learned_editor_file(resolve(self.learned, "learned editor"))
        try:
            identity.check_family(model_family(model.model))
            if auditor is not None:
                identity.check_text_encoder(auditor.ready().backbone.identity())
        except ValueError as exc:
            raise ValueError(f"{node}: {self.learned}: {exc}") from None

    def build(self, auditor=None, decoder=None, prompt: str = "", model=None, vae=None):
        """The editor A_g. ``referee`` needs the auditor, a decoder with gradients and the prompt; ``learned`` and
        ``mixed`` the auditor (its text features condition the editor), the model (its family and latent space)
        and the VAE (the editor works in RGB)."""
        if self.backend == "diffusion":
            return DiffusionEditor(refine_iters=self.refine_iters)
        if self.uses_learned:
            if auditor is None or model is None or vae is None:
                raise ValueError(f"the {self.backend!r} editor backend needs the auditor, the model and the VAE")
            learned = learned_editor(resolve(self.learned, "learned editor"), auditor, model, vae, self.decoder)
            force = "learned" if self.backend == "learned" else None
            return RoutedEditor(DiffusionEditor(refine_iters=self.refine_iters), learned, force=force)
        if self.backend == "referee":
            if auditor is None or decoder is None or not prompt.strip():
                raise ValueError("the 'referee' editor backend needs the auditor, the VAE and a non-empty prompt")
            from .referee_node import InferenceFreeEditor

            return InferenceFreeEditor(RefereeEditor(auditor, decoder, prompt, D.referee_settings()))
        raise ValueError(f"editor backend {self.backend!r} is not one of {D.EDITOR_BACKENDS}")


def fixed_guard(
    delta: float = D.GUARD_DELTA, tau_P: tuple[float, float] = D.GUARD_TAU_P, tau_F: tuple[float, float] = D.GUARD_TAU_F
) -> TournamentGuard:
    """δ and the linear τ_P(t), τ_F(t) schedules from (start, end) pairs."""
    return TournamentGuard(delta=delta, tau_P=Schedule.linear(*tau_P), tau_F=Schedule.linear(*tau_F))


def audit_schedule(
    every: int = D.AUDIT_EVERY,
    first: int = D.AUDIT_FIRST,
    skip_last: int = D.AUDIT_SKIP_LAST,
    scales: tuple[float, ...] = D.AUDIT_SCALES,
    global_until: int = D.AUDIT_GLOBAL_UNTIL,
) -> AuditSchedule:
    return AuditSchedule(
        every=every, first=first, skip_last=skip_last, scales=tuple(scales), global_until=int(global_until)
    )


@dataclass
class GuardSpec:
    guard: TournamentGuard = field(default_factory=fixed_guard)
    schedule: AuditSchedule = field(default_factory=audit_schedule)
    alpha: float = D.GUARD_ALPHA


def fixed_policy(
    depths: tuple = D.POLICY_DEPTHS,
    cfg_inside: tuple = D.POLICY_CFG_INSIDE,
    jitter: tuple = D.POLICY_JITTER,
    dilation: tuple = D.POLICY_DILATION,
    feather: tuple = D.POLICY_FEATHER,
    editor: str = D.POLICY_EDITOR,
    region_text: str = D.POLICY_REGION_TEXT,
    emphasis: tuple = D.POLICY_EMPHASIS,
) -> FixedKnobPolicy:
    """Each knob drawn uniformly from its list; editor "both" draws invert or renoise, region_text "both"
    draws the region's own prompt or the base prompt."""

    def uniform(values):
        values = tuple(values)
        return (values, tuple(1.0 / len(values) for _ in values))

    return FixedKnobPolicy(
        knobs={
            "depth": uniform(depths),
            "cfg_inside": uniform(cfg_inside),
            "jitter": uniform(jitter),
            "dilation": uniform(dilation),
            "feather": uniform(feather),
            "editor": uniform(D.POLICY_EDITORS[editor]),
            "region_text": uniform(("region", "base") if region_text == "both" else (region_text,)),
            "emphasis": uniform(emphasis),
        }
    )


@dataclass
class PolicySpec:
    policy: Any = field(default_factory=fixed_policy)  # any protocols.Policy (FixedKnobPolicy, PolicyNet)
    n: int = D.POLICY_N
    seed: int = D.POLICY_SEED

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"N (candidates per region) must be at least 1, got {self.n}")


@dataclass
class TiPAISettings:
    prompt: str
    auditor: AuditorHandle
    vae: Any
    miner: MinerSpec = field(default_factory=MinerSpec)
    editor: EditorSpec = field(default_factory=EditorSpec)
    guard: GuardSpec = field(default_factory=GuardSpec)
    policy: PolicySpec = field(default_factory=PolicySpec)
    clip: Any = None  # encodes region prompts for the editor (None: regions are edited under the base prompt)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(
                "TiPAI: the prompt text is empty. The auditor judges each candidate against "
                "this text, so give the prompt the image should show."
            )
        if self.vae is None and self.editor.decoder == "vae":
            raise ValueError("TiPAI: connect a VAE, or choose the 'latent_rgb' audit decoder")
