"""The whole loop as nodes: the TiPAI KSampler, and the Patch Model wrapper for any sampler node."""

from __future__ import annotations

import os

import comfy.samplers
import folder_paths
import nodes as comfy_nodes  # ComfyUI's own nodes.py (this pack's glue lives in <pack>.nodes)
from comfy_api.latest import io

from ..tipai_core.mining.masks import check_user_mask
from ..tipai_core.records.overlay import draw_overlay, readable_style
from ..tipai_core.records.report import build_report, summary_text, write_log
from ..tipai_core.records.tournament_picture import loop_picture
from . import defaults as D
from .settings import EditorSpec, GuardSpec, MinerSpec, PolicySpec, TiPAISettings
from .tipai_run import TiPAIRun, patch_model
from .types import Auditor, Editor, Guard, Miner, Policy, Report, image_from_core, image_to_core
from .ui_report import TEXT_KEY, save_preview, show_on_node
from .validation import as_validation, check_widgets

LOG_FOLDER = "tipai_logs"


def _loop_inputs() -> list:
    """The inputs the KSampler and the Patch Model share."""
    return [
        io.String.Input(
            "prompt",
            multiline=True,
            default="",
            tooltip="The prompt as text: the auditor judges every candidate against it (wire the same text "
            "as the positive conditioning).",
        ),
        io.Vae.Input("vae", tooltip="Decodes the audit views (TAESD when the checkpoint carries it)."),
        Auditor.Input("auditor", tooltip="From TiPAI Auditor Loader."),
        Miner.Input("miner", optional=True, tooltip="From TiPAI Region Miner (defaults if left out)."),
        Editor.Input("editor", optional=True, tooltip="From TiPAI Auditor Inpaint (defaults if left out)."),
        Guard.Input("guard", optional=True, tooltip="From TiPAI Tournament Guard (defaults if left out)."),
        Policy.Input("policy", optional=True, tooltip="From TiPAI TSPO Sampler (defaults if left out)."),
        io.Clip.Input(
            "clip",
            optional=True,
            tooltip="The CLIP that encoded the positive prompt. With it, a region's prompt (the Region Miner's "
            "region_prompt, or its per-region words) conditions that region's candidates inside the mask; "
            "without it, every region is edited under the base prompt.",
        ),
    ]


def _settings(prompt, vae, auditor, miner, editor, guard, policy, clip=None) -> TiPAISettings:
    return TiPAISettings(
        prompt=prompt,
        auditor=auditor,
        vae=vae,
        miner=miner or MinerSpec(),
        editor=editor or EditorSpec(),
        guard=guard or GuardSpec(),
        policy=policy or PolicySpec(),
        clip=clip,
    )


def _check_prefix(filename_prefix: str) -> str:
    prefix = filename_prefix.strip() if isinstance(filename_prefix, str) else ""
    if not prefix or len(prefix) > 100 or not all(c.isalnum() or c in "-_" for c in prefix):
        raise ValueError(
            f"TiPAI Save Tournament Log: filename_prefix {filename_prefix!r} may only hold letters, digits, "
            "'-' and '_' (1 to 100 of them)"
        )
    return prefix


def _check_denoise(steps, denoise) -> None:
    """0 samples nothing (as KSampler); otherwise ``steps / denoise`` sigmas must stay a buildable schedule."""
    numbers = isinstance(steps, (int, float)) and isinstance(denoise, float)
    if numbers and 0 < denoise < 1 and steps / denoise > D.MAX_SCHEDULE_STEPS:
        raise ValueError(
            f"TiPAI KSampler: denoise must be 0 or at least steps / {D.MAX_SCHEDULE_STEPS:g} "
            f"(= {steps / D.MAX_SCHEDULE_STEPS:g} at {steps} steps), got {denoise!r}"
        )


def _check_user_mask(settings: TiPAISettings, latent_image: dict, vae) -> None:
    """The Miner's user mask fits the latent's image size: checked before sampling, not at the first audit."""
    mask = settings.miner.user_mask
    if mask is None:
        return
    samples = latent_image["samples"]
    factor = int(getattr(vae, "downscale_ratio", 8)) if vae is not None else 8
    try:
        check_user_mask(mask, samples.shape[0], (factor * samples.shape[-2], factor * samples.shape[-1]))
    except ValueError as exc:
        raise ValueError(f"TiPAI KSampler: the Region Miner's {exc}") from None


