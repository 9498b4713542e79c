"""Every sampler of the host ComfyUI's KSampler list, through the SAMPLER_SAMPLE hook:

- nothing accepted: bit-identical to plain sampling;
- an identity restart (the audit hands back the latent it was given) at step 3: bit-exact for the
  samplers whose state is x alone; for ancestral/SDE samplers (a restart draws new noise) and
  multistep ones (a restart loses their history) within the bound measured below;
- a real edit takes effect inside the edited corner (measured against the identity restart, which
  draws the same restart noise);
- samplers that do not evaluate the model at the schedule's sigmas (dpm_fast, dpm_adaptive) keep
  auditing but never accept: their result stays bit-identical even when the audit returns an edit.

Run with ``-s`` to print the per-sampler table.
"""

from __future__ import annotations

import importlib

import pytest
import torch

STEPS = 8
EDIT_STEP = 3
# samplers whose restart from the same x replays the same computation exactly
EXACT_RESTART = {"euler", "euler_cfg_pp", "heun", "dpm_2", "ddim"}
# the audit cannot see the true state here: acceptance is switched off
NO_ACCEPT = {"dpm_fast", "dpm_adaptive"}
# |restart - plain| / std(plain) for the other samplers: fresh noise or lost history after the restart
# moves the trajectory, but it starts from the same x, so it stays well below a fresh sample (≈ √2).
RESTART_BOUND = 1.0

TABLE: dict[str, dict] = {}


@pytest.fixture(scope="module")
def hook(pack):
    return importlib.import_module(pack.__name__ + ".nodes.sampler_hook")


@pytest.fixture(scope="module")
def sd(tiny_sd):
    d = tiny_sd("a red circle", negative="")
    return d["model"], d["pos"], d["neg"], d["latent"], d["vae"]


def _sample(comfy_inproc, model, sd, sampler, seed=3):
    pos, neg, latent = sd[1], sd[2], sd[3]
    out = comfy_inproc.nodes.common_ksampler(model, seed, STEPS, 4.0, sampler, "karras", pos, neg, latent)
    return out[0]["samples"]


def _patched(hook, sd, audit, stats):
    return hook.patch_model(sd[0], audit, lambda i, t: i == EDIT_STEP, stats)


def check_sampler(comfy_inproc, sd, hook, sampler) -> None:
    plain = _sample(comfy_inproc, sd[0], sd, sampler)
    scale = float(plain.detach().std())

    # 1. nothing accepted
    seen = []
    stats = hook.HookStats()
    none = _sample(comfy_inproc, _patched(hook, sd, lambda v: seen.append(v.exact) or None, stats), sd, sampler)
    assert torch.equal(none, plain), "nothing accepted must be bit-identical"
    assert stats.restarts == 0
    assert stats.audited_steps == [EDIT_STEP] or sampler in NO_ACCEPT  # dpm_fast's steps are its own

    # 2. identity restart
    stats = hook.HookStats()
    ident = _sample(comfy_inproc, _patched(hook, sd, lambda v: v.x.clone(), stats), sd, sampler)
    rel = float((ident - plain).abs().max()) / scale

    # 3. a real edit: a bump in one corner of the true latent
    def bump(v):
        e = v.x.clone()
        e[:, :, :4, :4] += 2.0 * float(v.sigmas[v.step])
        return e

    stats_e = hook.HookStats()
    edited = _sample(comfy_inproc, _patched(hook, sd, bump, stats_e), sd, sampler)
    # against the identity restart, which draws the same restart noise: what is left is the edit
    d = (edited - ident).abs()
    inside, outside = float(d[:, :, :4, :4].mean()), float(d[:, :, 4:, 4:].mean())
    exact = bool(seen and seen[0])
    TABLE[sampler] = {
        "exact_state": exact,
        "identity_rel_max": rel,
        "edit_inside": inside / scale,
        "edit_outside": outside / scale,
        "restarts": stats_e.restarts,
    }

    if sampler in NO_ACCEPT or not exact:
        assert sampler in NO_ACCEPT, f"the true latent was not found at step {EDIT_STEP}"
        assert stats.restarts == 0 and stats_e.restarts == 0
        assert torch.equal(ident, plain) and torch.equal(edited, plain)  # acceptance off: always the plain run
        return
    assert stats.restarts == 1 and stats_e.restarts == 1
    if sampler in EXACT_RESTART:
        assert rel == 0.0, f"an identity restart must be bit-exact, max |diff|/std = {rel:.3g}"
    else:
        assert rel < RESTART_BOUND, f"identity restart moved {rel:.3g} std (bound {RESTART_BOUND})"
    assert inside > 2 * outside and inside > 0.05 * scale, "the edit did not take effect"


def test_every_sampler_of_the_host(comfy_inproc, sd, hook):
    import comfy.samplers

    names = list(comfy.samplers.KSampler.SAMPLERS)
    assert "euler" in names and "uni_pc" in names and "ipndm" in names
    failures = []
    for sampler in names:
        try:
            check_sampler(comfy_inproc, sd, hook, sampler)
        except AssertionError as exc:
            failures.append(f"{sampler}: {exc}")
    print(f"\n{'sampler':<32}exact-x  identity max|Δ|/std  edit inside  outside  restarts")
    for name, r in TABLE.items():
        print(
            f"{name:<32}{str(r['exact_state']):<9}{r['identity_rel_max']:>18.3g}{r['edit_inside']:>13.3f}"
            f"{r['edit_outside']:>9.3f}{r['restarts']:>10}"
        )
    assert not failures, "\n".join(failures)
    assert set(TABLE) == set(names)


@pytest.mark.parametrize("sampler", sorted(NO_ACCEPT))
def test_tipai_ksampler_says_when_acceptance_is_off(comfy_inproc, sd, tiny_auditor, sampler):
    node = comfy_inproc.node_class
    model, pos, neg, latent, vae = sd
    auditor = node("TiPAIAuditorLoader").execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0).args[0]
    # δ = 0 and every step audited: any improvement would be accepted on a sampler that allows it
    guard = node("TiPAITournamentGuard").execute(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1, 1, 1, "1.0").args[0]
    out = node("TiPAIKSampler").execute(
        model,
        3,
        STEPS,
        4.0,
        sampler,
        "karras",
        pos,
        neg,
        latent,
        1.0,
        "a red circle",
        vae,
        auditor,
        None,
        node("TiPAIAuditorInpaint").execute("diffusion", 0, 2, "latent_rgb").args[0],
        guard,
        None,
    )
    samples, report = out.args[0]["samples"], out.args[1]
    assert torch.equal(samples, _sample(comfy_inproc, model, sd, sampler))
    assert report["summary"]["accepted"] == 0
    if report["summary"]["audited_steps"]:
        assert any("no edit is accepted" in w for w in report["extra"]["warnings"])
