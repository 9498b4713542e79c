"""Per-candidate editor routing: each action's ``editor`` knob picks the backend that makes it.

``RoutedEditor(diffusion, learned)`` sends the actions whose editor is ``"learned"`` to the learned
editor and the rest (``"invert"``, ``"renoise"``) to the diffusion editor, then puts the candidates back
in the actions' order, so a TSPO policy can trade a cheap learned candidate against a diffusion one
inside one tournament. With ``force`` set, every action goes to that backend whatever its knob says
(the ``learned`` backend of the nodes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..policy.actions import Action
from ..protocols import EditContext, EditResult
from ..records.costs import Costs


class RoutedEditor:
    def __init__(self, diffusion, learned, force: str | None = None):
        if force not in (None, "learned", "diffusion"):
            raise ValueError(f"force must be None, 'learned' or 'diffusion', got {force!r}")
        self.diffusion, self.learned, self.force = diffusion, learned, force

    def route(self, action: Action) -> str:
        if self.force is not None:
            return self.force
        return "learned" if action.editor == "learned" else "diffusion"

    def __call__(self, ctx: EditContext, region_mask: torch.Tensor, actions: Sequence[Action]) -> EditResult:
        parts: dict[str, list[int]] = {}
        for j, a in enumerate(actions):
            parts.setdefault(self.route(a), []).append(j)
        if len(parts) == 1:
            ((kind, _),) = parts.items()
            return (self.learned if kind == "learned" else self.diffusion)(ctx, region_mask, actions)
        n = len(actions)
        latents = ctx.x.new_empty((n, *ctx.x.shape[1:]))
        x0 = ctx.x.new_empty((n, *ctx.x.shape[1:]))
        masks = ctx.x.new_empty((n, 1, *ctx.x.shape[2:]))
        costs = Costs()
        for kind, idx in parts.items():
            editor = self.learned if kind == "learned" else self.diffusion
            res = editor(ctx, region_mask, [actions[j] for j in idx])
            sel = torch.tensor(idx)
            latents[sel], x0[sel], masks[sel] = res.latents, res.x0, res.masks
            if res.costs is not None:
                costs.add(res.costs)
        return EditResult(latents, x0, masks, costs=costs)


__all__ = ["RoutedEditor"]
