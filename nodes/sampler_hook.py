"""The TiPAI hook into ComfyUI sampling: audit in the step callback, restart only on acceptance.

A keyed ``SAMPLER_SAMPLE`` wrapper runs the sampler as usual and hands it a callback of its own.
At an audited step the callback already holds x (at σ_i) and x̂0 (``denoised``), so the audit
costs no extra model call. When the audit accepts nothing, the callback returns and the sampler
goes on untouched: the run is the sampler's own run, bit for bit (docs/host.md, "Sampler-hook
facts"). When it accepts an edit, the callback raises ``_EditAccepted``; the wrapper catches it
and runs the sampler again on ``sigmas[i:]`` starting exactly at the edited x.

The callback's own x is not always the sampler's state (uni_pc passes a rescaled x/√(1+σ²);
ipndm, ipndm_v and deis pass their starting latent at every step). So a keyed ``PREDICT_NOISE``
wrapper records the latent of the model call that made x̂0: at a step whose last model call was at
exactly σ_i, that input *is* the current latent, and the audit and any restart use it. Where no
such call precedes the callback (dpm_fast and dpm_adaptive pick their own sigmas), the audit still
runs and is logged, but acceptance is off for that sampler (``StepView.exact`` is False).

Why not pre-split the schedule: ancestral/SDE samplers would restart their noise stream,
multistep samplers would lose their history, and every segment start would be noise-scaled
again, so even a run with nothing accepted would differ from plain sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import comfy.patcher_extension
import torch

WRAPPER_KEY = "tipai"
# A restart must not replay the noise of step 0: derive a distinct sampler seed per restart.
_RESTART_SEED_STRIDE = 1_000_003


@dataclass
class StepView:
    """What the audit sees at step i: all of it comes from the sampler, nothing is recomputed."""

    step: int
    total_steps: int
    sigmas: torch.Tensor  # the full schedule of this sampling call
    x: torch.Tensor  # the current latent at sigma_i, in the model's space
    x0: torch.Tensor  # the sampler's own x̂0 prediction at sigma_i
    guider: Any  # comfy.samplers.CFGGuider: inner_model, conds, cfg
    model_options: dict
    seed: int | None
    denoise_mask: torch.Tensor | None
    exact: bool = True  # x is the sampler's true state at σ_i, so an edit of it can be restarted from


AuditFn = Callable[[StepView], "torch.Tensor | None"]


@dataclass
class HookStats:
    restarts: int = 0
    audited_steps: list[int] = field(default_factory=list)


class ModelInputs:
    """The latent and σ of the last guider call (``PREDICT_NOISE``), set by ``predict_noise_wrapper``."""

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None
        self.sigma: torch.Tensor | None = None

    def wrapper(self, executor, x, timestep, model_options={}, seed=None):  # noqa: B006 - ComfyUI's signature
        self.x, self.sigma = x, timestep
        return executor(x, timestep, model_options, seed)

    def state_at(self, sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        """The true latent at ``sigma`` when the last model call was there with a latent like ``like``."""
        if self.x is None or self.sigma is None or self.x.shape != like.shape:
            return None
        s = torch.as_tensor(self.sigma).reshape(-1).float().cpu()
        if s.numel() == 0 or not torch.equal(s, torch.full_like(s, float(sigma))):
            return None
        return self.x


class _EditAccepted(Exception):
    def __init__(self, step: int, x: torch.Tensor):
        super().__init__(step)
        self.step, self.x = step, x


def _restart_inputs(
    sampler,
    guider,
    sigmas: torch.Tensor,
    x: torch.Tensor,
    latent_image: torch.Tensor | None,
    denoise_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (noise, latent_image) that make the sampler's own noise scaling start exactly at x.

    Without an inpainting mask: zero noise and x itself as the latent, which eps models scale to
    x exactly (``0·σ + x``). Otherwise the original ``latent_image`` must stay, because the
    sampler re-composites outside its mask from it; noise scaling is affine in the noise,
    ``n ↦ a·n + b`` (eps: ``σ·n + latent``; flow: ``σ·n + (1-σ)·latent``), so ``n = (x - b)/a``.
    """
    ms = guider.inner_model.model_sampling
    max_denoise = bool(sampler.max_denoise(guider, sigmas)) if hasattr(sampler, "max_denoise") else False
    zeros = torch.zeros_like(x)
    if denoise_mask is None and torch.equal(ms.noise_scaling(sigmas[0], zeros.clone(), x, max_denoise), x):
        return zeros, x
    base = (latent_image if latent_image is not None else zeros).to(x)
    b = ms.noise_scaling(sigmas[0], zeros.clone(), base, max_denoise)
    a = ms.noise_scaling(sigmas[0], torch.ones_like(x), base, max_denoise) - b
    return (x - b) / a, base


