"""One TiPAI sampling run inside ComfyUI: the per-run state that the sampler hook drives (audit at
chosen steps, records, costs, model calls). The settings it runs with are in ``settings.py``.

The run is created fresh at the start of every sampling call, so a cancelled run leaves nothing
behind for the next one, and the input MODEL is never modified (the patch works on a clone).
"""

from __future__ import annotations

import logging
import time

import comfy.model_management
import comfy.utils
import torch

from ..tipai_core.diffusion.conditioning import Conditioning
from ..tipai_core.guard.tournament_guard import ObservingGuard
from ..tipai_core.loop.audit_step import AuditSuite, audit_step
from ..tipai_core.mining.masks import check_user_mask
from ..tipai_core.records.costs import Costs, editor_calls, restart_costs
from ..tipai_core.records.tournament_picture import TournamentStrips
from ..tipai_core.records.tournament_record import TournamentRecord
from . import defaults as D
from .comfy_adapters import ComfyAuditDecoder, ComfyDenoiser, ComfyRegionEncoder, parametrisation
from .progress import RunProgress
from .sampler_hook import ModelInputs, install, make_sampler_wrapper
from .settings import TiPAISettings

log = logging.getLogger(__name__)


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
        self.warnings: list[str] = []
        self._miner = None  # built at the first audit (the auditor must be loaded), then reused
        self._encoder = None  # the region prompts' encoder, built at the first audit that needs it
        self._llm_path: str | None = None  # the region_llm this run loaded, released by close()
        self.progress = RunProgress(0, {})  # planned by start() once the schedule is known
        self.strips = TournamentStrips()  # small copies of each tournament's views, for the loop picture
        settings.miner.start_run()  # drift compares audits of this run only

    def start(self, total: int, batch: int) -> None:
        """Plan the run's one progress bar: the steps, plus a reserve for each audit the schedule will run."""
        self.n_steps = total
        audited = [i for i in range(1, total) if self.s.guard.schedule.is_audited(i, total)]
        reserves = {i: self._audit_reserve(i, batch) for i in audited}
        bar = comfy.utils.ProgressBar(1)
        self.progress = RunProgress(total, reserves, lambda value, grand: bar.update_absolute(value, grand))

    def _audit_reserve(self, step: int, batch: int) -> int:
        """The most editor model calls one audit can make: K regions per image at the deepest d."""
        knobs = getattr(self.s.policy.policy, "knobs", None) or {}
        d_max = min(step, max(knobs.get("depth", ((step,), None))[0]))
        return self.s.miner.k * batch * editor_calls("invert", d_max, self.s.editor.refine_iters)

    def step_progress(self, step: int, total: int) -> tuple[int, int]:
        return self.progress.at_step(step), self.progress.total

    def is_audited(self, i: int, total: int) -> bool:
        self.n_steps = total
        return self.s.guard.schedule.is_audited(i, total)

    def _user_mask(self, x: torch.Tensor, factor: int) -> torch.Tensor | None:
        m = self.s.miner.user_mask
        if m is None:
            return None
        try:
            check_user_mask(m, x.shape[0], (factor * x.shape[-2], factor * x.shape[-1]))
        except ValueError as exc:
            raise ValueError(f"TiPAI: {exc}") from None
        return m.to(x)

    def audit(self, view) -> torch.Tensor | None:
        t0 = time.perf_counter()
        self._in_audit = True
        try:
            auditor = self.s.auditor.ready()
            model = view.guider.inner_model
            decoder = ComfyAuditDecoder(self.s.vae, model, self.s.editor.decoder)
            if self._miner is None:
                self._miner = self.s.miner.build(auditor, self._refiner())
            step = view.step
            suite = AuditSuite(
                decoder=decoder,
                miner=self._miner,
                auditor=auditor,
                editor=self._editor(auditor, model),
                policy=self.s.policy.policy,
                guard=self._guard(view),
                schedule=self.s.guard.schedule,
                alpha=self.s.guard.alpha,
                n_candidates=self.s.policy.n,
                crop_margin=self.s.editor.crop_margin,
                seed=self.s.policy.seed,
                on_tournament=self.strips,
                region_encoder=self._region_encoder(view),
            )
            new_x, records = audit_step(
                view.x,
                view.x0,
                view.step,
                view.sigmas,
                denoiser=ComfyDenoiser(
                    view.guider, view.model_options, lambda calls: self.progress.in_audit(step, calls)
                ),
                param=parametrisation(model.model_sampling),
                cond=Conditioning(cfg=float(view.guider.cfg)),
                prompt=self.s.prompt,
                suite=suite,
                user_mask=self._user_mask(view.x, decoder.factor),
                costs=self.costs,
            )
        finally:
            self._in_audit = False
            self.seconds += time.perf_counter() - t0
        self.progress.audit_done(view.step)
        self.audited.append(view.step)
        self.records.extend(records)
        if new_x is not None:
            self.accepted.append(view.step)
            self.costs.add(restart_costs(view.x.shape[0]))
        return new_x

    def _refiner(self):
        """The Region Miner's region_llm as the miner's prompter: loaded (through ComfyUI's model management)
        at the run's first audit, one cache of rewrites per run, released by ``close``."""
        path = self.s.miner.llm
        if path is None:
            return None
        from ..tipai_core.prompting.region_refiner import RegionRefiner
        from .region_prompt_node import _CACHE, loaded

        kept = path in _CACHE  # a Region Prompt node's kept model: used, and left as it was
        try:
            entry = loaded(path)
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"TiPAI Region Miner: region_llm: {exc}") from None
        self._llm_path = None if kept else path
        comfy.model_management.load_models_gpu([entry.patcher], force_full_load=True)
        return RegionRefiner(
            entry.lm.model, entry.lm.tokenizer, seed=D.REGION_PROMPT_SEED, max_new_tokens=D.REGION_PROMPT_MAX_NEW_TOKENS
        )

    def close(self) -> None:
        """The run is over (done, failed or cancelled): the language model it loaded leaves memory."""
        if self._llm_path is not None:
            from .region_prompt_node import release

            release(self._llm_path)
            self._llm_path = None

    def _region_encoder(self, view):
        """Region prompts condition the edit when the CLIP is connected (one encoder, one cache, per run)."""
        if self.s.clip is None:
            if self.s.miner.settings.region_prompt or self.s.miner.settings.region_prompts:
                self._warn(
                    "TiPAI: the regions carry prompts but no CLIP is connected, so every region is edited "
                    "under the base prompt; connect the CLIP that encoded the positive prompt"
                )
            return None
        if self._encoder is None:
            self._encoder = ComfyRegionEncoder(self.s.clip, view.guider, view.x, view.seed)
        return self._encoder

    def _warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)
            log.warning(msg)

    def _editor(self, auditor, model):
        if self.s.editor.uses_learned:
            return self.s.editor.build(auditor, model=model, vae=self.s.vae)
        if self.s.editor.backend != "referee":
            return self.s.editor.build()
        from .referee_node import ModelSpaceGradDecoder

        return self.s.editor.build(auditor, ModelSpaceGradDecoder(self.s.vae, model), self.s.prompt)

    def _guard(self, view):
        if view.exact:
            return self.s.guard.guard
        msg = (
            "TiPAI: this sampler does not expose its current latent at the audited steps, so the audits run "
            "and are logged but no edit is accepted (use euler, ddim, dpmpp_2m, uni_pc or another sampler "
            "that evaluates the model at each step's sigma)"
        )
        self._warn(msg)
        return ObservingGuard(self.s.guard.guard, msg)

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
        self.on_finished = None  # called with (run, output latent) for each run that completed
        self.inputs = ModelInputs()  # the true latent of each step (PREDICT_NOISE wrapper)

    def sampler_sample(self, executor, *args, **kwargs):
        run = TiPAIRun(self.settings)
        sigmas = kwargs.get("sigmas", args[1] if len(args) > 1 else None)
        noise = kwargs.get("noise", args[4] if len(args) > 4 else None)
        # a 1-step run audits nothing, still has 1 step
        run.start(0 if sigmas is None else len(sigmas) - 1, 1 if noise is None else int(noise.shape[0]))
        self.run = run
        try:
            inner = make_sampler_wrapper(run.audit, run.is_audited, inputs=self.inputs, progress=run.step_progress)
            out = inner(executor, *args, **kwargs)
            if self.on_finished is not None:
                guider = kwargs.get("guider", args[0] if args else None)
                # the sampler returns the model's latent space; the VAE decodes the processed one
                latent = guider.model_patcher.model.process_latent_out(out) if guider is not None else None
                self.on_finished(run, latent)
            return out
        finally:
            # whatever happens (an error, a Cancel), the next run starts clean
            run.close()
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
    install(patched, slot.sampler_sample, slot.inputs, slot.apply_model)
    return patched, slot
