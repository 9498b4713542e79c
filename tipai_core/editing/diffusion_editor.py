"""A_g, the training-free diffusion editor: N candidates for one region, in one batch.

Every candidate n starts from the control state ``x`` at σ_i (step i) and its x̂0, with the soft
latent mask ``m_n = feather(dilate(region, dilation_n), feather_n)``:

1. Re-noise the region by d steps, to σ_{i-d}:
   * ``invert``: DDIM inversion of x under the base conditioning (``ddim.ddim_invert``);
   * ``renoise``: ``x_hi = a(σ_{i-d})·x̂0 + b(σ_{i-d})·ε̂``, with ε̂ the control's implied noise.
   Jitter j mixes in fresh noise from the action's seed: ``ε ← √(1-j²)·ε + j·ε_seed``.
2. Re-denoise d DDIM steps back to σ_i with CFG ``w_in`` inside m (the base w outside), the
   regional conditioning and its emphasis.
3. After every step, outside the mask the latent is the control's DDIM projection
   ``a(σ_k)·x̂0 + b(σ_k)·ε̂`` (blended diffusion), and at σ_i it is the control x itself, bit for bit
   where m == 0.

Finally one more call gives each candidate's x̂0 at σ_i, the audit view the auditor scores.
Denoiser calls per region: ``d·(1 + refine_iters) + d + 1`` (invert) or ``d + 1`` (renoise),
each on a batch of the candidates that share (editor, d, region text).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import interrupt
from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import check_latent, ddim_invert, ddim_segment
from ..mining.masks import check_mask_matches, dilate, feather
from ..policy.actions import Action
from ..protocols import EditContext, EditResult
from ..records.costs import editor_calls


def action_mask(region_mask: torch.Tensor, action: Action) -> torch.Tensor:
    """``m = feather(dilate(region, dilation), feather)`` in latent pixels; all ones for a global action."""
    if action.scope == "global":
        return torch.ones_like(region_mask)
    return feather(dilate(region_mask, action.dilation), action.feather)


def seeded_noise(seed: int, like: torch.Tensor) -> torch.Tensor:
    """ε_seed ``[C, h, w]`` from the action's own generator (never the sampler's)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(like.shape[1:], generator=gen, dtype=like.dtype).to(like.device)


def check_edit(ctx: EditContext, region_mask: torch.Tensor, actions: Sequence[Action]) -> None:
    """What every editor needs: a finite control of one image, a region of its size that is not empty, N >= 1."""
    check_latent(ctx.x, "x")
    check_latent(ctx.x0, "x0")
    if ctx.x.shape[0] != 1:
        raise ValueError(f"the editor takes the control of one image, x has batch {ctx.x.shape[0]}")
    check_mask_matches(region_mask, ctx.x, "region_mask")
    if not (region_mask > 0).any():
        raise ValueError("region_mask is all zero: nothing to edit")
    if len(actions) < 1:
        raise ValueError(f"N must be >= 1, got {len(actions)} actions")


def check_actions(actions: Sequence[Action], i: int) -> None:
    """Each action of a diffusion kind, with d no deeper than the steps above step i."""
    for a in actions:
        if a.editor == "learned":
            raise ValueError(
                "an action asks for the learned editor; the diffusion editor cannot make it (route the "
                "candidates with editing.routing.RoutedEditor and a LearnedEditor)"
            )
        if a.depth > i:
            raise ValueError(f"d={a.depth} is larger than the steps left to re-noise above step {i} ({i})")


class DiffusionEditor:
    """The editor A_g as described in the module docstring; ``refine_iters`` sharpens the inversion."""

    def __init__(self, refine_iters: int = 0):
        if refine_iters < 0:
            raise ValueError(f"refine_iters must be >= 0, got {refine_iters}")
        self.refine_iters = refine_iters

    def calls_per_region(self, editor: str, d: int) -> int:
        """Denoiser calls for one (editor, d) group of candidates."""
        return editor_calls(editor, d, self.refine_iters)

    def __call__(self, ctx: EditContext, region_mask: torch.Tensor, actions: Sequence[Action]) -> EditResult:
        x, x0, i = ctx.x, ctx.x0, ctx.step
        check_edit(ctx, region_mask, actions)
        check_actions(actions, i)
        if not ctx.sigmas[i] > 0:
            raise ValueError(f"cannot edit at sigma 0 (step {i})")

        param, sigmas = ctx.param, ctx.sigmas
        n = len(actions)
        masks = torch.cat([action_mask(region_mask.to(x.dtype), a) for a in actions])
        eps_ctrl = param.eps_from(x, x0, sigmas[i])
        latents = x.new_empty((n, *x.shape[1:]))
        cand_x0 = x.new_empty((n, *x.shape[1:]))

        groups: dict[tuple[str, int, str], list[int]] = {}
        for j, a in enumerate(actions):
            groups.setdefault((a.editor, a.depth, a.region_text), []).append(j)
        for (kind, d, text), idx in groups.items():
            interrupt.check()  # between candidate groups
            sel = torch.tensor(idx)
            m = masks[sel]
            acts = [actions[j] for j in idx]
            cfg_in = torch.tensor([a.cfg_inside for a in acts], dtype=x.dtype)
            emph = torch.tensor([a.emphasis for a in acts], dtype=x.dtype)
            base = ctx.cond if ctx.cond is not None else Conditioning()
            # region_text "base": the base prompt inside the mask too, even where the region has its own
            cond_n = base.with_region(m, cfg_in, emph, ctx.region_payload if text == "region" else None)
            jit = torch.tensor([a.jitter for a in acts], dtype=x.dtype).reshape(-1, 1, 1, 1)
            fresh = torch.stack([seeded_noise(a.seed, x) for a in acts])
            hi = i - d

            def ctrl_at(k: int) -> torch.Tensor:
                return param.noise(x0, eps_ctrl, sigmas[k])

            rows = x.expand(len(idx), *x.shape[1:])
            if kind == "invert":
                x_hi, x0_hi = ddim_invert(ctx.denoiser, rows, sigmas, i, d, ctx.cond, param, self.refine_iters)
                eps_hi = param.eps_from(x_hi, x0_hi, sigmas[hi])
            else:
                x0_hi, eps_hi = x0.expand_as(rows), eps_ctrl.expand_as(rows)
                x_hi = param.noise(x0_hi, eps_hi, sigmas[hi])
            jittered = param.noise(x0_hi, torch.sqrt(1 - jit * jit) * eps_hi + jit * fresh, sigmas[hi])
            x_hi = torch.where(jit == 0, x_hi, jittered)

            def outside(k: int, xk: torch.Tensor, m=m) -> torch.Tensor:
                c = ctrl_at(k)
                return torch.where(m == 0, c, m * xk + (1 - m) * c)

            z = ddim_segment(ctx.denoiser, outside(hi, x_hi), sigmas, hi, i, cond_n, param, after_step=outside)
            z = torch.where(m == 0, x, m * z + (1 - m) * x)
            latents[sel] = z
            cand_x0[sel] = ctx.denoiser(z, sigmas[i], cond_n)
        return EditResult(latents, cand_x0, masks)
