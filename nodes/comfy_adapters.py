"""Adapters from ComfyUI's sampler objects to tipai_core's protocols (``tipai_core/protocols.py``).

- ``ComfyDenoiser``: the guider's model as ``Denoiser(x, σ, cond) -> x̂0``, with CFG as a
  per-pixel map ``x̂0 = x̂0_u + w(p)·(x̂0_c - x̂0_u)``, so CFG inside a mask can differ.
- ``ComfyAuditDecoder``: model-space latent -> RGB audit view, through the VAE (TAESD when the
  checkpoint carries it) or the model's cheap latent-to-RGB factors.
- ``parametrisation``: eps (``x = x0 + σ·ε``) or flow (``x = (1-σ)·x0 + σ·ε``) from model_sampling.
"""

from __future__ import annotations

import comfy.model_management
import comfy.model_sampling
import comfy.samplers
import folder_paths
import torch
import torch.nn.functional as F
from comfy.taesd.taesd import TAESD

from ..tipai_core.diffusion.conditioning import Conditioning, guided_x0
from ..tipai_core.diffusion.decode import latent_rgb, view_factor
from ..tipai_core.diffusion.parametrisation import Parametrisation


def parametrisation(model_sampling) -> Parametrisation:
    return Parametrisation.parse("flow" if isinstance(model_sampling, comfy.model_sampling.CONST) else "eps")


class ComfyDenoiser:
    """x̂0 from ComfyUI's model for the editor's candidates; checks for interruption per call."""

    def __init__(self, guider, model_options: dict, progress=None):
        self.guider = guider
        self.model_options = model_options
        self.calls = 0
        self.progress = progress  # called with the calls made so far (the run's progress bar)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning | None) -> torch.Tensor:
        # Between candidate batches is where a user's Cancel must take effect.
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.calls += 1
        if self.progress is not None:
            self.progress(self.calls)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        conds = self.guider.conds
        positive, negative = conds.get("positive"), conds.get("negative")
        cfg = self.guider.cfg if cond is None else cond.cfg
        model = self.guider.inner_model
        if negative is None or (not isinstance(cfg, torch.Tensor) and float(cfg) == 1.0):
            return comfy.samplers.calc_cond_batch(model, [positive], x, sigma, self.model_options)[0]
        x0_c, x0_u = comfy.samplers.calc_cond_batch(model, [positive, negative], x, sigma, self.model_options)
        return guided_x0(x0_u, x0_c, cond if cond is not None else Conditioning(cfg=cfg))


AUDIT_DECODERS = ("vae", "latent_rgb", "taesd")
_TAESD_CACHE: dict[str, TAESD] = {}


def load_taesd(latent_format) -> TAESD:
    """The tiny decoder ComfyUI's previews use, from models/vae_approx (loaded once per file)."""
    name = latent_format.taesd_decoder_name
    found = next((f for f in folder_paths.get_filename_list("vae_approx") if name and f.startswith(name)), None)
    if found is None:
        raise FileNotFoundError(
            f"TiPAI: no TAESD decoder '{name}.*' in the models/vae_approx folder "
            f"({', '.join(folder_paths.get_folder_paths('vae_approx'))}); put it there or use "
            "the 'vae' audit decoder"
        )
    path = folder_paths.get_full_path("vae_approx", found)
    if path not in _TAESD_CACHE:
        _TAESD_CACHE[path] = TAESD(None, path, latent_channels=latent_format.latent_channels).eval()
    return _TAESD_CACHE[path]


class ComfyAuditDecoder:
    """``AuditDecoder``: a model-space latent (or a crop) -> RGB ``[B, 3, f·h, f·w]`` in [0, 1].

    Modes: ``vae`` (the checkpoint's VAE, which is TAESD when the checkpoint carries one),
    ``taesd`` (models/vae_approx, as ComfyUI's previews) and ``latent_rgb`` (a linear map, cheapest).
    """

    def __init__(self, vae, model, mode: str = "vae"):
        if mode not in AUDIT_DECODERS:
            raise ValueError(f"audit decoder mode must be one of {AUDIT_DECODERS}, got {mode!r}")
        self.vae, self.model, self.mode = vae, model, mode
        self.factor = int(getattr(vae, "downscale_ratio", 8)) if vae is not None else 8
        if mode == "taesd":
            self.taesd = load_taesd(model.latent_format)
        if mode == "latent_rgb":
            fmt = model.latent_format
            if fmt.latent_rgb_factors is None:
                raise ValueError("this model has no latent_rgb_factors; use the 'vae' audit decoder")
            self.weight = torch.tensor(fmt.latent_rgb_factors, dtype=torch.float32).t()  # [3, C]
            bias = getattr(fmt, "latent_rgb_factors_bias", None)
            self.bias = torch.tensor(bias if bias is not None else [0.0, 0.0, 0.0], dtype=torch.float32)

    def __call__(self, latent: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        f = view_factor(self.factor, scale)
        h, w = latent.shape[-2:]
        if self.mode == "vae":
            img = self.vae.decode(self.model.process_latent_out(latent.float()))  # model space -> VAE space
            img = img.reshape(-1, *img.shape[-3:]).movedim(-1, 1).float()
        elif self.mode == "taesd":
            # TAESD decodes the model-space latent to [-1, 1], as in ComfyUI's latent previewer
            taesd = self.taesd.to(latent.device)
            img = (taesd.decode(latent.float()) + 1.0) / 2.0
        else:
            # the preview factors act on the model-space latent, as ComfyUI's latent previewer uses them
            img = (latent_rgb(latent.float(), self.weight, self.bias) + 1.0) / 2.0  # the factors map to [-1, 1]
        img = img.to(latent.device).clamp(0, 1)
        if img.shape[-2:] != (f * h, f * w):
            img = F.interpolate(img, size=(f * h, f * w), mode="bilinear", align_corners=False, antialias=True)
        return img
