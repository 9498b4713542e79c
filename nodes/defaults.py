"""The one home of the nodes' defaults.

Every default a user sees on a TiPAI node, and the value a TiPAI KSampler uses when that node is
left unconnected, comes from here: the schemas read these constants for their ``default=``, and the
settings types in ``settings.py`` build their defaults from the same constants. So an unconnected
Miner, Guard or Policy input behaves exactly like the node wired at its defaults.
"""

from __future__ import annotations

# TiPAI Region Miner
MINER_K = 2
MINER_THRESHOLD = 0.6
MINER_MIN_AREA = 0.02
MINER_MAX_AREA = 0.5
MINER_MERGE_MARGIN = 2
MINER_WEIGHTS = {
    "risk": 1.0,
    "faithfulness": 1.0,
    "drift": 0.5,
    "mismatch": 0.0,
    "change": 0.5,
    "nsfw": 1.0,
    "age": 1.0,
    "text": 1.0,
}
MINER_DETECTORS = "none"
MINER_LATENT_ALIGN = True
MINER_FEATHER = 4
MINER_REGION_WORDS = False  # each region's prompt: the prompt words its Grad-CAM ties to it

# TiPAI Auditor Inpaint
EDITOR_BACKEND = "diffusion"
# "learned": every candidate from the learned editor file (Stage B1); "mixed": each candidate from the editor
# its action's editor knob names (the policy's "learned" choice, else the diffusion editor)
EDITOR_BACKENDS = ("diffusion", "referee", "learned", "mixed")
LEARNED_STRENGTH = 1.0  # the learned editor's noise strength s inside the region (1: the design's pure noise)
# the referee backend's refine per candidate (the knob d multiplies the steps)
REFEREE_STEPS = 8
REFEREE_LR = 0.05
REFEREE_AUGMENTATIONS = 4
# TiPAI Referee Refine, on its own
REFINE_STEPS = 40
REFINE_LR = 0.05
REFINE_AUGMENTATIONS = 8
REFINE_MICRO_BATCH = 4
EDITOR_REFINE_ITERS = 0
EDITOR_CROP_MARGIN = 2
EDITOR_DECODER = "vae"

# pixels per latent pixel of the VAEs TiPAI runs with (SD1.5, SDXL, SD3, Flux)
VAE_FACTOR = 8
# ComfyUI's KSampler builds a schedule of int(steps / denoise) sigmas: a denoise so small that this passes
# a million is a typo (1e-300 overflows it), so the TiPAI KSampler refuses it by name
MAX_SCHEDULE_STEPS = 1_000_000

# TiPAI Region Prompt (the local language model's rewrite of the prompt for one region)
REGION_PROMPT_SEED = 0
REGION_PROMPT_MAX_NEW_TOKENS = 32
REGION_PROMPT_TEMPERATURE = 0.0  # greedy
REGION_PROMPT_KEEP_LOADED = False  # unload after each run: the LLM never holds VRAM the diffusion model needs

# TiPAI Tournament Guard
GUARD_DELTA = 0.02
GUARD_DELTA_MAX = 1000.0  # S is on the auditor's logit scale (about ±100): this much means "never accept"
GUARD_TAU_P = (0.0, 0.0)  # (start, end) of sampling
GUARD_TAU_F = (0.0, 0.0)
GUARD_ALPHA = 1.0
AUDIT_EVERY = 3
AUDIT_FIRST = 2
AUDIT_SKIP_LAST = 1
AUDIT_SCALES = (0.5, 1.0)
AUDIT_GLOBAL_UNTIL = 0  # audits before this step hold one whole-image tournament (0: every audit is local)

# TiPAI TSPO Sampler: N, the policy seed, and the fixed knob lists (each drawn uniformly)
POLICY_N = 4
POLICY_SEED = 0
POLICY_DEPTHS = (1, 2)
POLICY_CFG_INSIDE = (3.0, 5.0, 7.0)
POLICY_JITTER = (0.0, 0.3)
POLICY_DILATION = (0, 1)
POLICY_FEATHER = (1,)
POLICY_EDITOR = "invert"  # one of POLICY_EDITORS
# which editor each candidate is drawn from: "both" = invert or renoise; "all" = invert, renoise or learned
POLICY_EDITORS = {
    "invert": ("invert",),
    "renoise": ("renoise",),
    "both": ("invert", "renoise"),
    "learned": ("learned",),
    "all": ("invert", "renoise", "learned"),
}
POLICY_REGION_TEXT = "region"  # inside the mask: "region" (its own prompt, when it has one), "base" or "both"
POLICY_EMPHASIS = (1.0,)  # e: guidance inside the mask scaled by 1 + m·(e − 1); 1 leaves it as it is


def as_list_text(values: tuple) -> str:
    """A knob list as the node's text widget shows it: ``(1, 2)`` -> ``"1, 2"``."""
    return ", ".join(str(v) for v in values)


def referee_settings():
    """The loop's referee refine: ``REFEREE_STEPS`` Adam steps of ``REFEREE_LR`` over ``REFEREE_AUGMENTATIONS``."""
    from ..tipai_core.editing.referee import RefereeSettings

    return RefereeSettings(steps=REFEREE_STEPS, lr=REFEREE_LR, n_augment=REFEREE_AUGMENTATIONS, micro_batch=4)
