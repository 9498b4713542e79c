"""What a candidate costs: the learned editor (Stage B1) against the diffusion editor, in one run.

How to run it, from the repository root, with the test host's Python (ComfyUI's SD1.5 UNet and VAE code
is used at real size; ``python3 scripts/host.py`` prints the host):

    <host>/venv/bin/python benchmarks/bench_learned_editor.py [--sizes tiny,real] [--n 4] [--threads 1]

Each case runs in a fresh child process that builds its models with random weights (scaled 1/sqrt(fan_in))
and makes the N candidates of one region once to warm up, then again to measure:

    diffusion d=k   the training-free editor, renoise at depth k: (k + 1) denoiser calls on the N rows
    learned         the learned editor: the control's view decoded once, one batched forward of the net,
                    the N predictions encoded back, one denoiser call on the N rows (its audit view)
    learned, taesd  the same with TAESD's decoder and encoder as the RGB round trip (real size only)

Sizes: ``tiny`` is ShapesWorld (pixel space, 3x24x24, the world's UNet; the view is the latent itself) and
``real`` is SD1.5 at 512 px (a 4x64x64 latent, ComfyUI's full UNet, ~860 M parameters, and its full VAE,
whose decoder and encoder are the learned editor's way into and out of RGB). Columns: ``s/group``,
``cand/s`` (N over s/group), ``D evals`` (denoiser rows), ``peak MiB`` (the child's peak RSS during the
measured call above its peak after building: activations, not weights) and ``x diffusion d=1`` (the
learned editor's time over the cheapest diffusion case in the same run). CPU only here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fill(module, gen) -> None:
    """Every value set as the tiny test checkpoints draw theirs (ComfyUI builds without init: memory as found)."""
    import torch

    sys.path.insert(0, str(REPO / "scripts"))
    from tiny_checkpoint import fill

    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(fill(name, tuple(p.shape), gen))
        for name, b in module.named_buffers():
            b.copy_(fill(name, tuple(b.shape), gen).to(b.dtype))
    module.eval().requires_grad_(False)


def _real_models(gen, spec_taesd: bool = False):
    """(denoiser, to_rgb, from_rgb) of a random SD1.5: ComfyUI's UNet (eps) and VAE (or TAESD)."""
    import comfy.ops
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    # the SD1.5 UNet as ComfyUI detects it from a checkpoint: 4 levels, 2 blocks each, attention on the first three
    unet = UNetModel(
        image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
        channel_mult=(1, 2, 4, 4), num_heads=8, num_head_channels=-1, transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
        transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1,
        context_dim=768, use_spatial_transformer=True, use_linear_in_transformer=False, legacy=False,
        operations=comfy.ops.disable_weight_init,
    )  # fmt: skip
    _fill(unet, gen)
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}  # fmt: skip
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    _fill(vae, gen)
    context = torch.randn(1, 77, 768, generator=gen)

    def denoiser(x, sigma, cond):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1)
        c_in = 1 / (s**2 + 1) ** 0.5
        t = torch.full((x.shape[0],), 500.0)
        with torch.no_grad():
            eps = unet(x * c_in.reshape(-1, 1, 1, 1), t, context=context.expand(x.shape[0], -1, -1))
        return x - s.reshape(-1, 1, 1, 1) * eps

    def to_rgb(z):
        with torch.no_grad():
            return ((vae.decode(z / 0.18215) + 1) / 2).clamp(0, 1)

    def from_rgb_plain(rgb):
        with torch.no_grad():
            out = vae.encode(rgb * 2 - 1)
            z = out[0] if isinstance(out, tuple) else out
            return (z[:, :4] if z.shape[1] == 8 else z) * 0.18215

    if spec_taesd:
        from comfy.taesd.taesd import TAESD

        taesd = TAESD(latent_channels=4)
        _fill(taesd, gen)

        def to_rgb(z):  # noqa: F811 - TAESD instead of the VAE: ComfyUI's preview decoder and its encoder
            with torch.no_grad():
                return ((taesd.decode(z) + 1) / 2).clamp(0, 1)

        def from_rgb_plain(rgb):  # noqa: F811
            with torch.no_grad():
                return taesd.encode(rgb * 2 - 1)

    return denoiser, to_rgb, from_rgb_plain, 4, 64


