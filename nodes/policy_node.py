"""TiPAI TSPO Sampler: the policy π that draws the knobs of the N candidates."""

from __future__ import annotations

from comfy_api.latest import io

import os

from ..tipai_core.policy.actions import FixedKnobPolicy
from ..tipai_core.policy.policy_net import PolicyNet
from . import model_files
from .tipai_run import PolicySpec
from .types import Policy, parse_list

NODE = "TiPAI TSPO Sampler"


class TiPAITSPOSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAITSPOSampler",
            display_name="TiPAI TSPO Sampler",
            category="TiPAI",
            description="The policy π that draws the N candidates' knobs: a learned TSPO policy file from "
                        "models/tipai (python -m tipai_core.train tspo), or, with policy_file 'none', a fixed "
                        "distribution drawing each knob uniformly from the listed choices.",
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
                io.Combo.Input("policy_file", options=model_files.list_files(".safetensors", optional=True),
                               default=model_files.NONE, optional=True,
                               tooltip="A learned policy π_θ(a|s) (<name>.safetensors + <name>.json) in models/tipai. "
                                       "When set, it replaces the fixed knob lists above."),
            ],
            outputs=[Policy.Output(display_name="policy")],
        )

    @classmethod
    def fingerprint_inputs(cls, policy_file=model_files.NONE, **kwargs):
        # a policy file rewritten under the same name (on-policy training) must be read again
        if not policy_file or policy_file == model_files.NONE:
            return ""
        try:
            path = model_files.resolve(policy_file, "TSPO policy")
            return f"{policy_file}:{os.path.getmtime(path)}:{os.path.getsize(path)}"
        except (FileNotFoundError, OSError):
            return policy_file

    @classmethod
    def execute(cls, n, seed, depths, cfg_inside, jitter, dilation, feather, editor,
                policy_file=model_files.NONE) -> io.NodeOutput:
        if policy_file and policy_file != model_files.NONE:
            try:
                policy = PolicyNet.load(model_files.resolve(policy_file, "TSPO policy"))
            except ValueError as exc:
                raise ValueError(f"TiPAI TSPO Sampler: {exc}") from None
            return io.NodeOutput(PolicySpec(policy, n=n, seed=seed))

        def uniform(values):
            return (values, tuple(1.0 / len(values) for _ in values))

        knobs = {
            "depth": uniform(parse_list(depths, int, NODE, "depths")),
            "cfg_inside": uniform(parse_list(cfg_inside, float, NODE, "cfg_inside")),
            "jitter": uniform(parse_list(jitter, float, NODE, "jitter")),
            "dilation": uniform(parse_list(dilation, int, NODE, "dilation")),
            "feather": uniform(parse_list(feather, int, NODE, "feather")),
            "editor": uniform(("invert", "renoise") if editor == "both" else (editor,)),
        }
        return io.NodeOutput(PolicySpec(FixedKnobPolicy(knobs=knobs), n=n, seed=seed))
