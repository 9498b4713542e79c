"""The SAMPLER_SAMPLE hook's checks for one sampler on one model, shared by test_every_sampler.py (every sampler,
the tiny SD1.5) and test_model_families.py (euler on each family): nothing accepted is bit-identical, an identity
restart is exact (or within ``RESTART_BOUND``), and a real edit takes effect inside its corner.

``sd`` is (model, positive, negative, latent, vae); ``TABLE`` collects one row per checked (model, sampler).
"""

from __future__ import annotations

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


# dpm_fast and dpm_adaptive pick their own steps; on a random model dpm_adaptive's error control takes minutes over
# the whole σ range, so their runs start part-way down (any run shows whether acceptance stays off)
NO_ACCEPT_DENOISE = 0.3


def denoise_of(sampler: str) -> float:
    return NO_ACCEPT_DENOISE if sampler in NO_ACCEPT else 1.0


def sample(comfy_inproc, model, sd, sampler, seed=3):
    pos, neg, latent = sd[1], sd[2], sd[3]
    out = comfy_inproc.nodes.common_ksampler(
        model, seed, STEPS, 4.0, sampler, "karras", pos, neg, latent, denoise=denoise_of(sampler)
    )
    return out[0]["samples"]


def patched(hook, sd, audit, stats):
    return hook.patch_model(sd[0], audit, lambda i, t: i == EDIT_STEP, stats)


# each (model, sampler) plain run, made once per test session; the model is kept with it, so its id is never reused
PLAIN: dict[tuple[int, str], tuple[object, torch.Tensor]] = {}


def plain_run(comfy_inproc, sd, sampler) -> torch.Tensor:
    key = (id(sd[0]), sampler)
    if key not in PLAIN:
        PLAIN[key] = (sd[0], sample(comfy_inproc, sd[0], sd, sampler))
    return PLAIN[key][1]


def check_no_accept(comfy_inproc, sd, hook, sampler, label=None) -> None:
    """A sampler whose steps are its own (dpm_fast, dpm_adaptive: dozens of model calls per step): one run whose
    audit hands back an edit at every audited step must be the plain run, bit for bit, with no restart. (It
    implies the identity restart's and the no-edit run's results, which the other samplers check one by one.)"""
    plain = plain_run(comfy_inproc, sd, sampler)
    seen = []

    def bump(v):
        seen.append(v.exact)
        e = v.x.clone()
        e[:, :, :4, :4] += 1.0  # a constant: these samplers' step index can run past the schedule
        return e

    stats = hook.HookStats()
    edited = sample(comfy_inproc, hook.patch_model(sd[0], bump, lambda i, t: True, stats), sd, sampler)
    row = {"exact_state": any(seen), "identity_rel_max": 0.0, "edit_inside": 0.0, "edit_outside": 0.0}
    TABLE[label or sampler] = {**row, "restarts": stats.restarts}
    assert seen, "the audit must still run"
    assert stats.restarts == 0 and torch.equal(edited, plain)  # acceptance off: always the plain run


def check_sampler(comfy_inproc, sd, hook, sampler, label=None, exact_tol=0.0) -> None:
    """Raises AssertionError with what failed; records its row in ``TABLE[label or sampler]``. ``exact_tol``: how
    far (in std) an identity restart of an ``EXACT_RESTART`` sampler may move; 0 for eps models, whose restart
    starts at x itself, float rounding for flow models (x reached as σ·(x/σ), see nodes/sampler_hook.py)."""
    if sampler in NO_ACCEPT:
        return check_no_accept(comfy_inproc, sd, hook, sampler, label)
    plain = plain_run(comfy_inproc, sd, sampler)
    scale = float(plain.detach().std())

    # 1. nothing accepted
    seen = []
    stats = hook.HookStats()
    none = sample(comfy_inproc, patched(hook, sd, lambda v: seen.append(v.exact) or None, stats), sd, sampler)
    assert torch.equal(none, plain), "nothing accepted must be bit-identical"
    assert stats.restarts == 0
    assert stats.audited_steps == [EDIT_STEP]

    # 2. identity restart
    stats = hook.HookStats()
    ident = sample(comfy_inproc, patched(hook, sd, lambda v: v.x.clone(), stats), sd, sampler)
    rel = float((ident - plain).abs().max()) / scale

    # 3. a real edit: a bump in one corner of the true latent
    def bump(v):
        e = v.x.clone()
        e[:, :, :4, :4] += 2.0 * float(v.sigmas[v.step])
        return e

    stats_e = hook.HookStats()
    edited = sample(comfy_inproc, patched(hook, sd, bump, stats_e), sd, sampler)
    # against the identity restart, which draws the same restart noise: what is left is the edit
    d = (edited - ident).abs()
    inside, outside = float(d[:, :, :4, :4].mean()), float(d[:, :, 4:, 4:].mean())
    exact = bool(seen and seen[0])
    TABLE[label or sampler] = {
        "exact_state": exact,
        "identity_rel_max": rel,
        "edit_inside": inside / scale,
        "edit_outside": outside / scale,
        "restarts": stats_e.restarts,
    }

    assert exact, f"the true latent was not found at step {EDIT_STEP}"  # (NO_ACCEPT samplers returned above)
    assert stats.restarts == 1 and stats_e.restarts == 1
    if sampler in EXACT_RESTART:
        assert rel <= exact_tol, f"an identity restart must be exact (to {exact_tol:g}), max |diff|/std = {rel:.3g}"
    else:
        assert rel < RESTART_BOUND, f"identity restart moved {rel:.3g} std (bound {RESTART_BOUND})"
    assert inside > 2 * outside and inside > 0.05 * scale, "the edit did not take effect"
