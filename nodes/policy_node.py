"""TiPAI TSPO Sampler: the policy π that draws the knobs of the N candidates."""

from __future__ import annotations

from comfy_api.latest import io

from ..tipai_core.policy.actions import KNOB_RANGES
from ..tipai_core.policy.policy_net import PolicyNet
from . import defaults as D
from . import model_files
from .settings import PolicySpec, fixed_policy
from .types import Policy
from .validation import as_validation, check_widgets, number_list

NODE = "TiPAI TSPO Sampler"
EMPHASIS_TEXT = D.as_list_text(D.POLICY_EMPHASIS)  # the default list as its widget shows it


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
                io.Int.Input(
                    "n", default=D.POLICY_N, min=1, max=32, tooltip="N: candidates per region (plus the control)."
                ),
                io.Int.Input(
                    "seed",
                    default=D.POLICY_SEED,
                    min=0,
                    max=0xFFFFFFFF,
                    control_after_generate=False,
                    tooltip="Seed of the policy's draws (never the sampler's noise).",
                ),
                io.String.Input(
                    "depths", default=D.as_list_text(D.POLICY_DEPTHS), tooltip="Inversion depths d to draw from."
                ),
                io.String.Input(
                    "cfg_inside", default=D.as_list_text(D.POLICY_CFG_INSIDE), tooltip="CFG scales inside the mask."
                ),
                io.String.Input(
                    "jitter", default=D.as_list_text(D.POLICY_JITTER), tooltip="Latent noise jitter in [0, 1]."
                ),
                io.String.Input(
                    "dilation", default=D.as_list_text(D.POLICY_DILATION), tooltip="Mask dilation in latent pixels."
                ),
                io.String.Input(
                    "feather", default=D.as_list_text(D.POLICY_FEATHER), tooltip="Mask feather radius in latent pixels."
                ),
                io.Combo.Input(
                    "editor",
                    options=list(D.POLICY_EDITORS),
                    default=D.POLICY_EDITOR,
                    tooltip="Re-noise by DDIM inversion, by fresh noise, or draw either ('both'); 'learned': the "
                    "learned editor file of TiPAI Auditor Inpaint (backend 'mixed' or 'learned'); 'all': any of "
                    "the three.",
                ),
                io.Combo.Input(
                    "region_text",
                    options=["region", "base", "both"],
                    default=D.POLICY_REGION_TEXT,
                    optional=True,
                    tooltip="What conditions a candidate inside its mask: the region's own prompt (Region Miner's "
                    "region_prompt or region_words, with the CLIP on the sampler), the base prompt, or either "
                    "drawn per candidate so the tournament decides.",
                ),
                io.Combo.Input(
                    "policy_file",
                    options=model_files.list_kind("policy", optional=True),
                    default=model_files.NONE,
                    optional=True,
                    tooltip="A learned policy π_θ(a|s) (<name>.safetensors + <name>.json) in models/tipai. "
                    "When set, it replaces the fixed knob lists above.",
                ),
                io.String.Input(
                    "emphasis",
                    default=EMPHASIS_TEXT,
                    optional=True,
                    tooltip="Prompt emphasis e inside the mask: the guidance there is scaled by 1 + m·(e − 1) "
                    "(1: as outside). With a region prompt, e > 1 leans harder on it. Drawn per candidate.",
                ),
            ],
            outputs=[
                Policy.Output(
                    display_name="policy",
                    tooltip="The policy drawing the candidates' knobs: give it to the TiPAI KSampler or Patch Model.",
                )
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, policy_file=model_files.NONE, **kwargs):
        # a policy file rewritten under the same name (on-policy training) must be read again
        return model_files.fingerprint(policy_file, "TSPO policy")

    # each comma list -> (knob, value type): its range is the library's (``policy.actions.KNOB_RANGES``)
    LISTS = {
        "depths": ("depth", int),
        "cfg_inside": ("cfg_inside", float),
        "jitter": ("jitter", float),
        "dilation": ("dilation", int),
        "feather": ("feather", int),
        "emphasis": ("emphasis", float),
    }

    @classmethod
    def check(cls, n=None, seed=None, **lists) -> dict[str, tuple]:
        check_widgets(cls, dict(n=n, seed=seed))
        out = {}
        for name, text in lists.items():
            if text is not None:
                knob, cast = cls.LISTS[name]
                out[name] = number_list(NODE, name, text, cast, *KNOB_RANGES[knob])
        return out

    @classmethod
    def validate_inputs(
        cls, n=None, seed=None, depths=None, cfg_inside=None, jitter=None, dilation=None, feather=None, emphasis=None
    ):
        lists = dict(depths=depths, cfg_inside=cfg_inside, jitter=jitter, dilation=dilation, feather=feather)
        return as_validation(lambda: cls.check(n, seed, **lists, emphasis=emphasis))

    @classmethod
    def execute(
        cls,
        n,
        seed,
        depths,
        cfg_inside,
        jitter,
        dilation,
        feather,
        editor,
        policy_file=model_files.NONE,
        region_text=D.POLICY_REGION_TEXT,
        emphasis=EMPHASIS_TEXT,
    ) -> io.NodeOutput:
        check_widgets(
            cls, {k: v for k, v in locals().items() if k != "cls"}, required=True
        )  # every widget, before any work
        given = locals()  # (a comprehension has locals of its own)
        lists = cls.check(n, seed, **{name: given[name] for name in cls.LISTS})
        if policy_file and policy_file != model_files.NONE:
            try:
                policy = PolicyNet.load(model_files.resolve(policy_file, "TSPO policy"))
            except ValueError as exc:
                raise ValueError(f"TiPAI TSPO Sampler: {exc}") from None
            return io.NodeOutput(PolicySpec(policy, n=n, seed=seed))
        policy = fixed_policy(
            lists["depths"],
            lists["cfg_inside"],
            lists["jitter"],
            lists["dilation"],
            lists["feather"],
            editor,
            region_text,
            lists["emphasis"],
        )
        return io.NodeOutput(PolicySpec(policy, n=n, seed=seed))
