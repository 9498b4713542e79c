"""One TiPAI sampling run inside ComfyUI: the settings objects the nodes pass along, and the
per-run state that the sampler hook drives (audit at chosen steps, records, costs, model calls).

The run is created fresh at the start of every sampling call, so a cancelled run leaves nothing
behind for the next one, and the input MODEL is never modified (the patch works on a clone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.utils

from ..tipai_core.policy.actions import FixedKnobPolicy
from ..tipai_core.policy.policy_net import PolicyNet
from ..tipai_core.loop.audit_schedule import AuditSchedule
from ..tipai_core.records.costs import Costs
from ..tipai_core.diffusion.conditioning import Conditioning
from ..tipai_core.editing.diffusion_editor import DiffusionEditor
from ..tipai_core.guard.tournament_guard import TournamentGuard
from ..tipai_core.loop.audit_loop import AuditSuite, audit_step
from ..tipai_core.records.tournament_record import TournamentRecord
from ..tipai_core.mining.miner import AuditMemory, RegionMiner
from .comfy_adapters import ComfyAuditDecoder, ComfyDenoiser, parametrisation
from .sampler_hook import WRAPPER_KEY, make_sampler_wrapper


@dataclass
class AuditorHandle:
    """The auditor A_s and the ModelPatcher that lets ComfyUI load and offload it."""

    auditor: object
    patcher: object
    name: str = ""

    @classmethod
    def wrap(cls, auditor, name: str = "") -> "AuditorHandle":
        # ModelPatcher writes bookkeeping attributes (device, ...) onto the module it manages, so it
        # manages a plain holder module whose child is the auditor.
        holder = torch.nn.Module()
        holder.auditor = auditor
        patcher = comfy.model_patcher.ModelPatcher(
            holder, load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device())
        return cls(auditor, patcher, name)

    def ready(self):
        comfy.model_management.load_model_gpu(self.patcher)
        return self.auditor


@dataclass
class MinerSpec:
    k: int = 2
    threshold: float = 0.6
    min_area: float = 0.02
    max_area: float = 0.5
    merge_margin: int = 2
    risk_weight: float = 1.0
    faithfulness_weight: float = 1.0  # the auditor Grad-CAM faithfulness map
    user_mask: torch.Tensor | None = None  # [B or 1, 1, H, W] pixel mask, always a region
    drift_weight: float = 0.5
    mismatch_weight: float = 0.0  # patch features vs the prompt
    change_weight: float = 0.5  # patch features vs the last audit's
    detectors: tuple[str, ...] = ()  # "nsfw", "age", "text"
    nsfw_weight: float = 1.0
    age_weight: float = 1.0
    text_weight: float = 1.0
    latent_align: bool = True
    feather: int = 4
    region_prompt: str = ""
    # the previous audit's Grad-CAM and tokens, for drift; start_run() clears it
    memory: AuditMemory = field(default_factory=AuditMemory, repr=False, compare=False)

    def weights(self) -> dict[str, float]:
        return {"gradcam": self.faithfulness_weight, "risk": self.risk_weight, "drift": self.drift_weight,
                "prompt_mismatch": self.mismatch_weight, "feature_change": self.change_weight,
                "nsfw": self.nsfw_weight, "age": self.age_weight, "text": self.text_weight}

    def start_run(self) -> None:
        """A new sampling run: drift and feature change start again from 0."""
        self.memory.reset()

    def build(self, auditor) -> RegionMiner:
        dets = {}
        if self.detectors:
            from ..tipai_core.mining.detectors import build_detectors, providers_for
            from .model_files import folders

            dets = build_detectors(list(self.detectors), providers_for(comfy.model_management.get_torch_device()),
                                   folders())
        return RegionMiner(auditor, weights=self.weights(), detectors=dets, k=self.k, threshold=self.threshold,
                           min_area_frac=self.min_area, max_area_frac=self.max_area, merge_margin=self.merge_margin,
                           latent_factor=8 if self.latent_align else None, feather_radius=self.feather,
                           region_prompt=self.region_prompt or None, memory=self.memory)


@dataclass
class EditorSpec:
    backend: str = "diffusion"
    refine_iters: int = 0
    crop_margin: int = 2
    decoder: str = "vae"

    def build(self) -> DiffusionEditor:
        if self.backend != "diffusion":
            raise ValueError(f"editor backend {self.backend!r} is not available yet; use 'diffusion'")
        return DiffusionEditor(refine_iters=self.refine_iters)


@dataclass
class GuardSpec:
    guard: TournamentGuard = field(default_factory=TournamentGuard)
    schedule: AuditSchedule = field(default_factory=AuditSchedule)
    alpha: float = 1.0
    kappa: float = 1.0


@dataclass
class PolicySpec:
    policy: FixedKnobPolicy | PolicyNet = field(default_factory=FixedKnobPolicy)  # any protocols.Policy
    n: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"N (candidates per region) must be at least 1, got {self.n}")


@dataclass
class TiPAISettings:
    prompt: str
    auditor: AuditorHandle
    vae: object
    miner: MinerSpec = field(default_factory=MinerSpec)
    editor: EditorSpec = field(default_factory=EditorSpec)
    guard: GuardSpec = field(default_factory=GuardSpec)
    policy: PolicySpec = field(default_factory=PolicySpec)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError("TiPAI: the prompt text is empty. The auditor judges each candidate against "
                             "this text, so give the prompt the image should show.")
        if self.vae is None and self.editor.decoder == "vae":
            raise ValueError("TiPAI: connect a VAE, or choose the 'latent_rgb' audit decoder")


class TiPAIRun:
    """State of one sampling call: what the step-callback audits produce."""

    def __init__(self, settings: TiPAISettings):
        self.s = settings
        self.records: list[TournamentRecord] = []
        self.costs = Costs()
        self.audited: list[int] = []
        self.accepted: list[int] = []
        self.model_calls = 0  # apply_model calls of the sampler itself
        self.extra_model_calls = 0  # apply_model calls made by the tournaments
        self.n_steps = 0
        self.seconds = 0.0
        self._in_audit = False
        self._miner = None  # built at the first audit (the auditor must be loaded), then reused
        settings.miner.start_run()  # drift compares audits of this run only

    def is_audited(self, i: int, total: int) -> bool:
        self.n_steps = total
        return self.s.guard.schedule.is_audited(i, total)

    def _user_mask(self, x: torch.Tensor, factor: int) -> torch.Tensor | None:
        m = self.s.miner.user_mask
        if m is None:
            return None
        want = (factor * x.shape[-2], factor * x.shape[-1])
        if tuple(m.shape[-2:]) != want:
            raise ValueError(f"TiPAI: the user mask is {m.shape[-1]}x{m.shape[-2]} pixels but the image is "
                             f"{want[1]}x{want[0]}; resize the mask to the image size")
        if m.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"TiPAI: the user mask batch ({m.shape[0]}) must be 1 or the latent batch ({x.shape[0]})")
        return m.to(x)

    def audit(self, view) -> torch.Tensor | None:
        t0 = time.perf_counter()
        self._in_audit = True
        try:
            auditor = self.s.auditor.ready()
            model = view.guider.inner_model
            decoder = ComfyAuditDecoder(self.s.vae, model, self.s.editor.decoder)
            if self._miner is None:
                self._miner = self.s.miner.build(auditor)
            # progress over the editor's model calls of this audit, at most K regions of the deepest d
            knobs = getattr(self.s.policy.policy, "knobs", None) or {}
            d_max = min(view.step, max(knobs.get("depth", ((view.step,), None))[0]))
            r = self.s.editor.refine_iters
            progress = comfy.utils.ProgressBar(max(1, self.s.miner.k * view.x.shape[0] * (d_max * (2 + r) + 1)))
            suite = AuditSuite(
                decoder=decoder, miner=self._miner, auditor=auditor, editor=self.s.editor.build(),
                policy=self.s.policy.policy, guard=self.s.guard.guard, schedule=self.s.guard.schedule,
                alpha=self.s.guard.alpha, n_candidates=self.s.policy.n, crop_margin=self.s.editor.crop_margin,
                seed=self.s.policy.seed)
            new_x, records = audit_step(
                view.x, view.x0, view.step, view.sigmas, denoiser=ComfyDenoiser(view.guider, view.model_options, progress),
                param=parametrisation(model.model_sampling), cond=Conditioning(cfg=float(view.guider.cfg)),
                prompt=self.s.prompt, suite=suite, user_mask=self._user_mask(view.x, decoder.factor),
                costs=self.costs)
        finally:
            self._in_audit = False
            self.seconds += time.perf_counter() - t0
        self.audited.append(view.step)
        self.records.extend(records)
        if new_x is not None:
            self.accepted.append(view.step)
            # the restart re-evaluates the model once at σ_i from the edited x: an extra call
            self.costs.denoiser_calls += 1
            self.costs.denoiser_evals += int(view.x.shape[0])
        return new_x

    @property
    def base_model_calls(self) -> int:
        """The sampler's own model calls, as a plain run makes them (restarts are counted as extra)."""
        return self.model_calls - len(self.accepted)


