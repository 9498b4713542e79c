"""The TiPAI nodes inside a real ComfyUI, called as ComfyUI calls them: bit-identity with ComfyUI's
own KSampler when the guard accepts nothing, a complete report when it audits, the loop under
SamplerCustomAdvanced, interruption mid-tournament, and clear errors for bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from tipai_core.records.report import summary_text

STEPS = 6


@pytest.fixture(scope="module")
def sd(tiny_sd):
    return tiny_sd("a red circle left of a blue square", batch=2)


@pytest.fixture(scope="module")
def node(comfy_inproc):
    def get(node_id):
        return comfy_inproc.node_class(node_id)

    return get


@pytest.fixture(scope="module")
def auditor(node, tiny_auditor):
    return node("TiPAIAuditorLoader").execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0).args[0]


def guard(node, delta, every=2, first=2):
    return node("TiPAITournamentGuard").execute(delta, 0.0, 0.0, 0.0, 0.0, 1.0, every, first, 1, "1.0").args[0]


def policy(node, n=3):
    return node("TiPAITSPOSampler").execute(n, 0, "1, 2", "3.0, 6.0", "0.0", "0", "1", "invert").args[0]


def miner(node, k=2, user_mask=None):
    return node("TiPAIRegionMiner").execute(k, 0.6, 0.02, 0.5, 2, 1.0, 1.0, user_mask).args[0]


def tipai_ksampler(node, sd, auditor, sampler, delta, seed=5, prompt="a red circle left of a blue square", **kw):
    out = node("TiPAIKSampler").execute(
        sd["model"],
        seed,
        STEPS,
        5.0,
        sampler,
        "normal",
        sd["pos"],
        sd["neg"],
        sd["latent"],
        1.0,
        prompt,
        sd["vae"],
        auditor,
        kw.get("miner") or miner(node),
        None,
        guard(node, delta),
        kw.get("policy") or policy(node),
    )
    latent, report, overlay, summary = out.args
    # what the node shows is the report's own text, as output and as UI data
    assert summary == summary_text(report) and out.ui["tipai_text"] == [summary]
    return latent, report, overlay


def plain_ksampler(comfy_inproc, sd, sampler, seed=5, model=None):
    return comfy_inproc.nodes.common_ksampler(
        model or sd["model"], seed, STEPS, 5.0, sampler, "normal", sd["pos"], sd["neg"], sd["latent"]
    )[0]["samples"]


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "ddim"])
def test_tipai_ksampler_is_bit_identical_when_nothing_is_accepted(comfy_inproc, sd, node, auditor, sampler):
    latent, report, overlay = tipai_ksampler(node, sd, auditor, sampler, delta=1000.0)
    assert torch.equal(latent["samples"], plain_ksampler(comfy_inproc, sd, sampler))
    s = report["summary"]
    assert s["audited_steps"] == 2 and s["regions"] > 0 and s["accepted"] == 0  # audits did run
    assert overlay.shape == (2, 64, 64, 3)
    assert "- nothing accepted: the image is bit-for-bit the plain sampler's" in summary_text(report).splitlines()


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_patch_model_under_ksampler_is_bit_identical(comfy_inproc, sd, node, auditor, sampler):
    before = copy.deepcopy(sd["model"].model_options)
    patched = (
        node("TiPAIPatchModel")
        .execute(sd["model"], "a red circle", sd["vae"], auditor, miner(node), None, guard(node, 1000.0), policy(node))
        .args[0]
    )
    assert torch.equal(
        plain_ksampler(comfy_inproc, sd, sampler, model=patched), plain_ksampler(comfy_inproc, sd, sampler)
    )
    assert sd["model"].model_options == before  # the input model is untouched


def test_global_audits_hold_one_whole_image_tournament(comfy_inproc, sd, node, auditor):
    """global_until=3 of the Guard: the audit at step 2 is one tournament over the whole image per image
    (no miner), the audit at step 4 repairs mined regions; with δ = 1000 the latent is KSampler's."""
    g = node("TiPAITournamentGuard").execute(1000.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2, 2, 1, "1.0", global_until=3).args[0]
    assert g.schedule.global_until == 3
    out = node("TiPAIKSampler").execute(
        sd["model"], 5, STEPS, 5.0, "euler", "normal", sd["pos"], sd["neg"], sd["latent"], 1.0,
        "a red circle left of a blue square", sd["vae"], auditor, miner(node), None, g, policy(node),
    )  # fmt: skip
    latent, report = out.args[:2]
    assert torch.equal(latent["samples"], plain_ksampler(comfy_inproc, sd, "euler"))
    early = [r for r in report["records"] if r["step"] == 2]
    late = [r for r in report["records"] if r["step"] == 4]
    assert len(early) == 2  # one per image of the batch
    h, w = sd["latent"]["samples"].shape[-2:]
    for r in early:  # the whole view: every pixel of the decoded x̂0
        f = r["region"]["view_factor"]
        assert r["region"]["latent_bbox"] == [0, 0, h, w] and r["region"]["area"] == h * w * f * f
    # later audits: the miner's regions, smaller than the view
    assert late and all(r["region"]["area"] < h * w * r["region"]["view_factor"] ** 2 for r in late)
    with pytest.raises(ValueError, match="global_until must be a whole number in"):
        node("TiPAITournamentGuard").execute(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2, 2, 1, "1.0", global_until=-1)