def _tiny_models(gen):
    import torch

    from tipai_core.diffusion.conditioning import Conditioning
    from tipai_core.worlds.shapes.model import ModelConfig, PixelDecoder, ShapesDenoiser, ShapesUNet, to_model_space

    torch.manual_seed(0)
    net = ShapesUNet(ModelConfig(size=24)).eval()
    den = ShapesDenoiser(net)

    def denoiser(x, sigma, cond):
        with torch.no_grad():
            return den(x, sigma, cond or Conditioning(payload="a red circle", cfg=3.0))

    return denoiser, PixelDecoder(), to_model_space, 3, 24


def _child(spec: dict) -> dict:
    import resource
    import time

    import torch

    torch.set_num_threads(spec["threads"])
    sys.path.insert(0, spec["comfy"])
    sys.path.insert(0, str(REPO))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    from tipai_core.diffusion.conditioning import Conditioning
    from tipai_core.diffusion.parametrisation import Parametrisation
    from tipai_core.editing.diffusion_editor import DiffusionEditor
    from tipai_core.editing.learned_editor import LearnedEditor
    from tipai_core.editing.learned_file import EditorIdentity
    from tipai_core.editing.learned_net import EditorArch, EditorNet
    from tipai_core.policy.actions import Action
    from tipai_core.protocols import EditContext

    gen = torch.Generator().manual_seed(0)
    if spec["size"] == "real":
        denoiser, to_rgb, from_rgb, channels, h = _real_models(gen, spec.get("rgb") == "taesd")
    else:
        denoiser, to_rgb, from_rgb, channels, h = _tiny_models(gen)
    sig = torch.linspace(8.0, 0.0, 21)
    i = 10
    x = torch.randn(1, channels, h, h, generator=gen) * float(sig[i])
    cond = Conditioning(payload="a red circle", cfg=5.0)
    x0 = denoiser(x, sig[i], cond)
    mask = torch.zeros(1, 1, h, h)
    mask[..., h // 4 : h // 2, h // 4 : h // 2] = 1
    ctx = EditContext(denoiser, Parametrisation.parse("eps"), sig, i, x, x0, cond, prompt="a red circle")
    n = spec["n"]
    if spec["mode"] == "learned":
        torch.manual_seed(0)
        net = EditorNet(EditorArch(channels=3, text_dim=64, width=32)).eval()
        editor = LearnedEditor(net, EditorIdentity(net.arch), lambda p: torch.zeros(64), to_rgb, from_rgb)
        acts = [Action(editor="learned", seed=k, cfg_inside=5.0) for k in range(n)]
        evals = n
    else:
        editor = DiffusionEditor()
        acts = [Action(editor="renoise", depth=spec["d"], seed=k, cfg_inside=5.0) for k in range(n)]
        evals = n * (spec["d"] + 1)
    with torch.no_grad():
        editor(ctx, mask, acts)  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        editor(ctx, mask, acts)
        sec = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": sec, "peak_mib": max(0, after - before) / 1024, "evals": evals}


def _run(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,real")
    ap.add_argument("--n", type=int, default=4, help="candidates per region")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    sys.path.insert(0, str(REPO / "scripts"))
    import host

    comfy = str(host.host_dir() / "ComfyUI")
    print(
        f"{'size':<5} {'editor':<14} {'s/group':>8} {'cand/s':>8} {'D evals':>8} {'peak MiB':>9} "
        f"{'x diffusion d=1':>16}"
    )
    for size in args.sizes.split(","):
        base = {"size": size, "n": args.n, "threads": args.threads, "comfy": comfy}
        ref = None
        cases = [("diffusion", 1, ""), ("diffusion", 2, ""), ("diffusion", 3, ""), ("learned", 0, "vae")]
        if size == "real":
            cases.append(("learned", 0, "taesd"))
        for mode, d, rgb in cases:
            r = _run({**base, "mode": mode, "d": d, "rgb": rgb})
            ref = ref or r["seconds"]
            name = f"diffusion d={d}" if mode == "diffusion" else ("learned" if rgb != "taesd" else "learned, taesd")
            print(
                f"{size:<5} {name:<14} {r['seconds']:>8.3f} {args.n / r['seconds']:>8.2f} {r['evals']:>8} "
                f"{r['peak_mib']:>9.0f} {r['seconds'] / ref:>16.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
