"""TiPAI Auditor Inpaint: the editor A_g that makes each region's N candidates."""

from __future__ import annotations

from comfy_api.latest import io

from .tipai_run import EditorSpec
from .types import Editor


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
