"""Write a tiny random-weight checkpoint that ComfyUI detects as SD1.5.

Run with the test host's Python and ComfyUI on the path (scripts/host.py does):
    python scripts/tiny_checkpoint.py <ComfyUI dir> <output .safetensors>

What makes it tiny but real (docs/host.md): a one-level UNet (model_channels 320 and context_dim 768
are what SD1.5 detection needs; one res block, transformer depth 1, no middle block), the
full-size CLIP-L text encoder (its config is fixed by ComfyUI), and TAESD weights under
``first_stage_model.taesd_*`` so ComfyUI uses its tiny decoder. Modules are built on the
meta device for their shapes only, then filled from a seeded generator.

The images are noise: tests check mechanics, not beauty.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

# Bump when the contents change: the cached file is regenerated when its recipe differs.
RECIPE = "tiny-sd15-v1"
SEED = 20261122

UNET = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    model_channels=320,
    num_res_blocks=1,
    channel_mult=(1,),
    num_heads=8,
    num_head_channels=-1,
    transformer_depth=[1],
    transformer_depth_output=[1, 1],
    transformer_depth_middle=-2,
    context_dim=768,
    use_spatial_transformer=True,
    use_linear_in_transformer=False,
    legacy=False,
)


def fill(name: str, shape: tuple[int, ...], gen):
    """One random tensor of the generated test models (scripts/tiny_families.py draws its weights here too)."""
    import torch

    if name.endswith("position_ids"):
        return torch.arange(shape[-1]).expand(shape).clone()
    if len(shape) >= 2:
        # 1/sqrt(fan_in) keeps activations O(1); a flat 0.02 gives all-black images.
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    if name.endswith("bias") or name.endswith("vae_shift"):
        return torch.zeros(shape)
    return torch.ones(shape)  # norm weights, vae_scale


def build_state_dict(comfy_dir: Path) -> dict:
    import json

    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management probes CUDA
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.taesd.taesd import TAESD

    shapes: dict[str, tuple[int, ...]] = {}
    with torch.device("meta"):
        unet = UNetModel(**UNET, operations=comfy.ops.disable_weight_init, device="meta")
        shapes.update({f"model.diffusion_model.{k}": tuple(v.shape) for k, v in unet.state_dict().items()})
        cfg = CLIPTextConfig(**json.loads((comfy_dir / "comfy" / "sd1_clip_config.json").read_text()))
        clip = CLIPTextModel(cfg)
        shapes.update({f"cond_stage_model.transformer.{k}": tuple(v.shape) for k, v in clip.state_dict().items()})
        taesd = TAESD(latent_channels=4)
        shapes.update({f"first_stage_model.{k}": tuple(v.shape) for k, v in taesd.state_dict().items()})

    gen = torch.Generator().manual_seed(SEED)
    out = {}
    for name in sorted(shapes):
        t = fill(name, shapes[name], gen)
        out[name] = t if name.endswith("position_ids") else t.to(torch.float16)
    return out


def write_checkpoint(comfy_dir: Path, path: Path) -> Path:
    """Write the checkpoint atomically (temp file, then rename) with its recipe in the metadata."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    save_file(build_state_dict(comfy_dir), str(tmp), metadata={"tipai_recipe": RECIPE})
    tmp.replace(path)
    return path


def has_recipe(path: Path, recipe: str) -> bool:
    """The file is a safetensors file whose metadata names ``recipe`` (the generated test models' cache key)."""
    from safetensors import safe_open

    if not path.is_file():
        return False
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("tipai_recipe") == recipe
    except Exception:  # a truncated or foreign file is simply rebuilt
        return False


def is_current(path: Path) -> bool:
    return has_recipe(path, RECIPE)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    comfy, out = Path(sys.argv[1]), Path(sys.argv[2])
    if not is_current(out):
        write_checkpoint(comfy, out)
    print(out)
