"""TiPAI Referee Refine in the real ComfyUI: outside the mask the latent is the input's bit for bit, the
auditor's score rises, Cancel stops it and leaves the input as it was, and bad input is refused."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def auditor(tiny_auditor_handle):
    return tiny_auditor_handle


@pytest.fixture(scope="module")
def sd(tiny_sd):
    return tiny_sd("a red circle")


def _refine(comfy_inproc, sd, auditor, latent=None, **kw):
    args = dict(steps=6, lr=0.1, augmentations=0, micro_batch=4, tv_weight=0.0, l2_weight=0.0, ema=0.0, seed=0)
    args.update(kw)
    latent = latent or {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    return comfy_inproc.node_class("TiPAIRefereeRefine").execute(
        sd["vae"], auditor, "a red circle", latent=latent, **args
    )


def test_outside_the_mask_stays_and_the_score_rises(comfy_inproc, sd, auditor):
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    before = z.clone()
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1.0
    out = _refine(comfy_inproc, sd, auditor, latent={"samples": z}, mask=mask, steps=8)
    refined, image, report = out.args
    assert torch.equal(z, before)  # the input LATENT is untouched
    inside = torch.zeros(1, 4, 8, 8, dtype=torch.bool)
    inside[..., 2:6, 2:6] = True
    assert torch.equal(refined["samples"][~inside], z[~inside])
    assert not torch.equal(refined["samples"][inside], z[inside])
    import json

    s = json.loads(report)["trajectory_S"]
    assert len(s) == 9 and s[-1] > s[0]  # K = 0: the referee's own score, climbed
    assert image.shape == (1, 64, 64, 3)
    assert out.ui["tipai_text"][0].startswith("**Referee refine**")


def test_cancel_stops_the_refine_and_the_input_stays(comfy_inproc, sd, auditor):
    import comfy.model_management
    import comfy.utils

    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    before = z.clone()
    seen = []
    previous = comfy.utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview=None, **kw):
        seen.append(value)
        if value >= 2:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            _refine(comfy_inproc, sd, auditor, latent={"samples": z}, steps=50)
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        comfy.model_management.interrupt_current_processing(False)
    assert max(seen) < 50 and torch.equal(z, before)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"lr": float("nan")}, "lr"),
        ({"augmentations": -1}, "augmentations"),
        ({"mask": torch.zeros(1, 64, 64)}, "mask is empty"),
        ({"mask": torch.ones(1, 32, 32)}, "mask"),
    ],
)
def test_bad_input_names_the_node_and_the_input(comfy_inproc, sd, auditor, kw, match):
    with pytest.raises(ValueError, match=match) as err:
        _refine(comfy_inproc, sd, auditor, **kw)
    assert "TiPAI Referee Refine" in str(err.value)


@pytest.mark.parametrize("delta", [1000.0, 0.0])
def test_the_referee_backend_runs_in_the_tipai_ksampler(comfy_inproc, tiny_sd, auditor, delta):
    """backend 'referee' of the Auditor Inpaint: the loop's candidates are refines (no extra model call, only
    auditor passes); with nothing accepted the latent is the plain KSampler's bit for bit."""
    node = comfy_inproc.node_class
    sd = tiny_sd("a red circle left of a blue square", batch=1)
    editor = node("TiPAIAuditorInpaint").execute("referee", 0, 2, "vae").args[0]
    guard = node("TiPAITournamentGuard").execute(delta, 0.0, 0.0, 0.0, 0.0, 1.0, 3, 2, 1, "1.0").args[0]
    policy = node("TiPAITSPOSampler").execute(2, 0, "1", "5.0", "0.0", "0", "1", "invert").args[0]
    miner = node("TiPAIRegionMiner").execute(1, 0.6, 0.02, 0.5, 2, 1.0, 1.0).args[0]
    args = (sd["model"], 5, 8, 5.0, "euler", "normal", sd["pos"], sd["neg"], sd["latent"], 1.0)
    out = node("TiPAIKSampler").execute(*args, "a red circle", sd["vae"], auditor, miner, editor, guard, policy)
    latent, report = out.args[0]["samples"], out.args[1]
    s = report["summary"]
    # refines call the auditor, never the model: the only extra model calls are the restarts after acceptance
    assert s["regions"] >= 1 and s["extra_model_calls"] == len(report["accepted_steps"])
    assert all(r["costs"]["auditor_calls"] > 1 for r in report["records"])
    plain = comfy_inproc.nodes.common_ksampler(*args[:9], denoise=1.0)[0]["samples"]
    if delta == 1000.0:
        assert s["accepted"] == 0 and torch.equal(latent, plain)
    else:
        assert s["accepted"] == 0 or not torch.equal(latent, plain)


def test_the_standalone_inpaint_points_to_the_refine_node_for_referee(comfy_inproc, sd):
    with pytest.raises(ValueError, match="TiPAI Auditor Inpaint: the 'referee' backend .* TiPAI Referee Refine"):
        comfy_inproc.node_class("TiPAIAuditorInpaint").execute("referee", 0, 2, "vae", model=sd["model"])
