"""TiPAI Region Prompt in the real ComfyUI, on real weights (SmolLM2-135M-Instruct, Q4_1 GGUF, linked into the
instance's models/LLM): a graph runs it; the same inputs give the same text, which is the library's; with
keep_loaded on the model stays in ComfyUI's loaded models and the next run reuses it, with keep_loaded off (and
after a Cancel) it leaves them and is freed; the llm list offers GGUF files and model folders only; a missing
file and an empty prompt give the node's own error, at validation and at execute."""

from __future__ import annotations

import gc
import sys
import weakref

import psutil
import pytest
import torch

PROMPT = "a red circle left of a blue square"
NODE_ID = "TiPAIRegionPrompt"


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


@pytest.fixture(scope="module")
def node(comfy_inproc):
    return comfy_inproc.node_class(NODE_ID)


@pytest.fixture(scope="module")
def glue(node):
    """The node's module (its model cache and release), as ComfyUI imported it."""
    return sys.modules[node.__module__]


def _run(node, llm, keep_loaded, prompt=PROMPT, **kw):
    args = dict(region="the blue square", hints="", seed=0, max_new_tokens=24, temperature=0.0)
    args.update(kw)
    return node.execute(llm, prompt, keep_loaded=keep_loaded, **args)


def _graph(llm: str, keep_loaded: bool, **inputs) -> dict:
    widgets = dict(llm=llm, prompt=PROMPT, region="the blue square", hints="", seed=0, max_new_tokens=24,
                   temperature=0.0, keep_loaded=keep_loaded)  # fmt: skip
    widgets.update(inputs)
    return {
        "1": {"class_type": NODE_ID, "inputs": widgets},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }


def _is_loaded(patcher) -> bool:
    import comfy.model_management as mm

    return any(lm.model is patcher for lm in mm.current_loaded_models)


def test_the_llm_list_offers_gguf_files_and_model_folders_only(comfy_inproc, node, smollm2_llm, tmp_path):
    import folder_paths

    (tmp_path / "tiny-lm").mkdir()
    (tmp_path / "tiny-lm" / "config.json").write_text("{}")
    (tmp_path / "tiny-lm" / "model.safetensors").write_bytes(b"")
    (tmp_path / "bin-only").mkdir()  # torch pickles only: never offered
    (tmp_path / "bin-only" / "config.json").write_text("{}")
    (tmp_path / "bin-only" / "pytorch_model.bin").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "other.safetensors").write_bytes(b"")
    paths = folder_paths.folder_names_and_paths["LLM"][0]
    paths.append(str(tmp_path))
    try:
        spec = node.INPUT_TYPES()["required"]["llm"]
        options = list(spec[1]["options"]) if len(spec) > 1 and "options" in spec[1] else list(spec[0])
    finally:
        paths.remove(str(tmp_path))
    assert smollm2_llm in options and "tiny-lm/" in options
    assert not {"bin-only/", "notes.txt", "other.safetensors"} & set(options)
    assert all(o.endswith((".gguf", "/")) for o in options)


