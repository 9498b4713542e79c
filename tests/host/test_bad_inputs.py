"""Bad input fails at once, before anything samples, naming the node, the input and the allowed range
(each case is one a fuzz campaign against a real server found); the edges of the KSampler (steps 1,
denoise 0 and near 0) behave like ComfyUI's own KSampler, bit for bit, with an empty report."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "tipai_txt2img.json"
GUARD, POLICY, MINER, LOADER, SAMPLER, LOG = "9", "10", "7", "6", "11", "15"


def workflow(**changes) -> dict:
    """The shipped txt2img graph with ``node_input=value`` changes, e.g. ``workflow(**{"10.n": 0})``."""
    g = json.loads(WORKFLOW.read_text())
    for key, value in changes.items():
        node, name = key.split(".")
        g[node]["inputs"][name] = value
    return g


def refused(comfy_inproc, graph) -> tuple[str, float]:
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        comfy_inproc.run(graph)
    return str(info.value), time.perf_counter() - t0


CASES = [
    # (node.input, value, what the message must say)
    ("10.dilation", "1000", "TiPAI TSPO Sampler: dilation must be a whole number in [0, 64], got 1000.0"),
    ("10.feather", "-1", "TiPAI TSPO Sampler: feather must be a whole number in [0, 64]"),
    ("10.depths", "0", "TiPAI TSPO Sampler: depths must be a whole number in [1, 50]"),
    ("10.depths", "100", "TiPAI TSPO Sampler: depths must be a whole number in [1, 50]"),
    ("10.depths", "-1", "TiPAI TSPO Sampler: depths must be a whole number in [1, 50]"),
    ("10.jitter", "2", "TiPAI TSPO Sampler: jitter must be a finite number in [0.0, 1.0]"),
    ("10.jitter", "nan", "TiPAI TSPO Sampler: jitter must be a finite number"),
    ("10.cfg_inside", "inf", "TiPAI TSPO Sampler: cfg_inside must be a finite number in [0.0, 100.0]"),
    ("10.cfg_inside", "1e9", "TiPAI TSPO Sampler: cfg_inside must be a finite number in [0.0, 100.0]"),
    ("10.cfg_inside", "1,,2", "TiPAI TSPO Sampler: cfg_inside has an empty entry"),
    ("10.emphasis", "nan", "TiPAI TSPO Sampler: emphasis must be a finite number"),
    ("10.emphasis", "1.0, 11", "TiPAI TSPO Sampler: emphasis must be a finite number in [0.0, 10.0]"),
    ("9.audit_scales", "nan", "TiPAI Tournament Guard: audit_scales must be a finite number"),
    ("9.audit_scales", "1e9", "TiPAI Tournament Guard: audit_scales must be a finite number in [0.125, 4.0]"),
    ("9.audit_scales", "0.3", "TiPAI Tournament Guard: audit_scales times the VAE factor 8 must be whole numbers"),
    ("9.tau_P_start", math.nan, "TiPAI Tournament Guard: tau_P_start must be a finite number in [0.0, 1.0]"),
    ("9.tau_F_end", math.nan, "TiPAI Tournament Guard: tau_F_end must be a finite number in [0.0, 1.0]"),
    ("9.alpha", math.nan, "TiPAI Tournament Guard: alpha must be a finite number in [0.0, 1.0]"),
    ("7.threshold", math.nan, "TiPAI Region Miner: threshold must be a finite number in [0.0, 1.0]"),
    ("11.cfg", math.nan, "TiPAI KSampler: cfg must be a finite number in [0.0, 100.0]"),
    ("11.denoise", math.nan, "TiPAI KSampler: denoise must be a finite number in [0.0, 1.0]"),
    # int(steps / denoise) overflows inside ComfyUI's own KSampler: refused by name at validation
    ("11.denoise", 1e-300, "TiPAI KSampler: denoise must be 0 or at least steps / 1e+06"),
]


@pytest.mark.parametrize(("key", "value", "message"), CASES, ids=[f"{k}={v}" for k, v, _ in CASES])
def test_bad_input_is_refused_before_anything_runs(comfy_inproc, tiny_checkpoint, tiny_auditor, key, value, message):
    msg, seconds = refused(comfy_inproc, workflow(**{key: value}))
    assert message in msg
    assert msg.startswith("invalid prompt")  # graph validation: no node executed, nothing sampled
    assert seconds < 5.0


def test_a_bad_log_prefix_is_refused_at_validation(comfy_inproc, tiny_checkpoint, tiny_auditor):
    import asyncio

    graph = workflow(**{f"{LOG}.filename_prefix": "../../etc/x"})
    valid = asyncio.run(comfy_inproc.execution.validate_prompt("bad-prefix", graph, None))
    # ComfyUI still runs the outputs that validate (the images); the log node is refused before any run
    errors = valid[3]
    assert LOG in errors and "may only hold letters, digits" in json.dumps(errors[LOG])
    assert LOG not in valid[2]


def test_kappa_nan_names_the_loader(comfy_inproc):
    loader = comfy_inproc.node_class("TiPAIAuditorLoader")
    with pytest.raises(ValueError, match="TiPAI Auditor Loader: kappa must be a finite number"):
        loader.execute("tipai_tiny_auditor.safetensors", "tipai-tiny-vit", "none", "none", math.nan)


def test_the_loader_takes_only_its_listed_extensions(comfy_inproc, comfy_dir):
    folder = Path(comfy_dir) / "models" / "tipai"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(b"not a safetensors file")
    loader = comfy_inproc.node_class("TiPAIAuditorLoader")
    msg = loader.validate_inputs(backbone="weights.bin")
    assert isinstance(msg, str) and "not one the pack loads" in msg and ".safetensors" in msg
    with pytest.raises(ValueError, match="TiPAI Auditor Loader: backbone must be one of"):
        loader.execute("weights.bin", "tipai-tiny-vit", "none", "none", 1.0)


REGION_PROMPT_CASES = [
    ("max_new_tokens", 0, "TiPAI Region Prompt: max_new_tokens must be a whole number in [1, 256], got 0"),
    ("max_new_tokens", 10**6, "TiPAI Region Prompt: max_new_tokens must be a whole number in [1, 256]"),
    ("temperature", math.nan, "TiPAI Region Prompt: temperature must be a finite number in [0.0, 2.0]"),
    ("temperature", 5.0, "TiPAI Region Prompt: temperature must be a finite number in [0.0, 2.0]"),
    # positive but so small that logits / t overflow to inf and the softmax to NaN
    ("temperature", 1e-300, "TiPAI Region Prompt: temperature must be 0 (greedy) or in [0.001, 2.0]"),
    ("seed", -1, "TiPAI Region Prompt: seed must be a whole number in [0, 18446744073709551615]"),
    ("prompt", " \n ", "TiPAI Region Prompt: prompt is empty"),
    ("hints", "\n".join(["a phrase"] * 17), "TiPAI Region Prompt: hints holds 17 phrases; at most 16"),
    ("llm", "../../etc/x.gguf", "TiPAI Region Prompt: llm: TiPAI: the language model '../../etc/x.gguf' was not found"),
    ("llm", "weights.bin", "TiPAI Region Prompt: llm: TiPAI: the language model 'weights.bin' is not one the pack"),
]


@pytest.mark.parametrize(
    ("name", "value", "message"), REGION_PROMPT_CASES, ids=[f"{n}={v!r}" for n, v, _ in REGION_PROMPT_CASES]
)
def test_bad_region_prompt_input_is_refused_before_the_model_loads(comfy_inproc, smollm2_llm, name, value, message):
    widgets = dict(llm=smollm2_llm, prompt="a red circle", region="", hints="", seed=0, max_new_tokens=8,
                   temperature=0.0, keep_loaded=False)  # fmt: skip
    graph = {
        "1": {"class_type": "TiPAIRegionPrompt", "inputs": {**widgets, name: value}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    msg, seconds = refused(comfy_inproc, graph)
    assert message in msg
    assert msg.startswith("invalid prompt")  # graph validation: the node never ran, nothing was loaded
    assert seconds < 5.0


@pytest.fixture(scope="module")
def sd(tiny_sd):
    return tiny_sd("a red circle")


@pytest.fixture(scope="module")
def auditor(tiny_auditor_handle):
    return tiny_auditor_handle


@pytest.mark.parametrize(("steps", "denoise"), [(1, 1.0), (4, 0.0), (4, 0.01), (1, 0.5)])
def test_ksampler_edges_match_comfyuis_ksampler(comfy_inproc, sd, auditor, steps, denoise):
    node = comfy_inproc.node_class
    # every step audited, δ at its maximum: nothing is ever accepted, so the latent must be plain's
    guard = node("TiPAITournamentGuard").execute(1000.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1, 1, 0, "1.0").args[0]
    out = node("TiPAIKSampler").execute(
        sd["model"],
        3,
        steps,
        5.0,
        "euler",
        "normal",
        sd["pos"],
        sd["neg"],
        sd["latent"],
        denoise,
        "a red circle",
        sd["vae"],
        auditor,
        None,
        None,
        guard,
        None,
    )
    latent, report = out.args[0]["samples"], out.args[1]
    plain = comfy_inproc.nodes.common_ksampler(
        sd["model"], 3, steps, 5.0, "euler", "normal", sd["pos"], sd["neg"], sd["latent"], denoise=denoise
    )[0]["samples"]
    assert torch.equal(latent, plain)
    assert report["summary"]["accepted"] == 0
    if steps == 1 or denoise == 0.0:  # nothing to audit: the report is empty
        assert report["summary"]["audited_steps"] == 0 and report["records"] == []
    if denoise == 0.0:
        assert torch.equal(latent, sd["latent"]["samples"])  # ComfyUI returns its input


def test_patch_model_with_a_log_survives_one_step(comfy_inproc, sd, auditor):
    node = comfy_inproc.node_class
    patched = (
        node("TiPAIPatchModel")
        .execute(sd["model"], "a red circle", sd["vae"], auditor, None, None, None, None, True)
        .args[0]
    )
    out = comfy_inproc.nodes.common_ksampler(patched, 3, 1, 5.0, "euler", "normal", sd["pos"], sd["neg"], sd["latent"])[
        0
    ]["samples"]
    plain = comfy_inproc.nodes.common_ksampler(
        sd["model"], 3, 1, 5.0, "euler", "normal", sd["pos"], sd["neg"], sd["latent"]
    )[0]["samples"]
    assert torch.equal(out, plain)


def _inpaint(comfy_inproc, sd, image, mask):
    node = comfy_inproc.node_class("TiPAIAuditorInpaint")
    return node.execute("diffusion", 0, 2, "vae", sd["model"], sd["pos"], sd["neg"], sd["vae"], image, mask)


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        (
            torch.rand(1, 65, 63, 3),
            torch.ones(1, 65, 63),
            "image is 63x65 pixels (width x height); both must be multiples of the VAE factor 8",
        ),
        (torch.rand(1, 1, 1, 3), torch.ones(1, 1, 1), "image is 1x1 pixels"),
        (torch.rand(1, 64, 64, 3), torch.full((1, 64, 64), math.nan), "mask contains NaN or inf values"),
        (torch.rand(1, 64, 64, 3), torch.zeros(1, 64, 64), "mask is empty"),
        (torch.rand(1, 64, 64, 3), torch.ones(1, 32, 64), "mask is 64x32 (width x height) but the image is 64x64"),
        (torch.full((1, 64, 64, 3), math.inf), torch.ones(1, 64, 64), "image contains NaN or inf pixels"),
        (torch.rand(1, 64, 64, 2), torch.ones(1, 64, 64), "image must be [B, H, W, C] with C in 1, 3, 4"),
    ],
    ids=["63x65", "1x1", "nan-mask", "empty-mask", "mask-size", "inf-image", "2-channel"],
)
def test_auditor_inpaint_says_what_is_wrong(comfy_inproc, sd, image, mask, message):
    with pytest.raises(ValueError) as info:
        _inpaint(comfy_inproc, sd, image, mask)
    assert str(info.value).startswith("TiPAI Auditor Inpaint: ") and message in str(info.value)


@pytest.mark.parametrize("shape", [(64, 64, 3), (1, 64, 64, 1)], ids=["3d", "1-channel"])
def test_auditor_inpaint_takes_every_image_layout_comfyui_makes(comfy_inproc, sd, shape):
    """A 3D [H, W, C] image and a 1-channel one (both exist in ComfyUI graphs) are inpainted like the RGB batch."""
    image = torch.rand(shape)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1
    _, candidates, best, _ = _inpaint(comfy_inproc, sd, image, mask).args
    assert tuple(best.shape) == (1, 64, 64, 3) and candidates.shape[1:] == (64, 64, 3)
    assert bool(candidates.isfinite().all())


@pytest.mark.parametrize("node_id", ["TiPAIAuditorScore", "TiPAIRegionMiner"])
def test_an_inf_image_is_refused_by_the_node_that_takes_it(comfy_inproc, auditor, node_id):
    """ComfyUI images are clamped to [0, 1] on the way in; inf must be refused before that clamp hides it."""
    cls = comfy_inproc.node_class(node_id)
    image = torch.full((1, 64, 64, 3), math.inf)
    with pytest.raises(ValueError, match=r"TiPAI (Auditor Score|Region Miner): image contains NaN or inf pixels"):
        if node_id == "TiPAIAuditorScore":
            cls.execute(auditor=auditor, image=image, prompt="a red circle")
        else:
            cls.execute(1, 0.5, 0.0, 0.3, 2, 1.0, 1.0, image=image, auditor=auditor, prompt="a red circle")


@pytest.mark.parametrize(
    ("node_id", "args", "name"),
    [
        ("TiPAITSPOSampler", (2, 0, "1", "3.0", "0.0", "0", "1", "both"), "policy_file"),
        ("TiPAITournamentGuard", (0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1, 1, 0, "1.0"), "calibration_file"),
        ("TiPAIRegionMiner", (1, 0.5, 0.0, 0.3, 2, 1.0, 1.0), "detectors"),
        ("TiPAIAuditorInpaint", ("diffusion", 0, 2, "vae"), "scheduler"),
    ],
)
def test_an_optional_combo_given_null_is_refused(comfy_inproc, node_id, args, name):
    """ComfyUI 0.3.75 never checks a V3 combo against its options, so a prompt's null reaches execute."""
    with pytest.raises(ValueError, match=rf": {name} is missing"):
        comfy_inproc.node_class(node_id).execute(*args, **{name: None})


