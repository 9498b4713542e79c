"""TiPAI on model families other than SD1.5, in the real host: a tiny SDXL-family UNet and a tiny SD3 MMDiT
(scripts/tiny_families.py, generated at test time), each loaded with ComfyUI's UNET Loader and its TAESD
through the VAE Loader, as a user with a diffusion-model file does.

The text encoders are left out (SDXL's CLIP-G alone is 700M parameters): the conditioning is built here,
with the shapes and extras each family's encoders give, which are what the family needs beyond SD1.5:
- SDXL: a 2048-wide context and the pooled CLIP-G output (1280), plus the six size conditions (width,
  height, crop, target size) that ``model_base.SDXL.encode_adm`` turns into the 2816-wide ``adm``;
- SD3: a 4096-wide context (CLIP-L, CLIP-G and T5 joined) and a 2048-wide pooled output; flow sampling
  (ModelSamplingDiscreteFlow) is the model's own, no patch needed.

For each: the detected family; every audit view (vae, latent_rgb with the family's factors, TAESD) gives an
image of the right size; the TiPAI KSampler and the Patch Model are bit-identical to ComfyUI's KSampler when
nothing is accepted, with the audits run; and through the sampler hook an identity restart is exact (SD3's flow
restart up to float rounding) and an edit takes effect inside its corner (test_every_sampler.py's checks, on
euler).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from tiny_families import write_family

from tests.host.sampler_checks import TABLE, check_sampler

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: a second thread only adds contention
STEPS = 6
SIZE = 64  # pixels: an 8x8 latent
FAMILIES = {
    # family: (ComfyUI's detected config, its model_base class, latent channels, context width, pooled width, extras)
    "sdxl": (
        "Segmind_Vega",
        "SDXL",
        4,
        2048,
        1280,
        {"width": SIZE, "height": SIZE, "crop_w": 0, "crop_h": 0, "target_width": SIZE, "target_height": SIZE},
    ),
    "sd3": ("SD3", "SD3", 16, 4096, 2048, {}),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fam(request, comfy_inproc, comfy_dir):
    name = request.param
    _, _, channels, width, pooled, extras = FAMILIES[name]
    unet_file, vae_name = write_family(comfy_dir / "models", name)
    n = comfy_inproc.nodes
    model = n.UNETLoader().load_unet(unet_file, "default")[0]
    vae = n.VAELoader().load_vae(vae_name)[0]
    gen = torch.Generator().manual_seed(7)

    def cond():
        ctx, pool = torch.randn(1, 77, width, generator=gen), torch.randn(1, pooled, generator=gen)
        return [[ctx, {"pooled_output": pool, **extras}]]

    latent = {"samples": torch.zeros(1, channels, SIZE // 8, SIZE // 8)}
    return {"name": name, "model": model, "vae": vae, "pos": cond(), "neg": cond(), "latent": latent}


@pytest.fixture(scope="module")
def node(comfy_inproc):
    return comfy_inproc.node_class


@pytest.fixture(scope="module")
def auditor(node, tiny_auditor):
    return node("TiPAIAuditorLoader").execute(tiny_auditor, "tipai-tiny-vit", "none", "none", 1.0).args[0]


def _tipai(node, fam, auditor, decoder, delta=1000.0):
    guard = node("TiPAITournamentGuard").execute(delta, 0.0, 0.0, 0.0, 0.0, 1.0, 2, 2, 1, "1.0").args[0]
    policy = node("TiPAITSPOSampler").execute(2, 0, "1", "3.0", "0.0", "0", "1", "invert").args[0]
    miner = node("TiPAIRegionMiner").execute(1, 0.6, 0.02, 0.5, 2, 1.0, 1.0, None).args[0]
    editor = node("TiPAIAuditorInpaint").execute("diffusion", 0, 2, decoder).args[0]
    out = node("TiPAIKSampler").execute(
        fam["model"], 5, STEPS, 4.0, "euler", "normal", fam["pos"], fam["neg"], fam["latent"], 1.0,
        "a red circle", fam["vae"], auditor, miner, editor, guard, policy,
    )  # fmt: skip
    return out.args[0]["samples"], out.args[1]


def _plain(comfy_inproc, fam, model=None):
    return comfy_inproc.nodes.common_ksampler(
        model or fam["model"], 5, STEPS, 4.0, "euler", "normal", fam["pos"], fam["neg"], fam["latent"]
    )[0]["samples"]


def test_the_family_is_detected(fam):
    import comfy.model_base

    config, base, channels = FAMILIES[fam["name"]][:3]
    inner = fam["model"].model
    assert type(inner.model_config).__name__ == config
    assert isinstance(inner, getattr(comfy.model_base, base))
    assert inner.latent_format.latent_channels == channels
    assert fam["vae"].latent_channels == channels


@pytest.mark.parametrize("mode", ["vae", "latent_rgb", "taesd"])
def test_every_audit_view_has_the_image_size(fam, pack, mode):
    adapters = importlib.import_module(pack.__name__ + ".nodes.comfy_adapters")
    decoder = adapters.ComfyAuditDecoder(fam["vae"], fam["model"].model, mode)
    latent = torch.randn(2, FAMILIES[fam["name"]][2], SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(1))
    for scale, px in ((1.0, SIZE), (0.5, SIZE // 2)):
        img = decoder(latent, scale)
        assert img.shape == (2, 3, px, px)
        assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
        assert float(img.detach().std()) > 0  # a real decode of random latents, not a constant


@pytest.mark.parametrize("decoder", ["latent_rgb", "taesd"])
def test_tipai_ksampler_is_bit_identical_when_nothing_is_accepted(comfy_inproc, fam, node, auditor, decoder):
    samples, report = _tipai(node, fam, auditor, decoder)
    assert torch.equal(samples, _plain(comfy_inproc, fam))
    s = report["summary"]
    assert s["audited_steps"] == 2 and s["regions"] > 0 and s["candidates"] > 0 and s["accepted"] == 0


def test_patch_model_under_ksampler_is_bit_identical(comfy_inproc, fam, node, auditor):
    guard = node("TiPAITournamentGuard").execute(1000.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2, 2, 1, "1.0").args[0]
    miner = node("TiPAIRegionMiner").execute(1, 0.6, 0.02, 0.5, 2, 1.0, 1.0, None).args[0]
    patched = (
        node("TiPAIPatchModel").execute(fam["model"], "a red circle", fam["vae"], auditor, miner, None, guard, None)
    ).args[0]
    assert torch.equal(_plain(comfy_inproc, fam, patched), _plain(comfy_inproc, fam))


def test_the_hook_restarts_exactly_and_an_edit_stays_in_its_corner(comfy_inproc, fam, pack):
    hook = importlib.import_module(pack.__name__ + ".nodes.sampler_hook")
    sd = (fam["model"], fam["pos"], fam["neg"], fam["latent"], fam["vae"])
    # SD3 samples by flow: the restart reaches x as σ·(x/σ), exact up to float rounding (6.6e-7 std measured)
    tol = 1e-5 if fam["name"] == "sd3" else 0.0
    check_sampler(comfy_inproc, sd, hook, "euler", label=f"{fam['name']} euler", exact_tol=tol)
    row = TABLE[f"{fam['name']} euler"]
    assert row["exact_state"] and row["identity_rel_max"] <= tol and row["restarts"] == 1
