"""The latent blend of an accepted edit: ``z ← (1 - α(t)·m)·z_ctrl + α(t)·m·z_edit``.

m is the edit's soft latent mask in [0, 1] and α(t) ∈ [0, 1] a schedule over sampling progress
(``schedules.Schedule``). Where ``m == 0`` the result is ``z_ctrl`` bit for bit: that is the
non-regression promise, so it is enforced with a select rather than left to arithmetic.
"""

from __future__ import annotations

import torch

from ..diffusion.ddim import check_latent
from ..diffusion.schedules import Schedule
from ..mining.masks import check_mask_matches


def alpha_at(alpha: Schedule | float, t: float) -> float:
    """α(t), checked to lie in [0, 1]."""
    a = float(alpha(t)) if isinstance(alpha, Schedule) else float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {a} at t={t}")
    return a


def latent_blend(z_ctrl: torch.Tensor, z_edit: torch.Tensor, m: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - α·m)·z_ctrl + α·m·z_edit``, equal to ``z_ctrl`` exactly where ``α·m == 0``."""
    check_latent(z_ctrl, "z_ctrl")
    check_latent(z_edit, "z_edit")
    if z_edit.shape != z_ctrl.shape:
        raise ValueError(f"z_edit of shape {tuple(z_edit.shape)} does not match z_ctrl {tuple(z_ctrl.shape)}")
    check_mask_matches(m, z_ctrl, "m")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    w = alpha * m.to(z_ctrl.dtype)
    return torch.where(w == 0, z_ctrl, (1 - w) * z_ctrl + w * z_edit)
