"""Tiny random-weight diffusion models that ComfyUI 0.3.75 detects as other families than SD1.5.

Run with the test host's Python and ComfyUI importable (the host tests call ``write_family`` in process):
    python scripts/tiny_families.py <ComfyUI dir> <instance models dir> [sdxl|sd3 ...]

Each family is a diffusion-model file for ComfyUI's UNET loader (models/diffusion_models) and a pair of
TAESD-shaped weights for its VAE Loader entry (models/vae_approx): a full-size text encoder would be
most of the file and most of the run time (SDXL's CLIP-G alone has 700M parameters), so the tests build
the conditioning tensors themselves, of the shapes the family's text encoders give.

- **sdxl**: an SDXL-family UNet. SDXL proper is detected only at transformer depths [0, 0, 2, 2, 10, 10]
  (2.6B parameters at full width); Segmind Vega, an SDXL distillation ComfyUI runs through the same
  SDXL model class, latent format and conditioning (pooled CLIP-G output and the six size conds: the
  2816-wide ``adm``), is detected at [0, 0, 1, 1, 2, 2]. With every level at 320 channels and no middle
  block that is 104M parameters (209 MB in fp16). Its VAE is ``taesdxl`` (4 latent channels).
- **sd3**: an MMDiT of depth 1 (hidden size 64, one head): SD3 is detected from 16 input channels and
  the joint blocks, whatever the depth. Conditioning: a 4096-wide context (CLIP-L, CLIP-G and T5
  concatenated) and a 2048-wide pooled output. Its VAE is ``taesd3`` (16 latent channels).

Flux is not here: ComfyUI fixes its head count at 24 and the rotary axes at 16 + 56 + 56 = 128, so any
model it detects as Flux is 3072 wide; one double and one single block are already about 500M
parameters (a 1 GB file).

Weights: shapes from the modules built on the meta device, values from a seeded generator,
``randn / sqrt(fan_in)`` (as scripts/tiny_checkpoint.py); fp16 on disk. A file carries its recipe in the
safetensors metadata and is rewritten only when that differs, through a temporary name.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tiny_checkpoint import fill, has_recipe  # scripts/ is on the path, as a script and under pytest

SEED = 20261204
RECIPES = {"sdxl": "tiny-sdxl-vega-v1", "sd3": "tiny-sd3-v1"}
FILES = {"sdxl": "tipai_tiny_sdxl.safetensors", "sd3": "tipai_tiny_sd3.safetensors"}
TAESD = {"sdxl": ("taesdxl", 4), "sd3": ("taesd3", 16)}  # the VAE Loader's name and the latent channels

SDXL_UNET = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    model_channels=320,
    num_res_blocks=2,
    channel_mult=(1, 1, 1),
    num_heads=-1,
    num_head_channels=64,
    transformer_depth=[0, 0, 1, 1, 2, 2],
    transformer_depth_output=[0, 0, 0, 1, 1, 1, 2, 2, 2],
    transformer_depth_middle=-2,  # no middle block
    context_dim=2048,
    adm_in_channels=2816,
    num_classes="sequential",
    use_spatial_transformer=True,
    use_linear_in_transformer=True,
    legacy=False,
)

SD3_MMDIT = dict(
    input_size=None,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    depth=1,
    adm_in_channels=2048,
    context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 64}},
    pos_embed_max_size=16,  # latents up to 32x32 (256 px)
    num_patches=256,
    pos_embed_scaling_factor=None,
)


def _random(module, gen) -> dict:
    return {k: fill(k, tuple(v.shape), gen).half() for k, v in sorted(module.state_dict().items())}


def diffusion_state_dict(family: str) -> dict:
    import comfy.ops
    import torch

    gen = torch.Generator().manual_seed(SEED)
    with torch.device("meta"):
        if family == "sdxl":
            from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

            net = UNetModel(**SDXL_UNET, operations=comfy.ops.disable_weight_init, device="meta")
        elif family == "sd3":
            from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

            net = MMDiT(**SD3_MMDIT, operations=comfy.ops.disable_weight_init, device="meta")
        else:
            raise ValueError(f"unknown family {family!r}; known: {sorted(RECIPES)}")
    return _random(net, gen)


def taesd_state_dicts(channels: int) -> tuple[dict, dict]:
    import torch
    from comfy.taesd.taesd import TAESD

    gen = torch.Generator().manual_seed(SEED + channels)
    with torch.device("meta"):
        t = TAESD(latent_channels=channels)
    return _random(t.taesd_encoder, gen), _random(t.taesd_decoder, gen)


def _write(path: Path, tensors_of, recipe: str) -> None:
    from safetensors.torch import save_file

    if has_recipe(path, recipe):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors_of(), str(tmp), metadata={"tipai_recipe": recipe})
    tmp.replace(path)


def write_family(models: Path, family: str) -> tuple[str, str]:
    """The family's diffusion model and TAESD pair under ``models`` (an instance's models folder);
    returns (the UNET loader's file name, the VAE Loader's name). ComfyUI must be importable."""
    recipe = RECIPES[family]
    _write(models / "diffusion_models" / FILES[family], lambda: diffusion_state_dict(family), recipe)
    name, channels = TAESD[family]
    enc, dec = taesd_state_dicts(channels)
    _write(models / "vae_approx" / f"{name}_encoder.safetensors", lambda: enc, recipe)
    _write(models / "vae_approx" / f"{name}_decoder.safetensors", lambda: dec, recipe)
    return FILES[family], name


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.path.insert(0, sys.argv[1])
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management probes CUDA
    for fam in sys.argv[3:] or sorted(RECIPES):
        print(write_family(Path(sys.argv[2]), fam))