def test_report_is_complete(comfy_inproc, sd, node, auditor):
    n = 3
    latent, report, _ = tipai_ksampler(node, sd, auditor, "euler", delta=0.0, policy=policy(node, n))
    s = report["summary"]
    steps = [st["step"] for st in report["steps"]]
    assert steps == [2, 4]  # audit_first=2, every=2, skip_last=1 of 6 steps
    assert s["regions"] == len(report["records"]) > 0
    assert s["candidates"] == n * s["regions"]
    for rec in report["records"]:
        assert len(rec["utilities"]) == n + 1 and len(rec["scores"]["S"]) == n + 1
        assert len(rec["actions"]) == n and len(rec["log_probs"]) == n
        assert 0 <= rec["winner"] <= n and rec["accepted"] == (rec["winner"] > 0)
    # extra model calls: the editor's calls per tournament plus one restart per accepted step
    per_record = sum(r["costs"]["denoiser_calls"] for r in report["records"])
    assert s["extra_model_calls"] == per_record + len({r["step"] for r in report["records"] if r["accepted"]})
    assert s["base_model_calls"] == STEPS  # euler: one (batched cond+uncond) model call per step
    json.dumps(report)  # the report is plain JSON


def test_loop_runs_under_sampler_custom_advanced(comfy_inproc, sd, node, auditor, tiny_checkpoint, tiny_auditor):
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {
            "class_type": "TiPAIAuditorLoader",
            "inputs": {
                "backbone": tiny_auditor,
                "arch": "tipai-tiny-vit",
                "heads": "none",
                "lpips_backbone": "none",
                "kappa": 1.0,
            },
        },
        "5": {
            "class_type": "TiPAITournamentGuard",
            "inputs": {
                "delta": 0.0,
                "tau_P_start": 0.0,
                "tau_P_end": 0.0,
                "tau_F_start": 0.0,
                "tau_F_end": 0.0,
                "alpha": 1.0,
                "audit_every": 2,
                "audit_first": 2,
                "skip_last": 1,
                "audit_scales": "1.0",
            },
        },
        "6": {
            "class_type": "TiPAIPatchModel",
            "inputs": {
                "model": ["1", 0],
                "prompt": "a red circle",
                "vae": ["1", 2],
                "auditor": ["4", 0],
                "guard": ["5", 0],
                "save_log": True,
            },
        },
        "7": {
            "class_type": "CFGGuider",
            "inputs": {"model": ["6", 0], "positive": ["2", 0], "negative": ["3", 0], "cfg": 5.0},
        },
        "8": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "9": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["6", 0], "scheduler": "normal", "steps": STEPS, "denoise": 1.0},
        },
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
        "11": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "12": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["10", 0],
                "guider": ["7", 0],
                "sampler": ["8", 0],
                "sigmas": ["9", 0],
                "latent_image": ["11", 0],
            },
        },
        "13": {"class_type": "VAEDecode", "inputs": {"samples": ["12", 0], "vae": ["1", 2]}},
        "14": {"class_type": "SaveImage", "inputs": {"images": ["13", 0], "filename_prefix": "sca"}},
    }
    logs = Path(comfy_inproc.output_dir) / "tipai_logs"
    before = set(logs.glob("patch_model_*.records.jsonl")) if logs.exists() else set()
    comfy_inproc.run(graph)
    new = set(logs.glob("patch_model_*.records.jsonl")) - before
    assert len(new) == 1
    records = [json.loads(line) for line in new.pop().read_text().splitlines() if line.strip()]
    assert records and {r["step"] for r in records} == {2, 4}