def test_the_node_rewrites_deterministically_reuses_a_kept_model_and_unloads_one_not_kept(
    comfy_inproc, node, glue, smollm2_llm
):
    import comfy.model_management as mm
    import comfy.utils

    from tipai_core.prompting.region_prompt import refine_region_prompt

    proc = psutil.Process()
    gc.collect()
    rss_before = proc.memory_info().rss
    assert _llm_patchers() == []  # no language model loaded before the first run
    # 1. a graph through ComfyUI's own executor: validated, run, shown
    outputs = comfy_inproc.run(_graph(smollm2_llm, keep_loaded=True))
    shown = outputs["2"]["text"][0]
    assert outputs["1"]["tipai_text"] == [f"**Region prompt**: {shown}"]
    ((path, entry),) = glue._CACHE.items()
    assert path.endswith(smollm2_llm) and _is_loaded(entry.patcher)  # kept: in ComfyUI's loaded models
    assert entry.patcher.model_size() == entry.lm.nbytes() and entry.lm.kind == "gguf"
    rss_loaded = proc.memory_info().rss
    # 2. the node's text is the library's, and the same again; the kept model is reused, not loaded again
    lm = entry.lm
    assert refine_region_prompt(lm.model, lm.tokenizer, PROMPT, "the blue square", max_new_tokens=24) == shown
    again = _run(node, smollm2_llm, keep_loaded=True)
    assert again.args[0] == shown and glue._CACHE[path] is entry
    other = _run(node, smollm2_llm, keep_loaded=True, region="the red circle")
    assert other.args[0] != shown
    # 3. Cancel in the middle of the decoding: raised, and a kept model stays kept
    seen = []
    previous = comfy.utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview=None, **kw):
        seen.append(value)
        if value >= 2:
            mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _run(node, smollm2_llm, keep_loaded=True, max_new_tokens=40, region="")
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        mm.interrupt_current_processing(False)
    assert max(seen) <= 3 and glue._CACHE[path] is entry and _is_loaded(entry.patcher)
    # 4. keep_loaded off: the same text, then out of ComfyUI's loaded models and out of memory
    model_ref, patcher_ref = weakref.ref(entry.lm.model), weakref.ref(entry.patcher)
    del entry, lm
    last = _run(node, smollm2_llm, keep_loaded=False)
    assert last.args[0] == shown
    # this node's model only: other tests' models may come and go in ComfyUI's list meanwhile
    assert path not in glue._CACHE and _llm_patchers() == []
    gc.collect()
    assert model_ref() is None and patcher_ref() is None  # nothing holds the weights any more
    rss_after = proc.memory_info().rss
    print(
        f"\nRegion Prompt memory (process RSS): before {_mib(rss_before)}, loaded {_mib(rss_loaded)} "
        f"(+{_mib(rss_loaded - rss_before)}), after unload {_mib(rss_after)} ({_mib(rss_after - rss_loaded)})"
    )


def _llm_patchers() -> list:
    import comfy.model_management as mm
    import torch

    found = [lm.model for lm in mm.current_loaded_models if lm.model is not None]
    return [p for p in found if isinstance(getattr(p.model, "llm", None), torch.nn.Module)]


def test_a_cancelled_run_not_kept_leaves_nothing_behind(comfy_inproc, node, glue, smollm2_llm, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    assert not glue._CACHE
    made = []
    real = glue.loaded

    def spy(path):  # weak references only: the test must not keep the model alive itself
        entry = real(path)
        made.append((weakref.ref(entry.lm.model), weakref.ref(entry.patcher), _is_loaded(entry.patcher)))
        return entry

    def hook(value, total, preview=None, **kw):
        if value >= 1:  # after the first token: the model was loaded and ran
            made.append(_llm_patchers())
            mm.interrupt_current_processing(True)

    monkeypatch.setattr(glue, "loaded", spy)
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _run(node, smollm2_llm, keep_loaded=False)
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        mm.interrupt_current_processing(False)
    (model_ref, patcher_ref, _), during = made
    assert len(during) == 1 and during[0] is patcher_ref()  # while it ran, it was in ComfyUI's loaded models
    during = None
    made.clear()
    gc.collect()
    assert not glue._CACHE and not _llm_patchers()
    assert model_ref() is None and patcher_ref() is None


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"llm": "nope.gguf"}, "TiPAI Region Prompt: llm: TiPAI: the language model 'nope.gguf' was not found in "
         "the models/LLM folder"),
        ({"llm": "weights.bin"}, "TiPAI Region Prompt: llm: TiPAI: the language model 'weights.bin' is not one"),
        ({"prompt": ""}, "TiPAI Region Prompt: prompt is empty"),
        ({"prompt": "  \n"}, "TiPAI Region Prompt: prompt is empty"),
    ],
)  # fmt: skip
def test_a_missing_file_and_an_empty_prompt_give_the_nodes_error(
    comfy_inproc, node, glue, smollm2_llm, inputs, message
):
    with pytest.raises(RuntimeError) as info:  # at validation, before anything runs or loads
        comfy_inproc.run(_graph(**{"llm": smollm2_llm, "keep_loaded": False, **inputs}))
    assert str(info.value).startswith("invalid prompt") and message in str(info.value)
    llm, prompt = inputs.get("llm", smollm2_llm), inputs.get("prompt", PROMPT)
    with pytest.raises(ValueError, match="^TiPAI Region Prompt: ") as err:  # and when called directly
        node.execute(llm, prompt, "the blue square", "", 0, 24, 0.0, False)
    assert message in str(err.value)
    assert not glue._CACHE  # nothing was loaded


