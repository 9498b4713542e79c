"""Auditor nodes: load A_s from models/tipai, and score images with it."""

from __future__ import annotations

import json

import torch
from comfy_api.latest import io

from ..tipai_core.auditor import Auditor
from ..tipai_core.auditor.backbones import known_archs
from ..tipai_core.records.overlay import mask_overlay
from . import model_files
from .settings import AuditorHandle
from .types import Auditor as AuditorType
from .types import image_from_core, image_to_core, mask_from_core, mask_to_core
from .validation import check_mask, check_widgets


def _backbone_choices() -> list[str]:
    return model_files.list_kind("backbone") + model_files.list_hf_folders()


class TiPAIAuditorLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIAuditorLoader",
            display_name="TiPAI Auditor Loader",
            category="TiPAI",
            description="Loads the auditor A_s (an image–text model) from models/tipai. Without trained heads it "
            "works zero-shot.",
            inputs=[
                io.Combo.Input(
                    "backbone",
                    options=_backbone_choices(),
                    tooltip="open_clip weights (.safetensors) in models/tipai, or a transformers CLIP "
                    "folder (with config.json) in models/tipai.",
                ),
                io.Combo.Input(
                    "arch",
                    options=known_archs(),
                    default="ViT-B-32",
                    tooltip="open_clip architecture of the backbone weights (ignored for a transformers "
                    "folder). 'tipai-tiny-vit' is the pack's tiny test auditor.",
                ),
                io.Combo.Input(
                    "heads",
                    options=model_files.list_kind("heads", optional=True),
                    default=model_files.NONE,
                    tooltip="Trained auditor heads from Stage A (python -m tipai_core.train scorer); "
                    "'none' = zero-shot.",
                ),
                io.Combo.Input(
                    "lpips_backbone",
                    options=model_files.list_kind("lpips", optional=True),
                    default=model_files.NONE,
                    tooltip="Local LPIPS backbone weights for the seam score B. 'none' uses the "
                    "weight-free DSSIM fallback (nothing is downloaded).",
                ),
                io.Float.Input(
                    "kappa",
                    default=1.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    tooltip="κ in B = exp(-κ · seam distance on a ring around the mask).",
                ),
            ],
            outputs=[
                AuditorType.Output(
                    display_name="auditor",
                    tooltip="The loaded auditor A_s: give it to the TiPAI KSampler, Patch Model, Score and Miner.",
                )
            ],
        )

    @classmethod
    def validate_inputs(cls, backbone: str | None = None) -> bool | str:
        # Our own check of the backbone, so the message names the folder; ComfyUI's list check
        # keeps each of heads and lpips_backbone, so an error shows against the widget that has it.
        if backbone is None:
            return True
        try:
            model_files.resolve(backbone, "auditor backbone")
        except FileNotFoundError as exc:
            return f"TiPAI Auditor Loader: backbone: {exc}"
        return True

    @classmethod
    def execute(cls, backbone: str, arch: str, heads: str, lpips_backbone: str, kappa: float) -> io.NodeOutput:
        check_widgets(
            cls, {k: v for k, v in locals().items() if k != "cls"}, required=True
        )  # every widget, before any work
        path = model_files.resolve(backbone, "auditor backbone")
        # ComfyUI runs nodes under inference_mode; weights made there could never enter autograd,
        # and the miner's Grad-CAM needs gradients through the image tower.
        with torch.inference_mode(False):
            try:
                auditor = _load(path, backbone, arch, heads, lpips_backbone, kappa)
            except (ValueError, FileNotFoundError) as exc:
                # the library's message says what is wrong with which file; this says where
                raise type(exc)(f"TiPAI Auditor Loader: {exc}") from None
        auditor.eval()
        return io.NodeOutput(AuditorHandle.wrap(auditor, backbone))


def _load(path: str, backbone: str, arch: str, heads: str, lpips_backbone: str, kappa: float) -> Auditor:
    return Auditor.from_files(
        path,
        arch=None if backbone.endswith("/") else arch.strip(),
        heads=None if heads == model_files.NONE else model_files.resolve(heads, "auditor heads"),
        lpips_backbone=None
        if lpips_backbone == model_files.NONE
        else model_files.resolve(lpips_backbone, "LPIPS backbone"),
        kappa=kappa,
    )


class TiPAIAuditorScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIAuditorScore",
            display_name="TiPAI Auditor Score",
            category="TiPAI",
            description="Scores images against a prompt: S, F, P per policy class, and per-class risk maps.",
            inputs=[
                io.Image.Input("image", tooltip="Images to score (a batch is scored in one forward pass)."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The text the images should show."),
                AuditorType.Input("auditor", tooltip="From TiPAI Auditor Loader."),
                io.Mask.Input("mask", optional=True, tooltip="Optional region R for the patch score S_R."),
            ],
            outputs=[
                io.Float.Output(display_name="S", tooltip="Global score of the first image."),
                io.Float.Output(display_name="F", tooltip="Faithfulness of the first image."),
                io.Float.Output(display_name="P_min", tooltip="Lowest policy safety over classes, first image."),
                io.String.Output(display_name="scores_json", tooltip="All scores of every image, as JSON."),
                io.Mask.Output(display_name="risk", tooltip="Highest per-class risk map per image."),
                io.Image.Output(display_name="overlay", tooltip="The images with the risk map tinted in."),
            ],
        )

    @classmethod
    def execute(cls, image, prompt: str, auditor: AuditorHandle, mask=None) -> io.NodeOutput:
        check_widgets(
            cls, {k: v for k, v in locals().items() if k != "cls"}, required=True
        )  # every widget, before any work
        if not prompt or not prompt.strip():
            raise ValueError("TiPAI Auditor Score: the prompt is empty; give the text the image should show")
        images = image_to_core(image, "TiPAI Auditor Score: image")  # shape and finite pixels checked
        m = None
        if mask is not None:
            m = mask_to_core(mask)
            check_mask("TiPAI Auditor Score", "mask", m, (images.shape[-2], images.shape[-1]))
        aud = auditor.ready()
        with torch.no_grad():
            res = aud.audit(
                images.to(aud.device, aud.dtype), prompt, None if m is None else m.to(aud.device, aud.dtype)
            )
        sc = res.scores
        table = [
            {
                "S": float(sc.S[i]),
                "S_R": float(sc.S_R[i]),
                "F": float(sc.F[i]),
                "P": {c: float(sc.P[i, j]) for j, c in enumerate(sc.classes)},
            }
            for i in range(len(sc))
        ]
        risk = res.risk_maps.max(dim=1, keepdim=True).values.float().cpu()
        overlay = torch.cat(
            [
                mask_overlay(images[i : i + 1].cpu(), risk[i : i + 1], colors=[(1.0, 0.0, 0.0)])
                for i in range(images.shape[0])
            ]
        )
        return io.NodeOutput(
            float(sc.S[0]),
            float(sc.F[0]),
            float(sc.P[0].min()),
            json.dumps(table, indent=1),
            mask_from_core(risk),
            image_from_core(overlay),
        )
