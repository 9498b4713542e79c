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

from tests.host.sampler_checks import NO_ACCEPT, STEPS, TABLE, check_sampler, denoise_of, plain_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds contention


@pytest.fixture(scope="module")
def hook(pack):
    return importlib.import_module(pack.__name__ + ".nodes.sampler_hook")


@pytest.fixture(scope="module")
def sd(tiny_sd):
    d = tiny_sd("a red circle", negative="")
    return d["model"], d["pos"], d["neg"], d["latent"], d["vae"]


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
    assert set(names) <= set(TABLE)  # (the family tests add rows of their own)


@pytest.mark.parametrize("sampler", sorted(NO_ACCEPT))
def test_tipai_ksampler_says_when_acceptance_is_off(comfy_inproc, sd, tiny_auditor, sampler):
    node = comfy_inproc.node_class
    model, pos, neg, latent, vae = sd
    auditor = node("TiPAIAuditorLoader").execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0).args[0]
    # δ = 0 and step 1 audited: any improvement would be accepted on a sampler that allows it (one audit: each is a
    # whole tournament, and dpm_adaptive's random-model run is slow enough already)
    guard = node("TiPAITournamentGuard").execute(0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 100, 1, 1, "1.0").args[0]
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
        denoise_of(sampler),
        "a red circle",
        vae,
        auditor,
        None,
        node("TiPAIAuditorInpaint").execute("diffusion", 0, 2, "latent_rgb").args[0],
        guard,
        None,
    )
    samples, report = out.args[0]["samples"], out.args[1]
    assert torch.equal(samples, plain_run(comfy_inproc, sd, sampler))
    assert report["summary"]["accepted"] == 0
    assert report["summary"]["audited_steps"] >= 1
    assert any("no edit is accepted" in w for w in report["extra"]["warnings"])