def run_report(run: TiPAIRun) -> dict:
    return build_report(
        run.records,
        run.costs,
        n_steps=run.n_steps,
        base_model_calls=run.base_model_calls,
        audited_steps=run.audited,
        accepted_steps=run.accepted,
        seconds=run.seconds,
        extra={
            "extra_apply_model_calls": run.extra_model_calls,
            "prompt": run.s.prompt,
            "warnings": list(run.warnings),
        },
    )


def next_log_stem(folder: str, prefix: str) -> str:
    os.makedirs(folder, exist_ok=True)
    i = 1
    while os.path.exists(os.path.join(folder, f"{prefix}_{i:05d}.report.json")):
        i += 1
    return f"{prefix}_{i:05d}"


class TiPAIKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIKSampler",
            display_name="TiPAI KSampler",
            category="TiPAI",
            description="KSampler with TiPAI: at the audited steps, mine regions, run a tournament of N inpaints plus "
            "the unedited control, and accept the best only if the guard says it wins. With nothing "
            "accepted the result is bit-identical to the plain KSampler.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model."),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="The noise seed, as in KSampler.",
                ),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps."),
                io.Float.Input(
                    "cfg",
                    default=7.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Classifier-free guidance scale (outside the edited regions).",
                ),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, tooltip="The sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, tooltip="The scheduler."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (an inpainting latent keeps its mask)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Denoising strength."),
                *_loop_inputs(),
            ],
            outputs=[
                io.Latent.Output(
                    display_name="LATENT",
                    tooltip="The sampled latent: bit for bit the plain KSampler's when no edit was accepted.",
                ),
                Report.Output(
                    display_name="report",
                    tooltip="Every tournament: regions, candidates, scores, utilities, winners, costs.",
                ),
                io.Image.Output(
                    display_name="overlay",
                    tooltip="The decoded result with audited regions boxed: green accepted, orange rejected.",
                ),
                io.String.Output(
                    display_name="summary",
                    tooltip="The report as readable text (Markdown): audited steps, regions, candidates, "
                    "accepted edits, extra compute, time. Wire it to Preview Any, or read it on this node.",
                ),
            ],
        )

    @classmethod
    def validate_inputs(cls, seed=None, steps=None, cfg=None, denoise=None):
        def check() -> None:
            check_widgets(cls, dict(seed=seed, steps=steps, cfg=cfg, denoise=denoise))
            _check_denoise(steps, denoise)

        return as_validation(check)

    @classmethod
    def execute(
        cls,
        model,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        latent_image,
        denoise,
        prompt,
        vae,
        auditor,
        miner=None,
        editor=None,
        guard=None,
        policy=None,
        clip=None,
    ) -> io.NodeOutput:
        check_widgets(
            cls, {k: v for k, v in locals().items() if k != "cls"}, required=True
        )  # every widget, before any work
        _check_denoise(steps, denoise)
        settings = _settings(prompt, vae, auditor, miner, editor, guard, policy, clip)
        _check_user_mask(settings, latent_image, vae)
        settings.editor.check_for("TiPAI KSampler", model, auditor)
        patched, slot = patch_model(model, settings)
        out = comfy_nodes.common_ksampler(
            patched, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=denoise
        )[0]
        # denoise 0 samples nothing (ComfyUI returns the input latent): an empty report, like a run without audits
        run = slot.last if slot.last is not None else TiPAIRun(settings)
        report = run_report(run)
        image = image_to_core(vae.decode(out["samples"]), "TiPAI KSampler: the decoded result")
        boxed = draw_overlay(image, run.records, **readable_style(*image.shape[-2:]))
        text = summary_text(report)
        ui = {
            "tipai_report": [report["summary"]],
            TEXT_KEY: [text],
            "images": _picture(image, boxed, run, report, "ksampler"),
        }
        return io.NodeOutput(out, report, image_from_core(boxed), text, ui=ui)


class TiPAIPatchModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIPatchModel",
            display_name="TiPAI Patch Model",
            category="TiPAI",
            description="Returns a copy of the model that runs the TiPAI loop inside any sampler node (KSampler, "
            "SamplerCustomAdvanced, detailers). The input model is not changed.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch (it is cloned, not changed)."),
                *_loop_inputs(),
                io.Boolean.Input(
                    "save_log",
                    default=False,
                    optional=True,
                    tooltip=f"Write each run's tournament log to output/{LOG_FOLDER}/.",
                ),
            ],
            outputs=[
                io.Model.Output(
                    display_name="MODEL",
                    tooltip="The patched copy: give it to any sampler. Each run's report and overlay then show "
                    "on this node.",
                )
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(
        cls, model, prompt, vae, auditor, miner=None, editor=None, guard=None, policy=None, save_log=False, clip=None
    ) -> io.NodeOutput:
        check_widgets(
            cls, {k: v for k, v in locals().items() if k != "cls"}, required=True
        )  # every widget, before any work
        settings = _settings(prompt, vae, auditor, miner, editor, guard, policy, clip)
        settings.editor.check_for("TiPAI Patch Model", model, auditor)
        patched, slot = patch_model(model, settings)
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        slot.on_finished = lambda run, latent: _patch_run_finished(run, latent, settings, node_id, save_log)
        return io.NodeOutput(patched)


def _patch_run_finished(run: TiPAIRun, latent, settings: TiPAISettings, node_id, save_log: bool) -> None:
    """A run of a patched model ended: save its log if asked, and show its report on the Patch Model node."""
    report = run_report(run)
    written = []
    if save_log:
        folder = os.path.join(folder_paths.get_output_directory(), LOG_FOLDER)
        written = [str(p) for p in write_log(report, folder, next_log_stem(folder, "patch_model"))]
    output: dict = {"tipai_report": [report["summary"]], TEXT_KEY: [summary_text(report, written)]}
    if run.records and latent is not None:
        image = image_to_core(settings.vae.decode(latent), "TiPAI Patch Model: the decoded result")
        boxed = draw_overlay(image, run.records, **readable_style(*image.shape[-2:]))
        output["images"] = _picture(image, boxed, run, report, "patch")
    show_on_node(node_id, output)


def _picture(image, boxed, run: TiPAIRun, report: dict, name: str) -> list[dict]:
    """The loop picture of the first image (result, overlay, every tournament's strip), saved for the UI."""
    s = report["summary"]
    title = f"TiPAI: {s['audited_steps']} audited steps, {s['regions']} regions, {s['accepted']} accepted"
    page = loop_picture(image[0].cpu(), boxed[0].cpu(), run.strips, title)
    return save_preview(image_from_core(page[None]), f"tipai_{name}_loop")


class TiPAISaveTournamentLog(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAISaveTournamentLog",
            display_name="TiPAI Save Tournament Log",
            category="TiPAI",
            description=f"Writes the report and its tournament records (JSONL) to output/{LOG_FOLDER}/: the data "
            "TSPO and calibration learn from.",
            inputs=[
                Report.Input("report", tooltip="From TiPAI KSampler."),
                io.String.Input(
                    "filename_prefix", default="tipai", tooltip="File name prefix (letters, digits, '-' and '_' only)."
                ),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=None):
        return as_validation(lambda: filename_prefix is None or _check_prefix(filename_prefix))

    @classmethod
    def execute(cls, report: dict, filename_prefix: str) -> io.NodeOutput:
        check_widgets(
            cls, {k: v for k, v in locals().items() if k != "cls"}, required=True
        )  # every widget, before any work
        prefix = _check_prefix(filename_prefix)
        folder = os.path.join(folder_paths.get_output_directory(), LOG_FOLDER)
        paths = write_log(report, folder, next_log_stem(folder, prefix))
        files = [{"filename": os.path.basename(p), "subfolder": LOG_FOLDER, "type": "output"} for p in paths]
        shown = [f"output/{LOG_FOLDER}/{f['filename']}" for f in files]
        return io.NodeOutput(
            ui={"tipai_logs": files, "tipai_report": [report["summary"]], TEXT_KEY: [summary_text(report, shown)]}
        )
