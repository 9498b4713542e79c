"""A_g by referee inversion: the loop's editor backend ``referee``.

Candidate n refines the control's x̂0 at the audited step inside its action mask (dilation and
feather of the region, as the diffusion editor's), with its own seed, so the N candidates differ by
their augmentation draws; the knob ``depth`` d scales the optimisation, ``d · steps`` steps. The
candidate keeps the control's noise: with ``x = a(σ)·x0 + b(σ)·ε``,

    x_n = x + a(σ) · (x̂0_n - x̂0)        (eps: a = 1; flow: a = 1 - σ),

so it is the control exactly where the mask is 0, and sampling goes on from it. Its costs are what
the refine spent (decoder passes, auditor images forward and backward); it makes no denoiser call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from ..policy.actions import Action
from ..protocols import EditContext, EditResult
from ..records.costs import Costs
from .diffusion_editor import action_mask
from .referee import RefereeSettings, referee_refine


class RefereeEditor:
    """``prompt`` None: each tournament's own prompt (``EditContext.prompt``)."""

    def __init__(self, auditor, decoder, prompt: str | None = None, settings: RefereeSettings | None = None):
        self.auditor, self.decoder, self.prompt = auditor, decoder, prompt
        self.settings = settings or RefereeSettings(steps=8, n_augment=4)

    def __call__(self, ctx: EditContext, region_mask: torch.Tensor, actions: Sequence[Action]) -> EditResult:
        a, _ = ctx.param.coefficients(float(ctx.sigmas[ctx.step]))
        latents, x0s, masks = [], [], []
        costs = Costs()
        for act in actions:
            m = action_mask(region_mask, act).to(ctx.x0)
            hard = m > 0
            if not hard.any():  # a mask feathered to nothing: the control itself
                latents.append(ctx.x)
                x0s.append(ctx.x0)
                masks.append(m)
                continue
            s = replace(self.settings, seed=int(act.seed), steps=self.settings.steps * max(1, int(act.depth)))
            prompt = self.prompt if self.prompt is not None else ctx.prompt
            res = referee_refine(ctx.x0, prompt, self.auditor, self.decoder, mask=hard.float(), settings=s)
            latents.append(torch.where(hard, ctx.x + a * (res.latent - ctx.x0), ctx.x))
            x0s.append(res.latent)
            masks.append(m)
            costs.decode_calls += res.decoder_calls
            costs.decoded_images += res.decoder_calls * ctx.x0.shape[0]
            # images through A_s: calls count forward and backward passes, images the forward ones
            costs.auditor_calls += res.auditor_forwards + res.auditor_backwards
            costs.auditor_images += res.auditor_forwards
        return EditResult(torch.cat(latents), torch.cat(x0s), torch.cat(masks), costs=costs)


__all__ = ["RefereeEditor"]
