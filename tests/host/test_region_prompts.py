"""Region prompts in the real ComfyUI: a region's text, encoded with the sampler's own CLIP, conditions
the edit inside the region's mask (ComfyUI's masked-conditioning semantics), and nothing outside it."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch


@pytest.fixture(scope="module")
def mods(pack):
    name = pack.__name__
    return {
        "hook": importlib.import_module(name + ".nodes.sampler_hook"),
        "adapters": importlib.import_module(name + ".nodes.comfy_adapters"),
        "core": importlib.import_module(name + ".tipai_core.diffusion.conditioning"),
        "step": importlib.import_module(name + ".tipai_core.loop.audit_step"),
        "regions": importlib.import_module(name + ".tipai_core.mining.regions"),
        "editor": importlib.import_module(name + ".tipai_core.editing.diffusion_editor"),
        "guard": importlib.import_module(name + ".tipai_core.guard.tournament_guard"),
        "actions": importlib.import_module(name + ".tipai_core.policy.actions"),
        "protocols": importlib.import_module(name + ".tipai_core.protocols"),
    }


@pytest.fixture(scope="module")
def sd(comfy_inproc, tiny_checkpoint):
    n = comfy_inproc.nodes
    model, clip, vae = n.CheckpointLoaderSimple().load_checkpoint(tiny_checkpoint)[:3]
    pos = n.CLIPTextEncode().encode(clip, "a red circle on grey")[0]
    neg = n.CLIPTextEncode().encode(clip, "")[0]
    return {"model": model, "clip": clip, "vae": vae, "pos": pos, "neg": neg}


def _models(comfy_inproc, sd):
    flow = comfy_inproc.nodes.NODE_CLASS_MAPPINGS["ModelSamplingSD3"]().patch(sd["model"], 3.0)[0]
    return {"eps": sd["model"], "flow": flow}


def _during_sampling(comfy_inproc, sd, model, mods, check, step=3, steps=6, cfg=4.0):
    """Run ``check(view)`` inside a real KSampler at ``step`` (the guider's conds are processed then)."""
    out = {}

    def audit(view):
        out["result"] = check(view)
        return None

    patched = mods["hook"].patch_model(model, audit, lambda i, total: i == step)
    latent = comfy_inproc.nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    comfy_inproc.nodes.common_ksampler(patched, 1, steps, cfg, "euler", "normal", sd["pos"], sd["neg"], latent)
    return out["result"]


def _mask(h: int, w: int) -> torch.Tensor:
    """A soft region: 1 on the left half, 0.5 in a middle band, 0 on the right."""
    m = torch.zeros(1, 1, h, w)
    m[..., : w // 2] = 1.0
    m[..., w // 2 : w // 2 + 2] = 0.5
    return m


@pytest.mark.parametrize("kind", ["eps", "flow"])
def test_the_region_branch_is_comfyuis_masked_conditioning(comfy_inproc, sd, mods, kind):
    """Ours, ``(1 - m)·D_base + m·D_region`` under CFG, equals ComfyUI's own masked conds: the base positive
    with ConditioningSetMask(1 - m) combined with the region's with ConditioningSetMask(m)."""
    n = comfy_inproc.nodes
    C, A = mods["core"].Conditioning, mods["adapters"]
    region_cond = n.CLIPTextEncode().encode(sd["clip"], "a blue square")[0]

    def check(view):
        import comfy.sampler_helpers
        import comfy.samplers

        x, sigma = view.x, view.sigmas[view.step]
        h, w = x.shape[-2:]
        m = _mask(h, w)
        encoder = A.ComfyRegionEncoder(sd["clip"], view.guider, x)
        rc = encoder("a blue square")
        assert encoder("a blue square") is rc  # encoded once per text
        den = A.ComfyDenoiser(view.guider, view.model_options)
        cond = C(cfg=4.0).with_region(m, torch.tensor([4.0]), torch.tensor([1.0]), rc)
        ours = den(x, sigma, cond)
        plain = den(x, sigma, C(cfg=4.0))
        # ComfyUI's way: masks at latent size, strength 1, no area
        set_mask = n.NODE_CLASS_MAPPINGS["ConditioningSetMask"]()
        base_m = set_mask.append(sd["pos"], (1 - m)[0], "default", 1.0)[0]
        reg_m = set_mask.append(region_cond, m[0], "default", 1.0)[0]
        combined = n.ConditioningCombine().combine(base_m, reg_m)[0]
        conds = comfy.samplers.process_conds(
            view.guider.inner_model,
            x,
            {"positive": comfy.sampler_helpers.convert_cond(combined), "negative": view.guider.conds["negative"]},
            x.device,
        )
        model = view.guider.inner_model
        c, u = comfy.samplers.calc_cond_batch(
            model, [conds["positive"], conds["negative"]], x, sigma.reshape(1), view.model_options
        )
        native = u + 4.0 * (c - u)
        return ours, plain, native, m

    ours, plain, native, m = _during_sampling(comfy_inproc, sd, _models(comfy_inproc, sd)[kind], mods, check)
    assert torch.allclose(ours, native, atol=1e-4, rtol=1e-4), float((ours - native).abs().max())
    outside = (m == 0).expand_as(ours)
    assert torch.allclose(ours[outside], plain[outside], atol=1e-5)  # the region prompt leaves the outside be
    inside = (m == 1).expand_as(ours)
    assert (ours[inside] - plain[inside]).abs().max() > 1e-3  # ... and changes the inside


@pytest.mark.parametrize("kind", ["eps", "flow"])
def test_a_region_prompt_changes_the_candidates_only_inside_the_mask(comfy_inproc, sd, mods, kind):
    """audit_step in the real sampler: the same actions, with and without the region's text encoded by the
    sampler's CLIP. The candidates differ inside the mask and are the control, bit for bit, outside it."""
    A, S, R = mods["adapters"], mods["step"], mods["regions"]
    C = mods["core"].Conditioning
    seen: dict[str, object] = {}

    class Spy(mods["editor"].DiffusionEditor):
        def __call__(self, ctx, region_mask, actions):
            res = super().__call__(ctx, region_mask, actions)
            seen[self.label] = (res, ctx.x, ctx.region_payload)
            return res

    class Decoder:
        factor = 8

        def __call__(self, latent, scale=1.0):
            return torch.nn.functional.interpolate(latent[:, :3].sigmoid(), scale_factor=8 * scale)

    class Auditor:
        classes = ("safe",)

        def score(self, images, prompt, mask=None):
            k = images.shape[0]
            z = torch.zeros(k)
            return mods["protocols"].AuditScores(z, z, torch.ones(k), torch.ones(k, 1), torch.ones(k))

    def region_miner(view, prompt, user_mask=None):
        mask = torch.zeros(1, 1, *view.shape[-2:])
        mask[..., 8:40, 8:40] = 1.0
        return [dataclasses.replace(R.Region.from_mask(mask, score=1.0), prompt="a blue square")]

    knobs = {"editor": (["renoise"], [1.0]), "depth": ([2], [1.0]), "jitter": ([0.0], [1.0])}

    def check(view):
        for label, encoder in (("base", None), ("region", A.ComfyRegionEncoder(sd["clip"], view.guider, view.x))):
            editor = Spy()
            editor.label = label
            suite = S.AuditSuite(
                decoder=Decoder(),
                miner=region_miner,
                auditor=Auditor(),
                editor=editor,
                policy=mods["actions"].FixedKnobPolicy(knobs),
                guard=mods["guard"].TournamentGuard(delta=1e9),
                n_candidates=2,
                region_encoder=encoder,
            )
            new_x, records = S.audit_step(
                view.x,
                view.x0,
                view.step,
                view.sigmas,
                denoiser=A.ComfyDenoiser(view.guider, view.model_options),
                param=A.parametrisation(view.guider.inner_model.model_sampling),
                cond=C(cfg=4.0),
                prompt="a red circle on grey",
                suite=suite,
            )
            assert new_x is None and len(records) == 1
        return seen

    got = _during_sampling(comfy_inproc, sd, _models(comfy_inproc, sd)[kind], mods, check)
    (base, x, p_base), (region, _, p_region) = got["base"], got["region"]
    assert p_base is None and isinstance(p_region, A.RegionConds) and p_region.text == "a blue square"
    for res in (base, region):
        outside = (res.masks == 0).expand_as(res.latents)
        assert torch.equal(res.latents[outside], x.expand_as(res.latents)[outside])
    inside = (region.masks > 0).expand_as(region.latents)
    assert (region.latents[inside] - base.latents[inside]).abs().max() > 1e-3
