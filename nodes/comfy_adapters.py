"""Adapters from ComfyUI's sampler objects to tipai_core's protocols (``tipai_core/protocols.py``).

- ``ComfyDenoiser``: the guider's model as ``Denoiser(x, σ, cond) -> x̂0``, with CFG as a
  per-pixel map ``x̂0 = x̂0_u + w(p)·(x̂0_c - x̂0_u)``, so CFG inside a mask can differ, and a
  region prompt's branch inside the region's mask m: ``x̂0_c = (1 - m)·x̂0_c,base + m·x̂0_c,region``.
  That is ComfyUI's own masked conditioning (ConditioningSetMask, strength 1, no area) with the
  base prompt masked to 1 - m and the region prompt to m: ComfyUI sums each cond's output times
  its mask and divides by the sum of the masks, here (1 - m) + m = 1.
- ``ComfyRegionEncoder``: a region's text -> ``RegionConds``, encoded with the sampler's own CLIP
  and processed by ``comfy.samplers.process_conds`` like the positive (so SDXL's pooled output and
  size conds, and a flow model's guidance, come as ComfyUI makes them).
- ``ComfyAuditDecoder``: model-space latent -> RGB audit view, through the VAE (TAESD when the
  checkpoint carries it) or the model's cheap latent-to-RGB factors.
- ``parametrisation``: eps (``x = x0 + σ·ε``) or flow (``x = (1-σ)·x0 + σ·ε``) from model_sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.model_sampling
import comfy.sampler_helpers
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
        region = cond.region_payload if cond is not None and cond.region_mask is not None else None
        branches = [positive] + ([region.conds] if isinstance(region, RegionConds) else [])
        if negative is None or (not isinstance(cfg, torch.Tensor) and float(cfg) == 1.0):
            out = comfy.samplers.calc_cond_batch(model, branches, x, sigma, self.model_options)
            if len(out) == 1:
                return out[0]
            m = cond.region_mask.to(out[0])  # type: ignore[union-attr]
            return (1 - m) * out[0] + m * out[1]
        out = comfy.samplers.calc_cond_batch(model, branches + [negative], x, sigma, self.model_options)
        x0_region = out[1] if len(out) == 3 else None
        return guided_x0(out[-1], out[0], cond if cond is not None else Conditioning(cfg=cfg), x0_region)


# What a region's conditioning does not take over from the base positive: the base text's own tensors
# and where and when the base applies. Everything else (a flow model's guidance, SDXL's sizes) it keeps.
_NOT_INHERITED = frozenset(
    {
        "cross_attn",
        "model_conds",
        "uuid",
        "pooled_output",
        "area",
        "mask",
        "strength",
        "mask_strength",
        "set_area_to_bounds",
        "control",
        "gligen",
        "hooks",
        "timestep_start",
        "timestep_end",
        "start_percent",
        "end_percent",
    }
)


@dataclass(frozen=True)
class RegionConds:
    """A region prompt's conditioning, processed by ComfyUI like the sampler's positive (``conds``)."""

    text: str
    conds: list


class ComfyRegionEncoder:
    """``region text -> RegionConds`` with the CLIP that encoded the sampler's positive; each text is
    encoded once per run. The base positive's options (guidance, sizes) carry over to the region."""

    def __init__(self, clip, guider, x: torch.Tensor, seed: int | None = None):
        if clip is None:
            raise ValueError("TiPAI: region prompts need the CLIP that encoded the positive prompt")
        self.clip, self.guider, self.x, self.seed = clip, guider, x, seed
        self.cache: dict[str, RegionConds] = {}

    def __call__(self, text: str) -> RegionConds:
        if text not in self.cache:
            self.cache[text] = self._encode(text)
        return self.cache[text]

    def _encode(self, text: str) -> RegionConds:
        if not text.strip():
            raise ValueError("TiPAI: a region prompt is empty")
        encoded = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(text))
        base = (getattr(self.guider, "original_conds", None) or {}).get("positive") or [{}]
        inherited = {k: v for k, v in base[0].items() if k not in _NOT_INHERITED}
        raw: list[list[Any]] = [[c, {**inherited, **opts}] for c, opts in encoded]
        model = self.guider.inner_model
        processed = comfy.samplers.process_conds(
            model,
            self.x,
            {"positive": comfy.sampler_helpers.convert_cond(raw)},
            self.x.device,
            seed=self.seed,
        )
        return RegionConds(text, processed["positive"])


