"""The settings nodes of the loop: Region Miner, Auditor Inpaint (editor), Tournament Guard and
TSPO Sampler (policy). Each builds a plain settings object for the TiPAI KSampler / Patch Model."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..tipai_core.actions import FixedKnobPolicy
from ..tipai_core.audit_schedule import AuditSchedule
from ..tipai_core.guard import TournamentGuard
from ..tipai_core.overlay import mask_overlay
from ..tipai_core.schedules import Schedule
from .tipai_run import AuditorHandle, EditorSpec, GuardSpec, MinerSpec, PolicySpec
from .types import Auditor, Editor, Guard, Miner, Policy
from .types import image_from_core, image_to_core, mask_from_core, mask_to_core


class TiPAIRegionMiner(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIRegionMiner",
            display_name="TiPAI Region Miner",
            category="TiPAI",
            description="Finds the regions to repair: fused auditor saliency (risk maps, low prompt match) plus an "
                        "optional user mask, top-K connected regions. With an image and an auditor it also mines "
                        "that image on its own.",
            inputs=[
                io.Int.Input("k", default=2, min=1, max=16, tooltip="At most K regions per audited step."),
                io.Float.Input("threshold", default=0.6, min=0.0, max=1.0, step=0.01,
                               tooltip="Saliency above this is suspect."),
                io.Float.Input("min_area", default=0.02, min=0.0, max=1.0, step=0.005,
                               tooltip="Smallest region, as a fraction of the image."),
                io.Float.Input("max_area", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Largest region, as a fraction of the image."),
                io.Int.Input("merge_margin", default=2, min=0, max=64,
                             tooltip="Regions closer than this many pixels are merged."),
                io.Float.Input("risk_weight", default=1.0, min=0.0, max=10.0, step=0.1,
                               tooltip="Weight of the auditor's policy-risk maps in the fused saliency."),
                io.Float.Input("faithfulness_weight", default=1.0, min=0.0, max=10.0, step=0.1,
                               tooltip="Weight of the low prompt-match map in the fused saliency."),
                io.Mask.Input("user_mask", optional=True,
                              tooltip="A mask you drew (mask editor, a segmentation node): always a region."),
                io.Image.Input("image", optional=True, tooltip="Standalone use: an image to mine now."),
                Auditor.Input("auditor", optional=True, tooltip="Needed for standalone mining of an image."),
                io.String.Input("prompt", optional=True, default="", multiline=True,
                                tooltip="Standalone use: the prompt the image should show."),
            ],
            outputs=[
                Miner.Output(display_name="miner"),
                io.Mask.Output(display_name="regions", tooltip="Standalone: one mask per mined region."),
                io.Image.Output(display_name="overlay", tooltip="Standalone: the image with the regions tinted."),
            ],
        )

    @classmethod
    def execute(cls, k, threshold, min_area, max_area, merge_margin, risk_weight, faithfulness_weight,
                user_mask=None, image=None, auditor: AuditorHandle | None = None, prompt: str = "") -> io.NodeOutput:
        if min_area > max_area:
            raise ValueError(f"TiPAI Region Miner: min_area ({min_area}) is larger than max_area ({max_area})")
        spec = MinerSpec(k, threshold, min_area, max_area, merge_margin, risk_weight, faithfulness_weight,
                         None if user_mask is None else mask_to_core(user_mask))
        if image is None:
            return io.NodeOutput(spec, torch.zeros(1, 64, 64), torch.zeros(1, 64, 64, 3))
        if auditor is None:
            raise ValueError("TiPAI Region Miner: to mine an image, connect an auditor")
        if not prompt or not prompt.strip():
            raise ValueError("TiPAI Region Miner: the prompt is empty; give the text the image should show")
        img = image_to_core(image)[:1]
        um = spec.user_mask
        if um is not None and um.shape[-2:] != img.shape[-2:]:
            raise ValueError(f"TiPAI Region Miner: the user mask is {um.shape[-1]}x{um.shape[-2]} but the image is "
                             f"{img.shape[-1]}x{img.shape[-2]}; resize the mask to the image")
        aud = auditor.ready()
        with torch.no_grad():
            regions = spec.build(aud)(img.to(aud.device, aud.dtype), prompt, None if um is None else um[:1].to(img))
        if not regions:
            masks = torch.zeros(1, 1, *img.shape[-2:])
        else:
            masks = torch.cat([r.mask.float().cpu().reshape(1, 1, *img.shape[-2:]) for r in regions])
        return io.NodeOutput(spec, mask_from_core(masks), image_from_core(mask_overlay(img.cpu(), masks)))


class TiPAIAuditorInpaint(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIAuditorInpaint",
            display_name="TiPAI Auditor Inpaint",
            category="TiPAI",
            description="The editor A_g that makes the N candidates of a region: re-noise the region by d steps "
                        "(DDIM inversion or fresh noise), then re-denoise it with the candidate's knobs.",
            inputs=[
                io.Combo.Input("backend", options=["diffusion"], default="diffusion",
                               tooltip="'diffusion': the training-free diffusion editor on your own model."),
                io.Int.Input("refine_iters", default=0, min=0, max=30,
                             tooltip="Fixed-point refinements per DDIM inversion step (more exact, more model calls)."),
                io.Int.Input("crop_margin", default=2, min=0, max=32,
                             tooltip="Context margin, in latent pixels, of the decoded crops."),
                io.Combo.Input("audit_decoder", options=["vae", "latent_rgb"], default="vae",
                               tooltip="How audit views are decoded: the VAE (TAESD when the checkpoint has it), or "
                                       "the model's cheap latent-to-RGB map."),
            ],
            outputs=[Editor.Output(display_name="editor")],
        )

    @classmethod
    def execute(cls, backend, refine_iters, crop_margin, audit_decoder) -> io.NodeOutput:
        return io.NodeOutput(EditorSpec(backend, refine_iters, crop_margin, audit_decoder))


def _scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"TiPAI Tournament Guard: audit_scales must be numbers like '0.5, 1.0', got {text!r}") from None
    if not values:
        raise ValueError("TiPAI Tournament Guard: audit_scales is empty; give at least one scale, e.g. '1.0'")
    return values


class TiPAITournamentGuard(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAITournamentGuard",
            display_name="TiPAI Tournament Guard",
            category="TiPAI",
            description="Accepts a candidate only if u_i = (S_i - S_0 - δ)_+ · 1[P_i ≥ τ_P(t)] · 1[F_i ≥ τ_F(t)] · B_i "
                        "is positive for the best one; otherwise the latent stays exactly as it was.",
            inputs=[
                io.Float.Input("delta", default=0.02, min=0.0, max=10.0, step=0.001,
                               tooltip="δ: how much a candidate must beat the unedited control by."),
                io.Float.Input("tau_P_start", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="τ_P at the start of sampling: minimum policy safety of every class."),
                io.Float.Input("tau_P_end", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="τ_P at the end."),
                io.Float.Input("tau_F_start", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="τ_F at the start of sampling: minimum faithfulness."),
                io.Float.Input("tau_F_end", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="τ_F at the end."),
                io.Float.Input("alpha", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="α in z ← (1-α·m)·z_ctrl + α·m·z_edit when an edit is accepted."),
                io.Int.Input("audit_every", default=3, min=1, max=100, tooltip="Audit every this many steps."),
                io.Int.Input("audit_first", default=2, min=1, max=1000, tooltip="First audited step."),
                io.Int.Input("skip_last", default=1, min=0, max=1000, tooltip="Never audit the last this many steps."),
                io.String.Input("audit_scales", default="0.5, 1.0",
                                tooltip="Audit resolution over time, coarse early to fine late (1.0 = full size)."),
            ],
            outputs=[Guard.Output(display_name="guard")],
        )

    @classmethod
    def execute(cls, delta, tau_P_start, tau_P_end, tau_F_start, tau_F_end, alpha, audit_every, audit_first,
                skip_last, audit_scales) -> io.NodeOutput:
        guard = TournamentGuard(delta=delta, tau_P=Schedule.linear(tau_P_start, tau_P_end),
                                tau_F=Schedule.linear(tau_F_start, tau_F_end))
        schedule = AuditSchedule(every=audit_every, first=audit_first, skip_last=skip_last, scales=_scales(audit_scales))
        return io.NodeOutput(GuardSpec(guard, schedule, alpha))


def _choices(text: str, cast, name: str) -> tuple:
    try:
        values = tuple(cast(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"TiPAI TSPO Sampler: {name} must be a comma-separated list, got {text!r}") from None
    if not values:
        raise ValueError(f"TiPAI TSPO Sampler: {name} is empty")
    return values


class TiPAITSPOSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAITSPOSampler",
            display_name="TiPAI TSPO Sampler",
            category="TiPAI",
            description="The policy π that draws the N candidates' knobs. Here a fixed distribution: each knob is "
                        "drawn uniformly from the listed choices.",
            inputs=[
                io.Int.Input("n", default=4, min=1, max=32, tooltip="N: candidates per region (plus the control)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the policy's draws (never the sampler's noise)."),
                io.String.Input("depths", default="1, 2", tooltip="Inversion depths d to draw from."),
                io.String.Input("cfg_inside", default="3.0, 5.0, 7.0", tooltip="CFG scales inside the mask."),
                io.String.Input("jitter", default="0.0, 0.3", tooltip="Latent noise jitter in [0, 1]."),
                io.String.Input("dilation", default="0, 1", tooltip="Mask dilation in latent pixels."),
                io.String.Input("feather", default="1", tooltip="Mask feather radius in latent pixels."),
                io.Combo.Input("editor", options=["invert", "renoise", "both"], default="invert",
                               tooltip="Re-noise by DDIM inversion, by fresh noise, or draw either."),
            ],
            outputs=[Policy.Output(display_name="policy")],
        )

    @classmethod
    def execute(cls, n, seed, depths, cfg_inside, jitter, dilation, feather, editor) -> io.NodeOutput:
        def uniform(values):
            return (values, tuple(1.0 / len(values) for _ in values))

        knobs = {
            "depth": uniform(_choices(depths, int, "depths")),
            "cfg_inside": uniform(_choices(cfg_inside, float, "cfg_inside")),
            "jitter": uniform(_choices(jitter, float, "jitter")),
            "dilation": uniform(_choices(dilation, int, "dilation")),
            "feather": uniform(_choices(feather, int, "feather")),
            "editor": uniform(("invert", "renoise") if editor == "both" else (editor,)),
        }
        return io.NodeOutput(PolicySpec(FixedKnobPolicy(knobs=knobs), n=n, seed=seed))
