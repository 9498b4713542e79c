"""What each shipped workflow says to the person who opens it: its file name in the template browser,
the titles of its nodes, and the note on its canvas. ``make_workflows.py`` writes them in.

The frontend (1.32) shows a custom pack's template by its file name, as the title and, with '-' and
'_' turned into spaces, as the description; so the UI files are named to read as both.
"""

from __future__ import annotations

# the overlay legend and the model-file facts every note repeats
LEGEND = (
    "**Overlay legend.** Green box: an accepted edit. Orange box: a region that was audited, where the "
    "unedited image won. Each box has a dark outline, so it shows on any colour."
)
MODELS = (
    "**Model files.** Checkpoint: `models/checkpoints` (pick yours in *Load Checkpoint*; the workflow "
    "names the pack's tiny test model). Auditor backbone (an open_clip `.safetensors`, e.g. ViT-B-32, or a "
    "transformers CLIP folder), trained heads, TSPO policies and calibration JSON: `models/tipai`. Each "
    "list offers only files of its kind. Nothing is ever downloaded."
)

_TXT2IMG = f"""# TiPAI: text to image, repaired while sampling

**What it shows.** The TiPAI KSampler samples as KSampler does. At the audited steps it looks at its own
x̂0 preview, mines the regions the auditor finds wrong, inpaints each one N ways and keeps an edit only
when it beats the unedited image by the guard's margin. When nothing is accepted the image is bit for
bit what the plain KSampler makes. The report shows on the sampler node after Run.

{MODELS}

**What to change first.** Your checkpoint and prompt; the image size in *Empty Latent Image* (512 for
SD1.5, 1024 for SDXL; 64 suits the tiny test model); then in the settings group the number of candidates
*n* (TSPO Sampler) and the audited steps (Tournament Guard).

{LEGEND}
"""

_INPAINT = f"""# TiPAI Inpaint Biases: your region, repaired and judged

**What it shows.** You give the region; TiPAI repairs only there, and the auditor decides whether the
repair stays. The image is ComfyUI's own `input/example.png`, the region a square made by *Solid Mask*
and *Mask Composite* (previewed on the right).

**How the mask works.** White (1) is the region to repair, black (0) is kept. To use your own: open
*Load Image*, pick a picture, right-click it and choose *Open in MaskEditor*, paint the region, then wire
its MASK output to *Region Miner* (user_mask) and *Set Latent Noise Mask* in place of the square. The
painted (transparent) area becomes the region. Any node's MASK plugs in the same way: a segmentation
node from another pack (SAM, for example) can pick the region for you.

**The region's own prompt.** *Region Miner*'s `region_prompt` ("a blue square") says what the region
should show. The checkpoint's CLIP is wired to the sampler's `clip` input, so the candidates are made
with that text inside the mask and the whole prompt outside it. Leave `region_prompt` empty to use the
whole prompt everywhere, or feed it from *TiPAI Region Prompt* to have a local language model write it.

{MODELS}

**What to change first.** The image and the mask; the prompt (it describes the whole image) and the
region's prompt; denoise on the sampler (how much of the region may change).

{LEGEND}
"""

_POSTHOC = f"""# TiPAI: repair a finished image

**What it shows.** An image you already have is scored by the auditor (*Auditor Score*, with its risk
map), the miner finds the regions to repair (previewed), and the TiPAI KSampler re-samples it at
denoise 0.5, auditing as it goes. The score of the result is shown as text. The image is ComfyUI's own
`input/example.png`: pick yours in *Load Image*.

{MODELS}

**What to change first.** The image and a prompt that describes it; denoise (how far the result may
move from the input); the miner's *k* and *threshold* (how many regions, how sure).

{LEGEND}
"""

_PATCH = f"""# TiPAI in any sampler: Patch Model

**What it shows.** *TiPAI Patch Model* returns a copy of the model that runs the TiPAI loop inside any
sampler node, here *SamplerCustomAdvanced* with an ancestral sampler and a Karras schedule. The input
model is not changed. After Run, the run's report and its overlay show on the Patch Model node, and
with *save_log* on the tournament log goes to `output/tipai_logs/`.

{MODELS}

**What to change first.** Your checkpoint and prompt; the sampler and scheduler; the settings group as
in the TiPAI KSampler workflow.

{LEGEND}
"""

