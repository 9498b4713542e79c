"""TiPAI Referee Refine: referee inversion of a latent or an image against the auditor, as a node.

ComfyUI runs nodes under ``torch.inference_mode`` and loads the VAE there, so its weights can never
enter autograd. The refine therefore runs with inference mode off, on a copy of the VAE's decoder
whose weights are cloned outside it (made once per VAE and kept); the latent is cloned too, so the
input LATENT is never touched. The algorithm is ``tipai_core.editing.referee``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import weakref

import comfy.utils
import torch
from comfy_api.latest import io

from ..tipai_core.editing.referee import RefereeSettings, referee_refine
from ..tipai_core.mining.masks import pixel_to_latent
from . import defaults as D
from .types import Auditor, image_from_core, image_to_core, mask_to_core
from .ui_report import TEXT_KEY
from .validation import as_validation, check_image, check_mask, check_widgets

NODE = "TiPAI Referee Refine"
_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class GradDecoder:
    """The VAE's own decoder with gradients: VAE-space latent [B,C,h,w] -> RGB [B,3,H,W] in [0,1]."""

    def __init__(self, vae):
        self.vae = vae
        if vae.first_stage_model not in _DECODERS:
            with torch.inference_mode(False):
                module = copy.deepcopy(vae.first_stage_model).requires_grad_(False)
                for t in [*module.parameters(), *module.buffers()]:
                    t.data = t.data.clone()  # a clone made here is an ordinary tensor
            _DECODERS[vae.first_stage_model] = module.eval()
        self.module = _DECODERS[vae.first_stage_model]

    def __call__(self, latent: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        device = next(self.module.parameters()).device
        out = self.module.decode(latent.to(device))
        return self.vae.process_output(out.float()).clamp(0, 1)


class ModelSpaceGradDecoder:
    """``AuditDecoder`` with gradients for the loop's referee backend: a model-space latent -> RGB in [0,1]."""

    def __init__(self, vae, model):
        self.inner, self.model = GradDecoder(vae), model
        self.factor = int(getattr(vae, "downscale_ratio", 8))

    def __call__(self, latent: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.inner(self.model.process_latent_out(latent.float()), scale)


class InferenceFreeEditor:
    """Runs an editor that needs autograd inside ComfyUI's sampling, which runs under inference mode: with
    inference mode off and the control's tensors cloned out of it (inference tensors never enter autograd)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, ctx, region_mask, actions):
        with torch.inference_mode(False):
            ctx = dataclasses.replace(ctx, x=ctx.x.clone(), x0=ctx.x0.clone(), sigmas=ctx.sigmas.clone())
            return self.inner(ctx, region_mask.clone(), actions)


class TiPAIRefereeRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIRefereeRefine",
            display_name=NODE,
            category="TiPAI",
            description="Referee inversion: optimise the latent so the auditor scores the decoded image as the "
            "prompt, averaged over K random augmentations (so it climbs the prompt, not a pattern that fools "
            "the auditor). With a mask only its inside moves; outside, the latent stays bit for bit.",
            inputs=[
                io.Vae.Input("vae", tooltip="Decodes the latent; the refine takes gradients through a copy of it."),
                Auditor.Input("auditor", tooltip="From TiPAI Auditor Loader: the referee."),
                io.String.Input("prompt", multiline=True, default="", tooltip="What the image should show."),
                io.Latent.Input("latent", optional=True, tooltip="The latent to refine (or give an image)."),
                io.Image.Input("image", optional=True, tooltip="An image to refine instead (encoded by the VAE)."),
                io.Mask.Input("mask", optional=True, tooltip="Only this region moves (white); the rest stays."),
                io.Int.Input("steps", default=D.REFINE_STEPS, min=1, max=1000, tooltip="Optimisation steps."),
                io.Float.Input("lr", default=D.REFINE_LR, min=0.0001, max=10.0, step=0.001, tooltip="Adam step size."),
                io.Int.Input(
                    "augmentations",
                    default=D.REFINE_AUGMENTATIONS,
                    min=0,
                    max=64,
                    tooltip="K random augmentations per step (affine, perspective, colour jitter, erasing); 0: none.",
                ),
                io.Int.Input(
                    "micro_batch",
                    default=D.REFINE_MICRO_BATCH,
                    min=1,
                    max=64,
                    tooltip="Augmented views per auditor pass: memory is bounded by this, not by K.",
                ),
                io.Float.Input("tv_weight", default=0.0, min=0.0, max=100.0, tooltip="Total-variation regulariser."),
                io.Float.Input("l2_weight", default=0.0, min=0.0, max=100.0, tooltip="L2 pull to the input."),
                io.Float.Input("ema", default=0.0, min=0.0, max=0.999, tooltip="EMA of the iterate (0: the last one)."),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFF,
                    control_after_generate=False,
                    tooltip="Seed of the augmentation draws.",
                ),
            ],
            outputs=[
                io.Latent.Output(display_name="LATENT", tooltip="The refined latent."),
                io.Image.Output(display_name="image", tooltip="The refined latent, decoded."),
                io.String.Output(
                    display_name="report", tooltip="JSON: the auditor's S at every step, and the passes made."
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, steps=None, lr=None, augmentations=None, micro_batch=None, tv_weight=None,
                        l2_weight=None, ema=None, seed=None):  # fmt: skip
        given = {k: v for k, v in locals().items() if k != "cls"}
        return as_validation(lambda: check_widgets(cls, given))

    @classmethod
    def execute(cls, vae, auditor, prompt, latent=None, image=None, mask=None, steps=D.REFINE_STEPS,
                lr=D.REFINE_LR, augmentations=D.REFINE_AUGMENTATIONS, micro_batch=D.REFINE_MICRO_BATCH,
                tv_weight=0.0, l2_weight=0.0, ema=0.0, seed=0) -> io.NodeOutput:  # fmt: skip
        widgets = dict(steps=steps, lr=lr, augmentations=augmentations, micro_batch=micro_batch,
                       tv_weight=tv_weight, l2_weight=l2_weight, ema=ema, seed=seed, prompt=prompt)  # fmt: skip
        check_widgets(cls, widgets, required=True)
        if (latent is None) == (image is None):
            raise ValueError(f"{NODE}: give exactly one of latent and image")
        if not prompt.strip():
            raise ValueError(f"{NODE}: prompt is empty; say what the image should show")
        settings = RefereeSettings(steps=steps, lr=lr, n_augment=augmentations, micro_batch=micro_batch,
                                   tv_weight=tv_weight, l2_weight=l2_weight, ema=ema, seed=seed)  # fmt: skip
        with torch.inference_mode(False):
            if latent is not None:
                z = latent["samples"].clone()
            else:
                pixels = image_to_core(image, f"{NODE}: image")
                check_image(NODE, "image", pixels, multiple_of=D.VAE_FACTOR)
                z = vae.encode(image_from_core(pixels)).clone()
            factor = int(getattr(vae, "downscale_ratio", 8))
            lat_mask = None
            if mask is not None:
                m = mask_to_core(mask)
                check_mask(NODE, "mask", m, (factor * z.shape[-2], factor * z.shape[-1]))
                lat_mask = pixel_to_latent(m.float(), factor, "max").clone()
            bar = comfy.utils.ProgressBar(steps)
            referee = auditor.ready()
            decoder = _ProgressDecoder(GradDecoder(vae), bar)
            try:
                res = referee_refine(z.float(), prompt, referee, decoder, mask=lat_mask, settings=settings)
            except ValueError as exc:
                raise ValueError(f"{NODE}: {exc}") from None
        out = {**(latent or {}), "samples": res.latent.to(z.dtype)}
        decoded = vae.decode(out["samples"])
        report = {
            "trajectory_S": res.trajectory,
            "decoder_calls": res.decoder_calls,
            "auditor_forwards": res.auditor_forwards,
            "auditor_backwards": res.auditor_backwards,
        }
        t = res.trajectory
        text = f"**Referee refine**: S {t[0]:.4f} → {t[-1]:.4f} over {steps} steps, K={augmentations}"
        return io.NodeOutput(
            out, image_from_core(image_to_core(decoded, f"{NODE}: the decoded result")), json.dumps(report),
            ui={TEXT_KEY: [text]},
        )  # fmt: skip


class _ProgressDecoder:
    """Counts the refine's steps on the node's progress bar (one decode per step, one at the end)."""

    def __init__(self, decoder, bar):
        self.decoder, self.bar, self.calls = decoder, bar, 0

    def __call__(self, latent, scale: float = 1.0):
        out = self.decoder(latent, scale)
        self.calls += 1
        self.bar.update_absolute(min(self.calls, self.bar.total))
        return out
