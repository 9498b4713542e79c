"""The auditor's answer for one tournament, shared by the auditor (A_s) and the loop.

Symbols (TiPAI paper):
    S   global image–text score S(p, I)           shape [B]
    S_R patch score S_R(p, I_R) on the region     shape [B]
    F   faithfulness                               shape [B]
    P   policy safety per class, P = 1 - risk      shape [B, C]
    B   seam quality exp(-κ · LPIPS on a ring)     shape [B]
Index 0 of the batch is always the unedited control C_0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AuditScores:
    S: torch.Tensor
    S_R: torch.Tensor
    F: torch.Tensor
    P: torch.Tensor
    B: torch.Tensor
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        n = self.S.shape[0]
        for name in ("S_R", "F", "B"):
            t = getattr(self, name)
            if t.shape != (n,):
                raise ValueError(f"AuditScores.{name} must have shape ({n},), got {tuple(t.shape)}")
        if self.P.dim() != 2 or self.P.shape[0] != n:
            raise ValueError(f"AuditScores.P must have shape ({n}, C), got {tuple(self.P.shape)}")
        if self.classes and len(self.classes) != self.P.shape[1]:
            raise ValueError(f"AuditScores.classes names {len(self.classes)} classes but P has {self.P.shape[1]}")

    def __len__(self) -> int:
        return int(self.S.shape[0])