def make_sampler_wrapper(
    audit: AuditFn,
    audited_steps: Callable[[int, int], bool],
    stats: HookStats | None = None,
    inputs: ModelInputs | None = None,
    progress: Callable[[int, int], tuple[int, int]] | None = None,
):
    """Build the keyed SAMPLER_SAMPLE wrapper. ``audited_steps(i, total)`` says which steps to audit;
    ``inputs`` (installed as the PREDICT_NOISE wrapper of the same model) gives the true latent.
    ``progress(step, total)`` -> ``(value, grand_total)`` re-counts the sampler's own progress callback
    on a bar that also covers the audits (``progress.RunProgress``); without it the callback sees the
    step as is."""
    stats = stats if stats is not None else HookStats()

    def sampler_sample(
        executor, guider, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False
    ):
        total = len(sigmas) - 1
        offset = 0
        run_sigmas, run_noise, run_latent, run_args = sigmas, noise, latent_image, extra_args
        while True:

            def step_callback(i, denoised, x, _steps, _offset=offset, _args=run_args):
                step = _offset + i
                if callback is not None:
                    # the callback shows (its step + 1) of its total: hand it the run's own count
                    value, grand = progress(step, total) if progress is not None else (step + 1, total)
                    callback(value - 1, denoised, x, grand)
                # i == 0 is step 0 (x̂0 is pure noise) or, after a restart, the step just audited; dpm_fast and
                # dpm_adaptive count steps of their own, which can run past the schedule's end
                if i == 0 or step >= total or not audited_steps(step, total):
                    return
                stats.audited_steps.append(step)
                state = inputs.state_at(sigmas[step], x) if inputs is not None else None
                view = StepView(
                    step,
                    total,
                    sigmas,
                    x if state is None else state,
                    denoised,
                    guider,
                    _args["model_options"],
                    _args.get("seed"),
                    denoise_mask,
                    exact=state is not None,
                )
                edited = audit(view)
                if edited is not None and view.exact:
                    raise _EditAccepted(step, edited)

            try:
                return executor(
                    guider, run_sigmas, run_args, step_callback, run_noise, run_latent, denoise_mask, disable_pbar
                )
            except _EditAccepted as acc:
                stats.restarts += 1
                offset = acc.step
                run_sigmas = sigmas[acc.step :]
                run_args = dict(extra_args)
                if extra_args.get("seed") is not None:
                    run_args["seed"] = int(extra_args["seed"]) + _RESTART_SEED_STRIDE * stats.restarts
                run_noise, run_latent = _restart_inputs(
                    executor.class_obj, guider, run_sigmas, acc.x, latent_image, denoise_mask
                )

    return sampler_sample


def patch_model(model, audit: AuditFn, audited_steps: Callable[[int, int], bool], stats: HookStats | None = None):
    """A clone of ``model`` that runs the audit inside any sampler node (KSampler, SamplerCustomAdvanced...)."""
    patched = model.clone()
    install(patched, make_sampler_wrapper(audit, audited_steps, stats, inputs := ModelInputs()), inputs)
    return patched


def install(patched, sampler_sample, inputs: ModelInputs, apply_model=None) -> None:
    """Put TiPAI's keyed wrappers on a cloned model (replacing any of ours already there)."""
    wrappers = [
        (comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, sampler_sample),
        (comfy.patcher_extension.WrappersMP.PREDICT_NOISE, inputs.wrapper),
    ]
    if apply_model is not None:
        wrappers.append((comfy.patcher_extension.WrappersMP.APPLY_MODEL, apply_model))
    for kind, fn in wrappers:
        patched.remove_wrappers_with_key(kind, WRAPPER_KEY)
        patched.add_wrapper_with_key(kind, WRAPPER_KEY, fn)
