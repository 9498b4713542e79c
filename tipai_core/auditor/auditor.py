"""The auditor A_s: one batched judgement of the control and its candidates.

For images I_0..I_N (I_0 the unedited control C_0), a prompt p and the region mask m:

    S   = S(p, I_i)          global score                      heads.global_score
    S_R = S_R(p, I_i,R)      patch score pooled over R          heads.patch_scores + pool_region
    F   = faithfulness                                          heads.faithfulness
    P_c = 1 − risk_c(I_i)    policy safety per class            heads.policy_logits
    B   = exp(−κ · d_ring)   seam quality, B_0 = 1              seam.SeamQuality
    r_c ∈ [0,1]^{H×W}        per-class risk map                 heads.risk_logits, upsampled

The image tower runs once per call for the whole batch, so a tournament costs one E_i forward per
region; text features come from a per-prompt cache. With no trained heads the auditor is zero-shot.
It is an nn.Module (``.model`` is itself) so that a host can hand it to its memory manager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..protocols import AuditScores
from .backbones import ImageTextBackbone, load_backbone
from .heads import AuditorHeads, load_heads
from .seam import SeamQuality
from .text_cache import TextFeatureCache
from .zero_shot import PolicyClasses

log = logging.getLogger(__name__)

RANGE_TOLERANCE = 1e-2  # images a hair outside [0,1] (resampling overshoot) are clamped, not refused


@dataclass
class AuditResult:
    scores: AuditScores
    risk_maps: torch.Tensor  # [B,C,H,W] in [0,1]


def as_policy(classes: PolicyClasses | Mapping[str, Any] | list[str] | tuple[str, ...] | None) -> PolicyClasses:
    if classes is None:
        return PolicyClasses()
    if isinstance(classes, PolicyClasses):
        return classes
    if isinstance(classes, Mapping):
        return PolicyClasses(prompts={k: tuple(v) for k, v in classes.items()})
    return PolicyClasses.from_names(list(classes))


def _composite(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) -> [B,3,H,W].

    Alpha is composited over white, I = α·I_c + (1 − α)·1, as the dataset decoder does; differentiable.
    """
    c = x.shape[1]
    if c in (2, 4):
        colour, alpha = x[:, :-1], x[:, -1:]
        x = colour * alpha + (1.0 - alpha)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def to_image_tensor(images: Any) -> torch.Tensor:
    """What the auditor accepts as images -> a tensor [B,C,H,W] with C ∈ {1,2,3,4}.

    * a tensor [B,C,H,W] or one image [C,H,W] (channels first, C ∈ {1,2,3,4}); float in [0,1] or uint8;
    * a PIL image of any size and mode, or a list of PIL images and/or [C,H,W] tensors of any sizes: each
      is made RGB and all are resized (bilinear, antialiased) to the first one's size.
    """
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list")
        items = [to_image_tensor(im) for im in images]
        if any(t.shape[0] != 1 or not t.is_floating_point() for t in items):
            raise ValueError("a list of images must hold single images ([C,H,W] float/uint8 tensors or PIL images)")
        items = [_composite(t) for t in items]  # RGB first: items may differ in channels as well as size
        h, w = items[0].shape[-2:]
        return torch.cat(
            [
                t
                if t.shape[-2:] == (h, w)
                else F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
                for t in items
            ]
        )
    if not isinstance(images, torch.Tensor):
        try:
            from PIL import Image

            has_pil = True
        except ImportError:  # pragma: no cover - PIL ships with torchvision
            has_pil = False
        if has_pil and isinstance(images, Image.Image):
            from .data import pil_to_tensor

            return pil_to_tensor(images, "RGB")[None]
        raise ValueError(
            f"images must be a tensor [B,C,H,W], a PIL image or a list of them, got {type(images).__name__}"
        )
    x = images[None] if images.dim() == 3 else images
    if x.dim() != 4 or x.shape[1] not in (1, 2, 3, 4):
        hint = (
            " (channels last, as ComfyUI's IMAGE? permute to [B,C,H,W])"
            if x.dim() == 4 and x.shape[-1] in (1, 3, 4)
            else ""
        )
        raise ValueError(
            f"images must be a tensor [B,C,H,W] with C in 1..4 (grey, grey+alpha, RGB, RGBA), "
            f"got {tuple(images.shape)}{hint}"
        )
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    return x


