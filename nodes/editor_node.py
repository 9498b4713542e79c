"""TiPAI Auditor Inpaint: the editor A_g that makes each region's N candidates. Standalone, it
turns an IMAGE + MASK into N candidates (and, with an auditor, keeps the best only if it wins)."""

from __future__ import annotations

import json

import comfy.sample
import comfy.samplers
import torch
from comfy_api.latest import io

from ..tipai_core.diffusion.conditioning import Conditioning
from ..tipai_core.editing.region_edit import edit_region
from ..tipai_core.mining.masks import pixel_to_latent
from . import defaults as D
from .comfy_adapters import AUDIT_DECODERS, ComfyDenoiser, parametrisation
from .model_files import NONE, list_kind
from .settings import AuditorHandle, EditorSpec, GuardSpec, PolicySpec
from .types import Auditor, Editor, Guard, Policy, image_from_core, image_to_core, mask_to_core
from .validation import as_validation, check_image, check_mask, check_widgets

NODE = "TiPAI Auditor Inpaint"


def standalone_candidates(
    model,
    positive,
    negative,
    vae,
    image,
    mask,
    spec: EditorSpec,
    policy: PolicySpec,
    steps: int,
    scheduler: str,
    cfg: float,
    auditor: AuditorHandle | None = None,
    prompt: str = "",
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images [N+1, 3, H, W] with the unedited image first, pixel mask [1, 1, H, W], and what the editor
    made in the model's latent space: ``{"z": the encoded image, "res": the RegionEdit}``)."""
    pixels = image_to_core(image, f"{NODE}: image")[:1]
    m = mask_to_core(mask)[:1]
    check_image(NODE, "image", pixels, multiple_of=D.VAE_FACTOR)
    check_mask(NODE, "mask", m, (pixels.shape[-2], pixels.shape[-1]), nonempty=True)
    latent = vae.encode(pixels.movedim(1, -1))  # the checked [1, H, W, 3] form: 3D or 1-channel inputs too
    factor = pixels.shape[-1] // latent.shape[-1]
    lat_mask = pixel_to_latent(m, factor, "max")
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).cpu()
    found = {}

    # A sampler function runs inside ComfyUI's own sampling set-up (conds processed, model loaded),
    # which is exactly what the editor's denoiser needs; it returns the control and the candidates.
    def edit(model_k, x, sigmas_, extra_args=None, callback=None, disable=None):
        guider = model_k.inner_model
        z = model_k.latent_image.to(x)
        if spec.uses_learned:
            editor = spec.build(auditor.ready() if auditor is not None else None, model=guider.inner_model, vae=vae)
        else:
            editor = spec.build()
        res = edit_region(
            ComfyDenoiser(guider, extra_args["model_options"]),
            parametrisation(guider.inner_model.model_sampling),
            sigmas_,
            z,
            lat_mask.to(z),
            policy.policy,
            policy.n,
            policy.seed,
            cond=Conditioning(cfg=float(guider.cfg)),
            editor=editor,
            prompt=prompt,
        )
        found["res"], found["z"] = res, z
        return torch.cat([z, res.candidates])

    out = comfy.sample.sample_custom(
        model,
        torch.zeros_like(latent),
        cfg,
        comfy.samplers.KSAMPLER(edit),
        sigmas,
        positive,
        negative,
        latent,
        seed=policy.seed,
    )
    decoded = vae.decode(out)
    return image_to_core(decoded.reshape(-1, *decoded.shape[-3:]), f"{NODE}: the decoded candidates"), m, found


