"""The SAMPLER_SAMPLE hook inside ComfyUI's own KSampler: bit-identical when the audit accepts
nothing, exact when it restarts from an unchanged x, and effective when it accepts an edit."""

from __future__ import annotations

import importlib

import pytest
import torch

SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "ddim", "heun", "dpmpp_2m_sde", "uni_pc", "lcm", "dpmpp_sde"]


@pytest.fixture(scope="module")
def hook(pack):
    return importlib.import_module(pack.__name__ + ".nodes.sampler_hook")


@pytest.fixture(scope="module")
def sd(comfy_inproc, tiny_checkpoint):
    n = comfy_inproc.nodes
    model, clip, vae = n.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoint)[:3]
    pos = n.CLIPTextEncode().encode(clip, "a red circle")[0]
    neg = n.CLIPTextEncode().encode(clip, "")[0]
    latent = n.EmptyLatentImage().generate(64, 64, 2)[0]
    return model, pos, neg, latent


def _sample(comfy_inproc, model, sd, sampler, seed=3, steps=6, latent=None):
    _, pos, neg, empty = sd
    out = comfy_inproc.nodes.common_ksampler(
        model, seed, steps, 4.0, sampler, "normal", pos, neg, latent if latent is not None else empty
    )
    return out[0]["samples"]


def _every_other(i, total):
    return i % 2 == 0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_nothing_accepted_is_bit_identical(comfy_inproc, sd, hook, sampler):
    model = sd[0]
    seen = []

    def audit(view):
        seen.append((view.step, tuple(view.x.shape), bool(torch.isfinite(view.x0).all())))
        return None

    stats = hook.HookStats()
    plain = _sample(comfy_inproc, model, sd, sampler)
    patched = _sample(comfy_inproc, hook.patch_model(model, audit, _every_other, stats), sd, sampler)
    assert torch.equal(plain, patched)
    assert [s for s, _, _ in seen] == [2, 4]
    assert all(shape == (2, 4, 8, 8) and finite for _, shape, finite in seen)
    assert stats.restarts == 0
    # the original model is untouched: no TiPAI wrapper leaked into it
    assert hook.WRAPPER_KEY not in model.wrappers.get("sampler_sample", {})


@pytest.mark.parametrize("sampler", ["euler", "ddim", "heun"])
def test_identity_restart_is_exact_for_deterministic_samplers(comfy_inproc, sd, hook, sampler):
    stats = hook.HookStats()
    plain = _sample(comfy_inproc, sd[0], sd, sampler)
    patched = _sample(
        comfy_inproc, hook.patch_model(sd[0], lambda v: v.x.clone(), lambda i, t: i == 3, stats), sd, sampler
    )
    assert stats.restarts == 1
    assert torch.equal(plain, patched)


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m"])
def test_accepted_edit_changes_the_result(comfy_inproc, sd, hook, sampler):
    def audit(view):
        edited = view.x.clone()
        edited[:, :, :4, :4] += 2.0 * float(view.sigmas[view.step])
        return edited

    stats = hook.HookStats()
    plain = _sample(comfy_inproc, sd[0], sd, sampler)
    patched = _sample(comfy_inproc, hook.patch_model(sd[0], audit, lambda i, t: i == 3, stats), sd, sampler)
    assert stats.restarts == 1
    assert stats.audited_steps == [3]  # the restarted run does not audit step 3 again
    diff = (plain - patched).abs()
    # the edit dominates; stochastic and multistep samplers also change outside (new noise, no history)
    assert diff[:, :, :4, :4].mean() > 3 * diff[:, :, 4:, 4:].mean()


def test_restart_starts_exactly_at_the_edit_with_a_noise_mask(comfy_inproc, sd, hook):
    """With an inpainting latent the restart keeps the original latent for the re-composite."""
    base = {
        "samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)),
        "noise_mask": torch.zeros(1, 1, 64, 64),
    }
    base["noise_mask"][..., :32, :32] = 1.0
    seen = {}

    def audit(view):
        if view.step == 2:
            seen["edit"] = view.x.clone()
            return view.x + 0.5 * float(view.sigmas[2])
        seen.setdefault("after", view.x.clone())
        return None

    stats = hook.HookStats()
    out = _sample(comfy_inproc, hook.patch_model(sd[0], audit, lambda i, t: i >= 2, stats), sd, "euler", latent=base)
    assert stats.restarts == 1 and torch.isfinite(out).all()
    # outside the noise mask the result is the original latent, as ComfyUI's own inpainting gives
    plain = _sample(comfy_inproc, sd[0], sd, "euler", latent=base)
    assert torch.allclose(out[..., 4:, 4:], plain[..., 4:, 4:], atol=1e-5)