def test_interrupt_mid_tournament_restores_and_next_run_matches(comfy_inproc, sd, node, auditor):
    import comfy.model_management as mm

    before = copy.deepcopy(sd["model"].model_options)
    patched = (
        node("TiPAIPatchModel")
        .execute(sd["model"], "a red circle", sd["vae"], auditor, miner(node), None, guard(node, 0.0), policy(node))
        .args[0]
    )
    patched_before = copy.deepcopy(patched.model_options)
    # The flag is first checked by the editor's denoiser, i.e. inside the first tournament.
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            plain_ksampler(comfy_inproc, sd, "euler", model=patched)
    finally:
        mm.interrupt_current_processing(False)
    assert sd["model"].model_options == before
    assert patched.model_options == patched_before
    again = plain_ksampler(comfy_inproc, sd, "euler", model=patched)
    fresh = (
        node("TiPAIPatchModel")
        .execute(sd["model"], "a red circle", sd["vae"], auditor, miner(node), None, guard(node, 0.0), policy(node))
        .args[0]
    )
    assert torch.equal(again, plain_ksampler(comfy_inproc, sd, "euler", model=fresh))


def _graph_error(comfy_inproc, graph) -> str:
    with pytest.raises(RuntimeError) as info:
        comfy_inproc.run(graph)
    return str(info.value)


def _api_workflow() -> dict:
    path = Path(__file__).resolve().parents[2] / "workflows" / "api" / "tipai_txt2img.json"
    return json.loads(path.read_text())


def test_the_tspo_sampler_draws_emphasis_from_its_list(node):
    import torch

    from tipai_core.policy.actions import PolicyState

    spec = node("TiPAITSPOSampler").execute(32, 0, "1", "3.0", "0.0", "0", "1", "invert", emphasis="1.0, 2.5").args[0]
    assert spec.policy.knobs["emphasis"] == ((1.0, 2.5), (0.5, 0.5))
    state = PolicyState(step=4, n_steps=10, t=0.4, sigma=1.0, region_area=0.1, region_score=1.0, audit_scale=1.0,
                        max_depth=4)  # fmt: skip
    actions, _ = spec.policy.propose(state, 32, torch.Generator().manual_seed(0))
    assert {a.emphasis for a in actions} == {1.0, 2.5}  # both drawn, nothing else
    # left out (a workflow saved before the widget): emphasis 1, the guidance inside as outside
    assert policy(node).policy.knobs["emphasis"] == ((1.0,), (1.0,))


def test_missing_auditor_file_names_the_folder(comfy_inproc, tiny_checkpoint, tiny_auditor):
    g = _api_workflow()
    g["6"]["inputs"]["backbone"] = "no_such_auditor.safetensors"
    msg = _graph_error(comfy_inproc, g)
    assert "no_such_auditor.safetensors" in msg and "models/tipai" in msg


def test_zero_candidates_is_refused(comfy_inproc, tiny_checkpoint, tiny_auditor):
    g = _api_workflow()
    g["10"]["inputs"]["n"] = 0
    msg = _graph_error(comfy_inproc, g)
    assert "TiPAI TSPO Sampler: n must be a whole number in [1, 32], got 0" in msg


def test_empty_prompt_is_refused(comfy_inproc, tiny_checkpoint, tiny_auditor):
    g = _api_workflow()
    g["2"]["inputs"]["value"] = "   "
    msg = _graph_error(comfy_inproc, g)
    assert "prompt" in msg and "empty" in msg


def test_user_mask_of_wrong_size_is_refused(comfy_inproc, sd, node, auditor):
    wrong = torch.ones(1, 32, 32)
    with pytest.raises(ValueError, match="resize the mask"):
        tipai_ksampler(node, sd, auditor, "euler", delta=0.0, miner=miner(node, user_mask=wrong))


def test_flow_model_nothing_accepted_is_bit_identical_and_audits_run(comfy_inproc, sd, node, auditor):
    """ModelSamplingSD3 switches the tiny model to flow (CONST) sampling: x = (1-σ)·x0 + σ·ε."""
    import comfy.model_sampling

    flow = node("ModelSamplingSD3")().patch(sd["model"], 3.0)[0]
    assert isinstance(flow.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    flow_sd = dict(sd, model=flow)
    latent, report, _ = tipai_ksampler(node, flow_sd, auditor, "euler", delta=1000.0)
    assert torch.equal(latent["samples"], plain_ksampler(comfy_inproc, flow_sd, "euler"))
    assert report["summary"]["regions"] > 0
    edited, report, _ = tipai_ksampler(node, flow_sd, auditor, "euler", delta=0.0)
    assert torch.isfinite(edited["samples"]).all()
    assert report["summary"]["accepted"] == 0 or not torch.equal(edited["samples"], latent["samples"])


def test_auditor_inpaint_standalone_makes_n_candidates_and_keeps_outside(comfy_inproc, sd, node, auditor):
    torch.manual_seed(0)
    image = torch.rand(1, 64, 64, 3)
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:40, 16:40] = 1.0
    n = 3
    out = (
        node("TiPAIAuditorInpaint")
        .execute(
            "diffusion",
            0,
            2,
            "vae",
            sd["model"],
            sd["pos"],
            sd["neg"],
            sd["vae"],
            image,
            mask,
            policy(node, n),
            8,
            "normal",
            5.0,
            auditor,
            guard(node, 0.0),
            "a red circle",
        )
        .args
    )
    _, candidates, best, table = out
    assert candidates.shape == (n + 1, 64, 64, 3)
    diff = (candidates[1:] - candidates[:1]).abs()
    # the latent is the original outside the (dilated, feathered) latent mask; decoded pixels far
    # from the region barely move, inside they change
    assert diff[:, 20:36, 20:36].mean() > 5 * diff[:, :4, :4].mean()
    t = json.loads(table)
    assert len(t["candidates"]) == n + 1
    assert torch.equal(best[0], candidates[t["winner"]])
    with pytest.raises(ValueError, match="resize the mask"):
        node("TiPAIAuditorInpaint").execute(
            "diffusion",
            0,
            2,
            "vae",
            sd["model"],
            sd["pos"],
            sd["neg"],
            sd["vae"],
            image,
            torch.ones(1, 32, 32),
            policy(node, n),
            8,
            "normal",
            5.0,
        )


