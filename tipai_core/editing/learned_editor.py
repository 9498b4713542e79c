"""A_g as a trained network: the loop's editor backend ``learned``.

For a region of the control at step i (x at σ_i, its x̂0, audit view v = to_space(x̂0)):

1. each candidate n gets its action mask ``m_n`` (dilation, feather, as the diffusion editor's) and
   its own noise ε_n from the action's seed; inside the hard mask h_n = [m_n > 0] the view is replaced
   by ``√(1 − s²)·v + s·ε_n`` (s = ``strength``; 1 is the design's pure noise);
2. one batched forward of the network for all N (and one of the null branch for the candidates that are
   guided): ``Î = Î_∅ + w_n·(Î_p − Î_∅)``,
   w_n = cfg_inside / the base CFG, so an action whose inside CFG equals the base CFG takes the plain
   conditional prediction, and a higher one pushes further toward the prompt;
3. back in the model's space, ``ẑ_n = from_space(Î)``; the candidate's x̂0 is ``m_n·ẑ_n + (1 − m_n)·x̂0``
   and it keeps the control's noise, ``x_n = x + a(σ_i)·(x̂0_n − x̂0)``, which is x bit for bit where
   m_n = 0;
4. with ``audit_call`` (the default) one denoiser call on the N candidates gives their x̂0 at σ_i, the
   audit view the auditor judges, as for the diffusion editor (without it, the view is x̂0_n itself).

Cost per region: 1 denoiser call (audit_call) on N rows, and 1 or 2 editor forwards on N rows plus one
row per guided candidate (``Costs.editor_calls`` / ``editor_images``), against d + 1 (renoise) or
2d + 1 (invert) calls for the diffusion editor. The knobs it reads: dilation, feather, cfg_inside and
seed; depth, jitter, emphasis and region_text do not apply to it (the records still log them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .. import interrupt
from ..policy.actions import Action
from ..protocols import EditContext, EditResult
from ..records.costs import Costs
from .diffusion_editor import action_mask, check_edit, seeded_noise
from .learned_file import EditorIdentity
from .learned_net import EditorNet

Space = Callable[[torch.Tensor], torch.Tensor]


def editor_input(
    view: torch.Tensor, hard: torch.Tensor, noise: torch.Tensor, strength: float | torch.Tensor
) -> torch.Tensor:
    """X = v ⊙ (1 − h) + (√(1 − s²)·v + s·ε) ⊙ h: the view with the region noised (pure noise at s = 1);
    ``strength`` a number or one per row ``[B]``."""
    s = torch.as_tensor(strength, dtype=view.dtype, device=view.device).reshape(-1, 1, 1, 1)
    inside = torch.sqrt(1.0 - s * s) * view + s * noise
    return torch.where(hard > 0, inside, view)


def guided(net: EditorNet, x: torch.Tensor, hard: torch.Tensor, text: torch.Tensor, t: torch.Tensor, w: torch.Tensor):
    """(Î [B, C, H, W], forwards, rows): ``Î_∅ + w·(Î_p − Î_∅)``; the null branch runs only on the rows whose
    w is not 1 (a second forward on those rows), so a candidate at the base CFG costs one row."""
    cond = net(x, hard, text, t)
    idx = torch.nonzero(w != 1).flatten()
    if len(idx) == 0:
        return cond, 1, len(x)
    null = net(x[idx], hard[idx], None, t[idx])
    out = cond.clone()
    out[idx] = null + w[idx].reshape(-1, 1, 1, 1).to(cond) * (cond[idx] - null)
    return out, 2, len(x) + len(idx)


class LearnedEditor:
    """``text_features(prompt) -> [D]``: the encoder the editor was trained on (the auditor's).

    ``to_space`` / ``from_space``: model space -> the editor's space and back (both the identity for an
    editor of the model's own space; the VAE decode and encode for an RGB editor on a latent model).
    """

    def __init__(
        self,
        net: EditorNet,
        identity: EditorIdentity,
        text_features: Callable[[str], torch.Tensor],
        to_space: Space | None = None,
        from_space: Space | None = None,
        strength: float = 1.0,
        audit_call: bool = True,
    ):
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"learned editor strength must be in (0, 1], got {strength!r}")
        self.net, self.identity = net, identity
        self.text_features = text_features
        self.to_space, self.from_space = to_space, from_space
        self.strength, self.audit_call = float(strength), bool(audit_call)

    def calls_per_region(self, editor: str = "learned", d: int = 0) -> int:
        return 1 if self.audit_call else 0

    def __call__(self, ctx: EditContext, region_mask: torch.Tensor, actions: Sequence[Action]) -> EditResult:
        x, x0, i = ctx.x, ctx.x0, ctx.step
        check_edit(ctx, region_mask, actions)
        if not ctx.prompt or not ctx.prompt.strip():
            raise ValueError("the learned editor needs the tournament's prompt (EditContext.prompt is empty)")
        interrupt.check()
        n = len(actions)
        masks = torch.cat([action_mask(region_mask.to(x.dtype), a) for a in actions])
        p = next(self.net.parameters())
        with torch.no_grad():
            view = x0 if self.to_space is None else self.to_space(x0)
            view = view.to(p)
            if view.shape[1] != self.identity.arch.channels:
                raise ValueError(
                    f"the learned editor works on {self.identity.arch.channels}-channel {self.identity.space} "
                    f"images; the view here has {view.shape[1]} channels"
                )
            hard = F.interpolate((masks > 0).to(p), size=view.shape[-2:], mode="nearest")
            noise = torch.stack([seeded_noise(a.seed, view).to(p) for a in actions])
            xin = editor_input(view.expand(n, -1, -1, -1), hard, noise, self.strength)
            steps = max(ctx.sigmas.numel() - 1, 1)
            t = torch.full((n,), self.identity.clamp_t(i / steps), device=p.device, dtype=p.dtype)
            text = self.text_features(ctx.prompt).to(p).reshape(1, -1).expand(n, -1)
            base_cfg = float(ctx.cond.cfg) if ctx.cond is not None and float(ctx.cond.cfg) > 0 else 1.0
            w = torch.tensor([a.cfg_inside / base_cfg for a in actions], device=p.device, dtype=p.dtype)
            pred, forwards, rows = guided(self.net, xin, hard, text, t, w)
            z_hat = pred if self.from_space is None else self.from_space(pred)
            z_hat = z_hat.to(x)
        a, _ = ctx.param.coefficients(float(ctx.sigmas[i]))
        x0_n = torch.where(masks == 0, x0, masks * z_hat + (1 - masks) * x0)
        latents = torch.where(masks == 0, x, x + a * (x0_n - x0))
        cand_x0 = ctx.denoiser(latents, ctx.sigmas[i], ctx.cond) if self.audit_call else x0_n
        costs = Costs(editor_calls=forwards, editor_images=rows)
        return EditResult(latents, cand_x0, masks, costs=costs)


__all__ = ["LearnedEditor", "editor_input", "guided"]