class _RunSlot:
    """Holds the current run between the SAMPLER_SAMPLE and APPLY_MODEL wrappers of one patch."""

    def __init__(self, settings: TiPAISettings):
        self.settings = settings
        self.run: TiPAIRun | None = None
        self.last: TiPAIRun | None = None
        self.on_finished = None  # called with each run that completed (e.g. to save its log)

    def sampler_sample(self, executor, *args, **kwargs):
        run = TiPAIRun(self.settings)
        self.run = run
        try:
            inner = make_sampler_wrapper(run.audit, run.is_audited)
            out = inner(executor, *args, **kwargs)
            if self.on_finished is not None:
                self.on_finished(run)
            return out
        finally:
            # whatever happens (an error, a Cancel), the next run starts clean
            self.run, self.last = None, run

    def apply_model(self, executor, *args, **kwargs):
        run = self.run
        if run is not None:
            if run._in_audit:
                run.extra_model_calls += 1
            else:
                run.model_calls += 1
        return executor(*args, **kwargs)


def patch_model(model, settings: TiPAISettings):
    """A clone of ``model`` that runs TiPAI in any sampler; returns (clone, slot with the last run)."""
    slot = _RunSlot(settings)
    patched = model.clone()
    for kind, fn in ((comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, slot.sampler_sample),
                     (comfy.patcher_extension.WrappersMP.APPLY_MODEL, slot.apply_model)):
        patched.remove_wrappers_with_key(kind, WRAPPER_KEY)
        patched.add_wrapper_with_key(kind, WRAPPER_KEY, fn)
    return patched, slot
