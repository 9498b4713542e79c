"""Seam quality B of an edit: B_i = exp(−κ · d_ring(I_i, I_0)).

The ring is the band of half-width w around the mask boundary, ring = dilate(m, w) − erode(m, w): the
pixels where a pasted edit meets its context. d_ring is the distance between candidate I_i and the
unedited control I_0 averaged over the ring:

* LPIPS (Zhang et al. 2018) with spatial output, when a local backbone file is given. The lpips package
  ships only its linear layers; its AlexNet/VGG/SqueezeNet backbone would be downloaded by torchvision.
  We build the backbone with random weights (``pnet_rand=True``, no download) and load the user's local
  file into it: a torchvision ``features.*`` state dict of that net, or an lpips-format state dict.
* Fallback, no file: DSSIM = (1 − SSIM)/2 on the ring (Gaussian window σ = 1.5, per channel). It is
  weight-free and sees the same failures at the seam (a hard edge, a colour or brightness shift, blur)
  but is less perceptual than LPIPS. The auditor logs a warning when it runs on the fallback.

The control (index 0) has B = 1: it is unedited. Without a mask there is no seam and B = 1 for all.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from .backbones import read_weights

log = logging.getLogger(__name__)

LPIPS_NETS = ("alex", "vgg", "squeeze")


def ring_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    """ring = dilate(m, w) − erode(m, w) for binary masks [B,1,H,W] (threshold 0.5)."""
    m = (mask > 0.5).float()
    k = 2 * int(width) + 1
    dil = F.max_pool2d(m, k, stride=1, padding=width)
    ero = 1.0 - F.max_pool2d(1.0 - m, k, stride=1, padding=width)
    return (dil - ero).clamp(0.0, 1.0)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def dssim_map(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel (1 − SSIM)/2 averaged over channels; x, y [B,3,H,W] in [0,1] -> [B,1,H,W]."""
    c1, c2 = 0.01**2, 0.03**2
    g = _gaussian_window(size, sigma, x.device, x.dtype)
    ch = x.shape[1]
    gx = g.view(1, 1, 1, -1).repeat(ch, 1, 1, 1)
    gy = g.view(1, 1, -1, 1).repeat(ch, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.pad(t, (size // 2,) * 4, mode="reflect")
        return F.conv2d(F.conv2d(t, gx, groups=ch), gy, groups=ch)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ((1.0 - ssim) / 2).clamp(0.0, 1.0).mean(1, keepdim=True)


def load_lpips(backbone_file: str | Path, net: str = "alex") -> torch.nn.Module:
    """LPIPS with its backbone read from ``backbone_file`` (local), never downloaded."""
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    backbone_file = Path(backbone_file)
    if not backbone_file.is_file():
        raise FileNotFoundError(
            f"LPIPS backbone file not found: {backbone_file} (a torchvision {net} state dict as .safetensors or .pth)"
        )
    import warnings

    import lpips

    with warnings.catch_warnings():  # torchvision's deprecation notes about lpips's pretrained= argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, spatial=True, verbose=False)
    # The calibrated linear layers ship inside the lpips package; read them safely ourselves.
    lin_file = Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / f"{net}.pth"
    if lin_file.is_file():
        model.load_state_dict(torch.load(str(lin_file), map_location="cpu", weights_only=True), strict=False)
    else:
        log.warning("lpips package has no linear weights at %s: LPIPS is uncalibrated", lin_file)

    slice_of = {idx: name for name, sl in model.net.named_children() if name.startswith("slice") for idx in sl._modules}
    mapped: dict[str, torch.Tensor] = {}
    for key, value in read_weights(backbone_file).items():
        if key.startswith("features."):
            idx, _, param = key[len("features.") :].partition(".")
            if idx in slice_of:
                mapped[f"net.{slice_of[idx]}.{idx}.{param}"] = value
        elif key.startswith("slice"):
            mapped[f"net.{key}"] = value
        elif key.startswith(("net.", "lin")):
            mapped[key] = value
    wanted = {k for k in model.state_dict() if k.startswith("net.")}
    missing = sorted(wanted - set(mapped))
    if missing:
        raise ValueError(
            f"{backbone_file} is not a {net} backbone state dict: missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}"
        )
    try:
        model.load_state_dict(mapped, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"{backbone_file} does not fit the LPIPS {net} backbone: {exc}") from exc
    return model.eval().requires_grad_(False)


class SeamQuality(torch.nn.Module):
    """B = exp(−κ · d_ring); LPIPS when a backbone file is given, else the DSSIM fallback (see module doc)."""

    def __init__(
        self,
        kappa: float = 1.0,
        ring_fraction: float = 1 / 32,
        min_ring: int = 2,
        lpips_backbone: str | Path | None = None,
        lpips_net: str = "alex",
    ) -> None:
        super().__init__()
        self.kappa = float(kappa)
        self.ring_fraction = float(ring_fraction)
        self.min_ring = int(min_ring)
        self.lpips = load_lpips(lpips_backbone, lpips_net) if lpips_backbone is not None else None
        if self.lpips is None:
            log.warning(
                "no LPIPS backbone file given: seam quality B uses the weight-free DSSIM fallback "
                "(1-SSIM)/2 on the ring; put a torchvision %s state dict in models/tipai/ and pass it "
                "as lpips_backbone for LPIPS",
                lpips_net,
            )

    @property
    def mode(self) -> str:
        return "lpips" if self.lpips is not None else "dssim"

    def ring_width(self, h: int, w: int) -> int:
        return max(self.min_ring, int(round(self.ring_fraction * min(h, w))))

    def distance_map(self, images: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        """Per-pixel distance of each image to the control, [B,1,H,W]."""
        control = control.expand_as(images)
        if self.lpips is not None:
            p = next(self.lpips.parameters())
            d = self.lpips(images.to(p), control.to(p), normalize=True)  # [0,1] inputs -> [-1,1]
            if d.shape[-2:] != images.shape[-2:]:
                d = F.interpolate(d, size=images.shape[-2:], mode="bilinear", align_corners=False)
            return d.float()
        return dssim_map(images.float(), control.float())

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        """B [B] for images [B,3,H,W] (index 0 the control) and masks [B,1,H,W] (or None)."""
        n, _, h, w = images.shape
        out = torch.ones(n, device=images.device, dtype=torch.float32)
        if masks is None or n == 1:
            return out
        ring = ring_mask(masks.float(), self.ring_width(h, w))
        with torch.no_grad():
            d = self.distance_map(images[1:], images[:1]).to(ring.device)
        r = ring[1:]
        area = r.flatten(1).sum(1)
        d_ring = (d * r).flatten(1).sum(1) / area.clamp_min(1.0)
        b = torch.exp(-self.kappa * d_ring).to(out.device)
        out[1:] = torch.where(area.to(out.device) > 0, b, torch.ones_like(b))
        return out