def test_the_miners_region_llm_rewrites_each_regions_words_in_the_run_and_leaves(
    comfy_inproc, glue, smollm2_llm, tiny_sd, tiny_auditor
):
    """In a TiPAI KSampler run, region_llm rewrites each mined region's text (here the miner's region_prompt; the
    Grad-CAM words with region_words) as its hint, with the real SmolLM2: every record's region prompt is the
    library's rewrite of what the same run gives the region without it (the guard accepts nothing, so both runs
    mine the same regions, and the image is the same); after the run the model is gone."""
    from tipai_core.prompting.region_prompt import generate_region_prompt
    from tipai_core.prompting.region_refiner import RegionRefiner

    node = comfy_inproc.node_class
    prompt = "a red circle left of a blue square"
    sd = tiny_sd(prompt)
    auditor = node("TiPAIAuditorLoader").execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0).args[0]
    guard = node("TiPAITournamentGuard").execute(1000.0, 0.0, 0.0, 0.0, 0.0, 1.0, 3, 3, 1, "1.0").args[0]
    policy = node("TiPAITSPOSampler").execute(2, 0, "1", "5.0", "0.0", "0", "1", "invert").args[0]

    def run(region_llm):
        miner = node("TiPAIRegionMiner").execute(2, 0.6, 0.02, 0.5, 2, 1.0, 1.0, region_prompt="the blue square",
                                                 region_llm=region_llm).args[0]  # fmt: skip
        out = node("TiPAIKSampler").execute(sd["model"], 3, 6, 5.0, "euler", "normal", sd["pos"], sd["neg"],
                                            sd["latent"], 1.0, prompt, sd["vae"], auditor, miner, None, guard,
                                            policy)  # fmt: skip
        return out.args[0]["samples"], [r["region"]["prompt"] for r in out.args[1]["records"]]

    plain, words = run("none")
    latent, texts = run(smollm2_llm)
    assert words and set(words) == {"the blue square"} and len(texts) == len(words) and torch.equal(latent, plain)
    assert not glue._CACHE and _llm_patchers() == []  # released with the run
    from tipai_core.prompting.llm import load_causal_lm

    lm = load_causal_lm(glue.model_files.resolve_llm(smollm2_llm))
    limit = RegionRefiner(lm.model, lm.tokenizer).max_new_tokens
    want = [
        generate_region_prompt(lm.model, lm.tokenizer, prompt, hints=(w,) if w else (), max_new_tokens=limit).text
        for w in words
    ]
    assert texts == want
    # a region_llm that is not there is the miner's own error, naming the input: at validation (where ComfyUI
    # does not check a combo's options) with the folder, at execute with the choices
    miner = node("TiPAIRegionMiner")
    assert miner.validate_inputs(region_llm="gone.gguf").startswith(
        "TiPAI Region Miner: region_llm: TiPAI: the language model 'gone.gguf' was not found in the models/LLM folder"
    )
    with pytest.raises(ValueError, match=r"TiPAI Region Miner: region_llm must be one of \['none', "):
        miner.execute(2, 0.6, 0.02, 0.5, 2, 1.0, 1.0, region_llm="gone.gguf")
