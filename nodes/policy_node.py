"""TiPAI TSPO Sampler: the policy π that draws the knobs of the N candidates."""

from __future__ import annotations

from comfy_api.latest import io

from ..tipai_core.actions import FixedKnobPolicy
from .tipai_run import PolicySpec
from .types import Policy


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