def check_images(images: Any) -> torch.Tensor:
    """Images as ``to_image_tensor`` accepts them, finite and in [0,1] -> float [B,3,H,W] clamped to [0,1]."""
    x = to_image_tensor(images)
    if x.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if not x.is_floating_point():
        raise ValueError(f"images must be float in [0,1] or uint8, got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise ValueError(f"images must be in [0,1], got values in [{lo:.3g}, {hi:.3g}]")
    return _composite(x.clamp(0.0, 1.0))


def check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    return prompt.strip()


def as_batch_mask(mask: torch.Tensor | None, n: int, h: int, w: int) -> torch.Tensor | None:
    """None, [H',W'], [1,H',W'], [B,H',W'] or [B|1,1,H',W'] -> [B,1,H,W] float in [0,1] at image size."""
    if mask is None:
        return None
    m = mask.float()
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    if m.dim() != 4 or m.shape[1] != 1 or m.shape[0] not in (1, n):
        raise ValueError(f"mask must be [H,W], [1,H,W], [B,1,H,W] with B={n}; got {tuple(mask.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("mask contains NaN or Inf values")
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return m.clamp(0.0, 1.0).expand(n, 1, h, w)


class Auditor(nn.Module):
    """A_s = backbone (E_i, E_t) + heads (zero-shot or trained) + seam measure + text cache."""

    def __init__(
        self,
        backbone: ImageTextBackbone,
        heads: AuditorHeads | None = None,
        classes: PolicyClasses | Mapping[str, Any] | list[str] | None = None,
        seam: SeamQuality | None = None,
        text_cache_size: int = 512,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.text_cache = TextFeatureCache(self._encode_text, max_entries=text_cache_size)
        if heads is None:
            policy = as_policy(classes)
            heads = AuditorHeads.zero_shot(
                backbone.identity(), policy, float(backbone.logit_scale()), self.text_features
            )
        elif classes is not None and tuple(as_policy(classes).names) != heads.classes:
            raise ValueError(
                f"trained heads score the classes {heads.classes}; got classes={list(as_policy(classes).names)}"
            )
        self.heads = heads.to(backbone.device)
        self.seam = seam if seam is not None else SeamQuality()
        # Optional hook (Stage C): maps raw AuditScores to calibrated ones, applied at the end of score().
        self.calibration: Callable[[AuditScores], AuditScores] | None = None

    @classmethod
    def from_files(
        cls,
        backbone: str | Path,
        *,
        arch: str | None = None,
        heads: str | Path | None = None,
        classes: PolicyClasses | Mapping[str, Any] | list[str] | None = None,
        lpips_backbone: str | Path | None = None,
        lpips_net: str = "alex",
        kappa: float = 1.0,
        config_dir: str | Path | None = None,
        tokenizer_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "Auditor":
        """Build an auditor from local files.

        backbone: an open_clip weights file (with ``arch``) or a transformers CLIPModel folder.
        heads: optional ``.safetensors`` of trained heads (its ``.json`` beside it); zero-shot without.
        lpips_backbone: optional local LPIPS backbone; without it B uses the DSSIM fallback.
        """
        kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        if arch is not None:
            kwargs.update(config_dir=config_dir, tokenizer_dir=tokenizer_dir)
        bb = load_backbone(backbone, arch=arch, **kwargs)
        trained = load_heads(heads, bb.identity()) if heads is not None else None
        seam = SeamQuality(kappa=kappa, lpips_backbone=lpips_backbone, lpips_net=lpips_net)
        return cls(bb, trained, classes=classes, seam=seam).to(device)

    # -- what a host's memory manager looks for
    @property
    def model(self) -> nn.Module:
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def classes(self) -> tuple[str, ...]:
        return self.heads.classes

    @property
    def zero_shot(self) -> bool:
        return not self.heads.config.trained

    @property
    def kappa(self) -> float:
        return self.seam.kappa

    @kappa.setter
    def kappa(self, value: float) -> None:
        self.seam.kappa = float(value)

    # -- encoders
    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        return self.backbone.encode_text(prompts)

    def text_features(self, prompts: list[str]) -> torch.Tensor:
        """E_t for a list of texts, from the per-prompt cache [T,D]."""
        return self.text_cache.get(list(prompts), device=self.device)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E_i for the whole batch in one forward: (e_I [B,D], z [B,h,w,D])."""
        return self.backbone.encode_image(images)

    # -- scoring
    def _judge(self, images: torch.Tensor, prompt: str, mask: torch.Tensor | None, with_maps: bool) -> AuditResult:
        images = check_images(images)
        prompt = check_prompt(prompt)
        n, _, h, w = images.shape
        masks = as_batch_mask(mask, n, h, w)
        e_txt = self.text_features([prompt])[0]
        e_img, tokens = self.encode(images)
        heads = self.heads
        S = heads.global_score(e_img, e_txt, tokens)
        weights = None
        if masks is not None:
            weights = F.adaptive_avg_pool2d(masks.to(tokens.device), (tokens.shape[1], tokens.shape[2]))[:, 0]
        S_R = heads.pool_region(heads.patch_scores(tokens, e_txt), weights)
        F_ = heads.faithfulness(S, e_img, e_txt)
        P = 1.0 - torch.sigmoid(heads.policy_logits(e_img, tokens))
        B = self.seam(images, masks).to(S.device)
        maps = torch.empty(n, len(self.classes), 0, 0)
        if with_maps:
            maps = self._upsample_risk(heads.risk_logits(tokens), h, w)
        scores = AuditScores(S=S.float(), S_R=S_R.float(), F=F_.float(), P=P.float(), B=B.float(), classes=self.classes)
        if self.calibration is not None:
            scores = self.calibration(scores)
        return AuditResult(scores, maps)

    @staticmethod
    def _upsample_risk(logits: torch.Tensor, h: int, w: int) -> torch.Tensor:
        r = torch.sigmoid(logits.float())
        return F.interpolate(r, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompt: str, mask: torch.Tensor | None = None) -> AuditScores:
        """AuditScores for images [B,3,H,W] in [0,1] (index 0 = control C_0), one E_i forward.

        Grey, grey+alpha and RGBA tensors, uint8 tensors and PIL images of any size are accepted too
        (``to_image_tensor``); a mask is resized to the images' size.
        """
        return self._judge(images, prompt, mask, with_maps=False).scores

    @torch.no_grad()
    def audit(self, images: torch.Tensor, prompt: str, mask: torch.Tensor | None = None) -> AuditResult:
        """Scores and per-class risk maps r_c [B,C,H,W] from the same single forward."""
        return self._judge(images, prompt, mask, with_maps=True)

    @torch.no_grad()
    def risk_maps(self, images: torch.Tensor) -> torch.Tensor:
        """r_c ∈ [0,1]^{H×W} for every class: [B,C,H,W] (prompt-independent)."""
        images = check_images(images)
        _, tokens = self.encode(images)
        return self._upsample_risk(self.heads.risk_logits(tokens), images.shape[-2], images.shape[-1])

    def similarity(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        """Differentiable S(p, I) [B] (gradients flow to the images): for referee refinement and Grad-CAM."""
        x = to_image_tensor(images)
        if not x.is_floating_point() or not torch.isfinite(x).all():
            raise ValueError("images must be float and contain no NaN or Inf values")
        e_txt = self.text_features([check_prompt(prompt)])[0]
        e_img, tokens = self.encode(_composite(x.clamp(0.0, 1.0)))
        return self.heads.global_score(e_img, e_txt, tokens)