AUDIT_DECODERS = ("vae", "latent_rgb", "taesd")
_TAESD_CACHE: dict[str, TAESD] = {}


def _vae_approx_file(name: str | None, what: str) -> str:
    """The models/vae_approx file whose name starts with ``name``, or a FileNotFoundError naming the folder."""
    found = next((f for f in folder_paths.get_filename_list("vae_approx") if name and f.startswith(name)), None)
    if found is None:
        raise FileNotFoundError(
            f"TiPAI: no TAESD file '{name}.*' in the models/vae_approx folder "
            f"({', '.join(folder_paths.get_folder_paths('vae_approx'))}); {what}"
        )
    return folder_paths.get_full_path("vae_approx", found)


def load_taesd(latent_format) -> TAESD:
    """The tiny decoder ComfyUI's previews use, from models/vae_approx (loaded once per file)."""
    path = _vae_approx_file(latent_format.taesd_decoder_name, "put it there or use the 'vae' audit decoder")
    if path not in _TAESD_CACHE:
        _TAESD_CACHE[path] = TAESD(None, path, latent_channels=latent_format.latent_channels).eval()
    return _TAESD_CACHE[path]


def load_taesd_pair(latent_format) -> TAESD:
    """TAESD's encoder and decoder from models/vae_approx (the learned editor's cheap RGB round trip),
    loaded once per pair of files; a missing one is named with its folder."""
    dec = latent_format.taesd_decoder_name
    why = "the learned editor's 'taesd' round trip needs the encoder and the decoder; put them there or use 'vae'"
    paths = [_vae_approx_file(name, why) for name in (dec.replace("decoder", "encoder") if dec else None, dec)]
    key = "|".join(paths)
    if key not in _TAESD_CACHE:
        _TAESD_CACHE[key] = TAESD(paths[0], paths[1], latent_channels=latent_format.latent_channels).eval()
    return _TAESD_CACHE[key]


def model_family(model) -> str:
    """The base model family, named by its latent format's class ('sd15', 'sdxl', 'sd3', 'flux', ...)."""
    return type(model.latent_format).__name__.lower()


class VAESpace:
    """The learned editor's RGB space for a ComfyUI model: a model-space latent -> RGB ``[B, 3, H, W]`` in
    [0, 1], and RGB -> a model-space latent. ``vae`` (and ``latent_rgb``, which has no encoder): the VAE's
    decoder and encoder; ``taesd``: TAESD's, from models/vae_approx (far cheaper at full size)."""

    def __init__(self, vae, model, mode: str = "vae"):
        self.vae, self.model = vae, model
        self.taesd = load_taesd_pair(model.latent_format) if mode == "taesd" else None

    def to_rgb(self, latent: torch.Tensor) -> torch.Tensor:
        if self.taesd is not None:  # TAESD works on the model-space latent, as ComfyUI's previewer
            taesd = self.taesd.to(latent.device)
            return ((taesd.decode(latent.float()) + 1.0) / 2.0).clamp(0, 1)
        img = self.vae.decode(self.model.process_latent_out(latent.float()))  # model space -> VAE space -> RGB
        return img.reshape(-1, *img.shape[-3:]).movedim(-1, 1).float().clamp(0, 1).to(latent.device)

    def from_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        if self.taesd is not None:
            return self.taesd.to(rgb.device).encode(rgb.clamp(0, 1).float() * 2 - 1)
        z = self.vae.encode(rgb.clamp(0, 1).movedim(1, -1).float())  # [B, H, W, 3], as ComfyUI's VAE takes it
        return self.model.process_latent_in(z.float()).to(rgb.device)


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