def test_cancel_mid_audit_stops_within_two_seconds(comfy_inproc, sd, auditor):
    """The interrupt flag is raised inside the first tournament (at its first auditor call); the run must
    stop with ComfyUI's InterruptProcessingException, and soon: the remaining audit work is many times that."""
    import comfy.model_management as mm

    node = comfy_inproc.node_class
    guard = node("TiPAITournamentGuard").execute(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1, 1, 0, "1.0").args[0]
    policy = node("TiPAITSPOSampler").execute(8, 0, "1, 2, 3", "3.0, 6.0", "0.0, 0.3", "0, 1", "1", "both").args[0]
    miner = node("TiPAIRegionMiner").execute(4, 0.0, 0.0, 1.0, 0, 1.0, 1.0).args[0]
    inner = auditor.auditor.score
    marks: dict[str, float] = {}

    def score(*args, **kwargs):
        if "set" not in marks:
            marks["set"] = time.perf_counter()
            mm.interrupt_current_processing(True)
        return inner(*args, **kwargs)

    auditor.auditor.score = score
    try:
        with pytest.raises(mm.InterruptProcessingException):
            node("TiPAIKSampler").execute(
                sd["model"],
                3,
                8,
                5.0,
                "euler",
                "normal",
                sd["pos"],
                sd["neg"],
                sd["latent"],
                1.0,
                "a red circle",
                sd["vae"],
                auditor,
                miner,
                None,
                guard,
                policy,
            )
        latency = time.perf_counter() - marks["set"]
    finally:
        auditor.auditor.score = inner
        mm.interrupt_current_processing(False)
    print(f"\ninterrupt latency: {latency * 1000:.0f} ms")
    assert latency < 2.0


def test_a_rewritten_calibration_file_is_read_again(comfy_inproc, comfy_dir):
    """ComfyUI reruns a node only when its fingerprint changes: a calibration file rewritten under the same
    name (a new Stage C fit) must change the Tournament Guard's fingerprint."""
    import os

    folder = Path(comfy_dir) / "models" / "tipai"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "refit.json"
    path.write_text('{"v": 1}')
    guard = comfy_inproc.node_class("TiPAITournamentGuard")
    first = guard.fingerprint_inputs(calibration_file="refit.json")
    path.write_text('{"v": 2, "refit": true}')
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert guard.fingerprint_inputs(calibration_file="refit.json") != first
    assert guard.fingerprint_inputs(calibration_file="none") == ""
