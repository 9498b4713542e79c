"""TiPAI Region Prompt: a local language model rewrites the prompt for the region the user marked (Inpaint
Biases, step 3), as a node. The rewrite is ``tipai_core.prompting.region_prompt``; this file loads the model
from models/LLM and hands it to ComfyUI's memory management.

The model is wrapped in a ``ModelPatcher`` (load device: ComfyUI's torch device; offload device: its offload
device) and loaded with ``load_models_gpu`` before every run, so ComfyUI can move it out when the diffusion
model needs the memory, and the other way round. ``keep_loaded`` off (the default): after the run the model
leaves ``current_loaded_models``, its weights go to the offload device, the pack's cache drops it and the
device cache is emptied, so the next run loads it from disk again. ``keep_loaded`` on: the loaded model is
cached per file (keyed by its path, mtime and size) and the next run reuses it.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.model_patcher
import comfy.utils
import torch
from comfy_api.latest import io

from ..tipai_core.prompting.llm import LocalLM, load_causal_lm
from ..tipai_core.prompting.region_prompt import (
    MAX_NEW_TOKENS,
    MAX_SEED,
    MAX_TEMPERATURE,
    check_temperature,
    parse_hints,
    refine_region_prompt,
)
from . import defaults as D
from . import model_files
from .ui_report import TEXT_KEY
from .validation import as_validation, check_widgets

NODE = "TiPAI Region Prompt"


@dataclass
class LoadedLLM:
    """A language model in the pack's cache, and the ModelPatcher that gives it to ComfyUI's memory manager."""

    lm: LocalLM
    patcher: Any
    stamp: tuple


_CACHE: dict[str, LoadedLLM] = {}  # resolved path -> the model loaded from it


def _stamp(path: str) -> tuple:
    files = [path] if os.path.isfile(path) else [os.path.join(path, n) for n in sorted(os.listdir(path))]
    return tuple((f, os.path.getmtime(f), os.path.getsize(f)) for f in files if os.path.isfile(f))


def _dtype(device: torch.device) -> torch.dtype:
    """float32 on the CPU; on an accelerator the half type ComfyUI would use there (GGUF weights are <= 8 bits)."""
    mm = comfy.model_management
    if mm.is_device_cpu(device):
        return torch.float32
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float16 if mm.should_use_fp16(device) else torch.float32


def loaded(path: str) -> LoadedLLM:
    """The model of ``path`` from the cache, or loaded now (a stale entry, the file rewritten, is released first)."""
    stamp = _stamp(path)
    entry = _CACHE.get(path)
    if entry is not None and entry.stamp == stamp:
        return entry
    if entry is not None:
        release(path)
    load_device = comfy.model_management.get_torch_device()
    with torch.inference_mode(False):
        lm = load_causal_lm(path, dtype=_dtype(load_device))
    # ModelPatcher writes bookkeeping attributes (device, ...) onto the module it manages, and a transformers
    # model's `device` is a read-only property: so it manages a plain holder whose child is the model
    holder = torch.nn.Module()
    holder.llm = lm.model
    patcher = comfy.model_patcher.ModelPatcher(
        holder, load_device=load_device, offload_device=comfy.model_management.unet_offload_device(), size=lm.nbytes()
    )
    _CACHE[path] = entry = LoadedLLM(lm, patcher, stamp)
    return entry


def unload(patcher) -> bool:
    """Take ``patcher`` out of ComfyUI's loaded models (weights to its offload device); True if it was loaded."""
    mm = comfy.model_management
    found = False
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        if mm.current_loaded_models[i].model is patcher:
            mm.current_loaded_models.pop(i).model_unload()
            found = True
    return found


def release(path: str) -> None:
    """Unload the model of ``path`` and drop it from the cache, so its memory is freed."""
    entry = _CACHE.pop(path, None)
    if entry is None:
        return
    unload(entry.patcher)
    del entry
    gc.collect()  # transformers models hold reference cycles: free the weights now, not at some later collection
    comfy.model_management.soft_empty_cache()


class TiPAIRegionPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TiPAIRegionPrompt",
            display_name=NODE,
            category="TiPAI",
            description="Inpaint Biases: a local language model rewrites your prompt into a short, precise prompt "
            "for the one region you marked, to inpaint it with. Greedy by default; unloads after the run unless "
            "keep_loaded is on. Nothing is downloaded.",
            inputs=[
                io.Combo.Input(
                    "llm",
                    options=model_files.list_llm(),
                    tooltip="The language model: a .gguf file or a transformers folder (config.json + safetensors) "
                    "in models/LLM. An instruct model with a chat template works best.",
                ),
                io.String.Input(
                    "prompt", multiline=True, default="", tooltip="The whole prompt of the image whose region is wrong."
                ),
                io.String.Input(
                    "region",
                    default="",
                    optional=True,
                    tooltip="What the marked region should show (optional), e.g. 'the blue square'.",
                ),
                io.String.Input(
                    "hints",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Hints from the auditor (optional), one per line: e.g. the prompt phrase whose Grad-CAM "
                    "peaks in the region, or the phrase it finds weakest there.",
                ),
                io.Int.Input(
                    "seed",
                    default=D.REGION_PROMPT_SEED,
                    min=0,
                    max=MAX_SEED,
                    control_after_generate=False,
                    tooltip="Seed of the sampling draws (used when temperature > 0): the same seed, the same text.",
                ),
                io.Int.Input(
                    "max_new_tokens",
                    default=D.REGION_PROMPT_MAX_NEW_TOKENS,
                    min=1,
                    max=MAX_NEW_TOKENS,
                    tooltip="At most this many tokens are written (a region prompt is a phrase).",
                ),
                io.Float.Input(
                    "temperature",
                    default=D.REGION_PROMPT_TEMPERATURE,
                    min=0.0,
                    max=MAX_TEMPERATURE,
                    step=0.05,
                    tooltip="0: greedy (the most likely text). Above 0: sampled at this temperature, seeded.",
                ),
                io.Boolean.Input(
                    "keep_loaded",
                    default=D.REGION_PROMPT_KEEP_LOADED,
                    tooltip="Off: the model is unloaded after the run, so it never holds memory the diffusion model "
                    "needs. On: it stays cached for the next run (ComfyUI may still move it out of VRAM).",
                ),
            ],
            outputs=[
                io.String.Output(
                    display_name="region_prompt",
                    tooltip="The refined prompt for the region: give it to the Region Miner's region_prompt (the "
                    "TiPAI sampler encodes it with its CLIP, inside the region only) or to a text encoder.",
                )
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, llm=None, **kwargs):
        # a model rewritten under the same name must be loaded again
        return model_files.llm_fingerprint(llm)

    @classmethod
    def check(cls, llm=None, prompt=None, seed=None, max_new_tokens=None, temperature=None, keep_loaded=None,
              region=None, hints=None, required=False) -> None:  # fmt: skip
        widgets = dict(seed=seed, max_new_tokens=max_new_tokens, temperature=temperature, keep_loaded=keep_loaded)
        check_widgets(cls, widgets, required=required)
        if temperature is not None:
            try:
                check_temperature(temperature)  # 0 < t < MIN_TEMPERATURE overflows the softmax
            except ValueError as exc:
                raise ValueError(f"{NODE}: {exc}") from None
        for name, value in (("prompt", prompt), ("region", region), ("hints", hints)):
            if value is None and required:  # at execute an input left out has execute's default, never None
                raise ValueError(f"{NODE}: {name} is missing")
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{NODE}: {name} must be text, got {type(value).__name__}")
        if prompt is not None and not prompt.strip():
            raise ValueError(f"{NODE}: prompt is empty; give the prompt of the image whose region is repainted")
        if hints is not None:
            try:
                parse_hints(hints)  # at most MAX_HINTS phrases
            except ValueError as exc:
                raise ValueError(f"{NODE}: {exc}") from None
        if llm is not None or required:
            try:
                model_files.resolve_llm(llm)
            except FileNotFoundError as exc:
                raise ValueError(f"{NODE}: llm: {exc}") from None

    @classmethod
    def validate_inputs(cls, llm=None, prompt=None, seed=None, max_new_tokens=None, temperature=None,
                        keep_loaded=None, region=None, hints=None):  # fmt: skip
        given = {k: v for k, v in locals().items() if k != "cls"}
        return as_validation(lambda: cls.check(**given))

    @classmethod
    def execute(cls, llm, prompt, region="", hints="", seed=D.REGION_PROMPT_SEED,
                max_new_tokens=D.REGION_PROMPT_MAX_NEW_TOKENS, temperature=D.REGION_PROMPT_TEMPERATURE,
                keep_loaded=D.REGION_PROMPT_KEEP_LOADED) -> io.NodeOutput:  # fmt: skip
        cls.check(llm, prompt, seed, max_new_tokens, temperature, keep_loaded, region, hints, required=True)
        path = model_files.resolve_llm(llm)
        try:
            entry = loaded(path)
        except (ValueError, FileNotFoundError) as exc:
            raise type(exc)(f"{NODE}: llm: {exc}") from None
        bar = comfy.utils.ProgressBar(max_new_tokens)
        try:
            comfy.model_management.load_models_gpu([entry.patcher], force_full_load=True)
            text = refine_region_prompt(
                entry.lm.model, entry.lm.tokenizer, prompt, region, hints, seed=seed, max_new_tokens=max_new_tokens,
                temperature=temperature, on_token=lambda n: bar.update_absolute(min(n, max_new_tokens)),
            )  # fmt: skip
        except ValueError as exc:
            raise ValueError(f"{NODE}: {exc}") from None
        finally:
            if not keep_loaded:
                release(path)
        return io.NodeOutput(text, ui={TEXT_KEY: [f"**Region prompt**: {text}"]})