_REFEREE = f"""# TiPAI Referee Refine: optimise the image against the auditor

**What it shows.** A plain KSampler makes an image; *TiPAI Referee Refine* then optimises its latent so
that the auditor scores the decoded image as the prompt (referee inversion). Each step averages the
auditor's score over K random augmentations (affine, perspective, colour jitter, erasing), so the
optimiser climbs what the prompt means rather than a pattern that fools one network. Left: before;
right: after. The report gives the score at every step.

**How the mask works.** Give the node a MASK and only its white part moves; outside it the latent stays
bit for bit.

{MODELS}

**What to change first.** Your checkpoint, auditor and prompt; *steps* and *lr* (how far it may go);
*augmentations* (more is smoother and slower; 0 optimises the auditor's score directly, which it
will happily fool).
"""

_INPAINT_LLM = f"""# TiPAI Inpaint Biases with a local language model

**What it shows.** The four steps of Inpaint Biases. (1) The image: ComfyUI's own `input/example.png`.
(2) Your region: a square from *Solid Mask* and *Mask Composite* (previewed). (3) *TiPAI
Region Prompt*: a local language model rewrites the whole prompt into a short prompt for that region
(its answer shows on *Preview Any*). (4) The TiPAI KSampler inpaints the region with that prompt (the
checkpoint's CLIP is wired to its `clip`, so the text conditions the candidates inside the mask only),
and the auditor and the guard decide whether the repair stays.

**How the mask works.** White (1) is the region to repair, black (0) is kept. To use your own: open
*Load Image*, pick a picture, right-click it and choose *Open in MaskEditor*, paint the region, then wire
its MASK output to *Region Miner* (user_mask) and *Set Latent Noise Mask* in place of the square. Any
node's MASK plugs in the same way, such as a SAM segmentation node from another pack.

**The language model.** A `.gguf` file or a transformers folder (config.json + safetensors) in
`models/LLM`; the workflow names SmolLM2-135M-Instruct (Q4_1 GGUF, about 90 MB). It is loaded through
ComfyUI's memory management and unloaded after the run unless `keep_loaded` is on. Greedy by default,
so the same inputs give the same text. Nothing is downloaded.

{MODELS}

**What to change first.** The image and the mask; the whole prompt; *region* on the Region Prompt node
(what the region should show); denoise on the sampler.

{LEGEND}
"""

# the mask workflows' shared node titles
_INPAINT_TITLES = {
    "2": "Prompt (also what the auditor judges)",
    "4": "Negative prompt",
    "20": "Your image (ComfyUI's example.png)",
    "29": "Scale to the model's size",
    "30": "Mask: all kept",
    "31": "Mask: the region",
    "32": "Your region (replace with your mask)",
    "34": "The region (white is repaired)",
}

# API twin stem -> (UI file name, note, {node id: title})
WORKFLOWS: dict[str, tuple[str, str, dict[str, str]]] = {
    "tipai_txt2img": (
        "TiPAI 1 - text to image, repaired while sampling",
        _TXT2IMG,
        {"2": "Prompt (also what the auditor judges)", "4": "Negative prompt"},
    ),
    "tipai_inpaint_biases": (
        "TiPAI 2 - Inpaint Biases, your mask repaired and judged",
        _INPAINT,
        _INPAINT_TITLES,
    ),
    "tipai_inpaint_biases_llm": (
        "TiPAI 6 - Inpaint Biases, a local LLM writes the region prompt",
        _INPAINT_LLM,
        {
            **_INPAINT_TITLES,
            "40": "The region's prompt, by the LLM",
            "41": "What the LLM wrote",
        },
    ),
    "tipai_posthoc_repair": (
        "TiPAI 3 - repair a finished image",
        _POSTHOC,
        {
            "2": "Prompt (also what the auditor judges)",
            "4": "Negative prompt",
            "20": "Your image (ComfyUI's example.png)",
            "32": "Scale to the model's size",
            "21": "Score of the input",
            "26": "Score of the result",
            "28": "Mined regions",
            "29": "Risk map",
            "30": "Score of the result, as text",
        },
    ),
    "tipai_referee_refine": (
        "TiPAI 5 - Referee Refine, optimise the image against the auditor",
        _REFEREE,
        {"2": "Prompt (also what the auditor judges)", "4": "Negative prompt", "10": "Before", "11": "After"},
    ),
    "tipai_patch_model_custom_advanced": (
        "TiPAI 4 - any sampler, through Patch Model",
        _PATCH,
        {"2": "Prompt (also what the auditor judges)", "4": "Negative prompt"},
    ),
}