@pytest.mark.parametrize("decoder", ["latent_rgb", "taesd"])
def test_cheap_audit_decoders(comfy_inproc, comfy_dir, sd, node, auditor, decoder):
    """latent_rgb and TAESD (models/vae_approx) audit views; a missing TAESD names its folder."""
    import comfy.taesd.taesd
    from safetensors.torch import save_file

    editor = node("TiPAIAuditorInpaint").execute("diffusion", 0, 2, decoder).args[0]
    path = comfy_dir / "models" / "vae_approx" / "taesd_decoder.safetensors"

    def run():
        return (
            node("TiPAIKSampler")
            .execute(
                sd["model"],
                5,
                STEPS,
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
                miner(node),
                editor,
                guard(node, 1000.0),
                policy(node),
            )
            .args
        )

    if decoder == "taesd":
        path.unlink(missing_ok=True)
        with pytest.raises(FileNotFoundError, match="models/vae_approx"):
            run()
        # ComfyUI builds TAESD without weight init: fill it as the tiny checkpoint does (1/sqrt(fan_in))
        gen = torch.Generator().manual_seed(0)
        dec = comfy.taesd.taesd.TAESD(latent_channels=4).taesd_decoder
        weights = {
            k: (torch.randn(v.shape, generator=gen) / v[0].numel() ** 0.5 if v.dim() > 1 else torch.zeros(v.shape))
            for k, v in dec.state_dict().items()
        }
        save_file(weights, str(path))
    try:
        latent, report = run()[:2]
    finally:
        path.unlink(missing_ok=True)
    assert torch.equal(latent["samples"], plain_ksampler(comfy_inproc, sd, "euler"))
    assert report["summary"]["regions"] > 0


def test_gradcam_is_real_inside_comfyui(node, tiny_auditor):
    """Nodes run under torch.inference_mode; the loader keeps the weights usable by autograd, so the
    miner's Grad-CAM has a real gradient (the fallback would report a zero score)."""
    import importlib

    with torch.inference_mode():
        handle = node("TiPAIAuditorLoader").execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0).args[0]
        saliency = importlib.import_module(
            type(handle.auditor).__module__.rsplit(".auditor.", 1)[0] + ".mining.saliency"
        )
        aud = handle.ready()
        aud.text_features(["a red circle"])  # cached under inference_mode, as in a real run
        feats = saliency.auditor_features(aud, torch.rand(1, 3, 64, 64), "a red circle")
    assert float(feats.score.abs().sum()) > 0
    assert torch.isfinite(feats.cam).all() and float(feats.cam.std()) > 0


def test_one_progress_bar_per_run_that_only_moves_forward(sd, node, auditor):
    """Every update the run sends (the sampler's steps and the tournaments' model calls, a restart after an
    accepted edit included) has one total, the steps plus a reserve per audit, and a value that never drops."""
    import comfy.utils

    events = []
    before = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview=None, **kw: events.append((value, total)))
    try:
        _, report, _ = tipai_ksampler(node, sd, auditor, "euler", delta=0.0, policy=policy(node, 4))
    finally:
        comfy.utils.set_progress_bar_global_hook(before)
    values, totals = [v for v, _ in events], {t for _, t in events}
    assert report["summary"]["accepted"] >= 1  # a restart replayed the audited step
    assert len(totals) == 1 and values == sorted(values), events
    (total,) = totals
    assert values[-1] == total and total > STEPS  # ends full; the audits have their share
    assert len(values) > STEPS + report["summary"]["audited_steps"]  # the tournaments move it too