class TiPAIAuditorInpaint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIAuditorInpaint",
            display_name="TiPAI Auditor Inpaint",
            category="TiPAI",
            description="The editor A_g that makes the N candidates of a region: re-noise the region by d steps "
            "(DDIM inversion or fresh noise), then re-denoise it with the candidate's knobs. Connect "
            "model, conditioning, VAE, image and mask to use it on its own.",
            inputs=[
                io.Combo.Input(
                    "backend",
                    options=list(D.EDITOR_BACKENDS),
                    default=D.EDITOR_BACKEND,
                    tooltip="'diffusion': the training-free diffusion editor on your own model. 'referee': each "
                    "candidate optimises the region's x̂0 against the auditor (referee inversion, with "
                    "augmentations; the knob d scales its steps). 'referee' works inside the TiPAI KSampler "
                    "and Patch Model; on its own, use TiPAI Referee Refine. 'learned': every candidate from the "
                    "learned_editor file. 'mixed': each candidate from the editor its policy action names "
                    "(TiPAI TSPO Sampler's editor 'learned' or 'all').",
                ),
                io.Int.Input(
                    "refine_iters",
                    default=D.EDITOR_REFINE_ITERS,
                    min=0,
                    max=30,
                    tooltip="Fixed-point refinements per DDIM inversion step (more exact, more model calls).",
                ),
                io.Int.Input(
                    "crop_margin",
                    default=D.EDITOR_CROP_MARGIN,
                    min=0,
                    max=32,
                    tooltip="Context margin, in latent pixels, of the decoded crops.",
                ),
                io.Combo.Input(
                    "audit_decoder",
                    options=list(AUDIT_DECODERS),
                    default=D.EDITOR_DECODER,
                    tooltip="How audit views are decoded: the VAE (TAESD when the checkpoint has it), "
                    "TAESD from models/vae_approx, or the model's cheap latent-to-RGB map. The learned editor's "
                    "round trip to RGB and back uses TAESD's decoder and encoder with 'taesd', else the VAE.",
                ),
                io.Model.Input("model", optional=True, tooltip="Standalone: the diffusion model."),
                io.Conditioning.Input("positive", optional=True, tooltip="Standalone: positive conditioning."),
                io.Conditioning.Input("negative", optional=True, tooltip="Standalone: negative conditioning."),
                io.Vae.Input("vae", optional=True, tooltip="Standalone: encodes the image, decodes the candidates."),
                io.Image.Input("image", optional=True, tooltip="Standalone: the image to repair (first of a batch)."),
                io.Mask.Input("mask", optional=True, tooltip="Standalone: the region to repair, at the image size."),
                Policy.Input("policy", optional=True, tooltip="Standalone: N and the knob distribution."),
                io.Int.Input(
                    "steps",
                    default=20,
                    min=2,
                    max=1000,
                    optional=True,
                    tooltip="Standalone: the schedule the depths d count in.",
                ),
                io.Combo.Input(
                    "scheduler",
                    options=comfy.samplers.KSampler.SCHEDULERS,
                    default="normal",
                    optional=True,
                    tooltip="Standalone: the noise schedule.",
                ),
                io.Float.Input(
                    "cfg",
                    default=5.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    optional=True,
                    tooltip="Standalone: CFG outside the region (inside it comes from the policy).",
                ),
                Auditor.Input("auditor", optional=True, tooltip="Standalone: score the candidates against the prompt."),
                Guard.Input("guard", optional=True, tooltip="Standalone: δ and thresholds for picking the best."),
                io.String.Input(
                    "prompt",
                    default="",
                    multiline=True,
                    optional=True,
                    tooltip="Standalone: the text the auditor checks the candidates against.",
                ),
                io.Combo.Input(
                    "learned_editor",
                    options=list_kind("editor", optional=True),
                    default=NONE,
                    optional=True,
                    tooltip="The learned editor file (models/tipai, from python -m tipai_core.train editor) for the "
                    "'learned' and 'mixed' backends: one batched forward per region instead of d re-denoising "
                    "steps. It needs the auditor it was trained with, and a model of its family.",
                ),
            ],
            outputs=[
                Editor.Output(
                    display_name="editor",
                    tooltip="The editor settings: give them to the TiPAI KSampler or Patch Model.",
                ),
                io.Image.Output(
                    display_name="candidates", tooltip="Standalone: the unedited image, then N candidates."
                ),
                io.Image.Output(
                    display_name="best",
                    tooltip="Standalone: the guard's pick (the unedited image when "
                    "no candidate wins, or when no auditor is connected).",
                ),
                io.String.Output(display_name="scores_json", tooltip="Standalone: scores and utilities u_0..u_N."),
            ],
        )

    @classmethod
    def validate_inputs(cls, refine_iters=None, crop_margin=None, steps=None, cfg=None):
        return as_validation(
            lambda: check_widgets(cls, dict(refine_iters=refine_iters, crop_margin=crop_margin, steps=steps, cfg=cfg))
        )

    @classmethod
    def execute(
        cls,
        backend,
        refine_iters,
        crop_margin,
        audit_decoder,
        model=None,
        positive=None,
        negative=None,
        vae=None,
        image=None,
        mask=None,
        policy=None,
        steps=20,
        scheduler="normal",
        cfg=5.0,
        auditor: AuditorHandle | None = None,
        guard: GuardSpec | None = None,
        prompt: str = "",
        learned_editor: str = NONE,
    ) -> io.NodeOutput:
        check_widgets(
            cls, {k: v for k, v in locals().items() if k != "cls"}, required=True
        )  # every widget, before any work
        spec = EditorSpec(backend, refine_iters, crop_margin, audit_decoder, learned_editor or NONE)
        spec.check_learned(NODE)
        standalone = [model, positive, negative, vae, image, mask]
        if backend == "referee" and any(v is not None for v in standalone):
            raise ValueError(
                "TiPAI Auditor Inpaint: the 'referee' backend edits inside the TiPAI KSampler and Patch Model; "
                "to refine an image on its own, use TiPAI Referee Refine"
            )
        if all(v is None for v in standalone):
            empty = torch.zeros(1, 64, 64, 3)
            return io.NodeOutput(spec, empty, empty, "[]")
        if any(v is None for v in standalone):
            names = ["model", "positive", "negative", "vae", "image", "mask"]
            missing = [n for n, v in zip(names, standalone) if v is None]
            raise ValueError(f"TiPAI Auditor Inpaint: standalone use needs {', '.join(missing)} connected too")
        if spec.uses_learned:
            if auditor is None or not (prompt or "").strip():
                raise ValueError(
                    f"TiPAI Auditor Inpaint: backend {backend!r} on its own needs the auditor and the prompt "
                    "(the auditor's text features of the prompt condition the learned editor)"
                )
            spec.check_for(NODE, model, auditor)
        images, m, _ = standalone_candidates(
            model,
            positive,
            negative,
            vae,
            image,
            mask,
            spec,
            policy or PolicySpec(),
            steps,
            scheduler,
            cfg,
            auditor,
            prompt,
        )
        best, table = images[:1], []
        if auditor is not None:
            if not prompt or not prompt.strip():
                raise ValueError("TiPAI Auditor Inpaint: the prompt is empty; give the text the region should show")
            aud = auditor.ready()
            with torch.no_grad():
                scores = aud.score(images.to(aud.device, aud.dtype), prompt, m.to(aud.device, aud.dtype))
            decision = (guard or GuardSpec()).guard.select(scores, 1.0)
            best = images[decision.winner : decision.winner + 1]
            table = [
                {
                    "S": float(scores.S[i]),
                    "F": float(scores.F[i]),
                    "B": float(scores.B[i]),
                    "u": float(decision.utilities[i]),
                }
                for i in range(len(scores))
            ]
            table = {"winner": decision.winner, "accepted": decision.accepted, "candidates": table}
        return io.NodeOutput(spec, image_from_core(images), image_from_core(best), json.dumps(table, indent=1))
