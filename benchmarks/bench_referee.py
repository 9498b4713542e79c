"""What referee inversion costs: time per refine step and peak memory, against a plain decode, in one run.

How to run it, from the repository root, with the test host's Python (ComfyUI's decoder code is used
for the full-size VAE; ``python3 scripts/host.py`` prints the host):

    <host>/venv/bin/python benchmarks/bench_referee.py [--steps 2] [--sizes 64,512] [--threads 1]

Each case runs in a fresh child process, which builds its decoder and auditor (random weights, scaled
1/sqrt(fan_in) as the tiny checkpoint is), then measures one operation:

    plain decode        the decoder once, without gradients (what the sampler's VAE decode costs)
    refine K=k mb=m     ``referee_refine`` for ``--steps`` steps: per step one decode with gradients, the
                        plain image scored, and K augmented views forward and backward through the
                        auditor in micro-batches of m

Columns: ``s/step`` (wall seconds per refine step; per decode for the plain row), ``peak MiB`` (the
child's peak RSS during the operation above its peak after building the models: activations and
gradients, not weights), ``x plain`` (peak over the plain decode's peak at the same size). Decoders:
``taesd`` (ComfyUI's TAESD decoder) and ``sd15-vae`` (ComfyUI's full-size SD1.5 VAE decoder,
~49 M parameters); auditor: the pack's tiny open_clip at 64 px, open_clip ViT-B-32 at 512 px.
CPU only here: the figures are relative to the plain decode measured the same way in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(spec: dict) -> dict:
    import resource
    import time

    import torch

    torch.set_num_threads(spec["threads"])
    sys.path.insert(0, spec["comfy"])
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    sys.path.insert(0, str(REPO.parent))
    pack = REPO.name
    import importlib

    referee = importlib.import_module(f"{pack}.tipai_core.editing.referee")
    backbones = importlib.import_module(f"{pack}.tipai_core.auditor.backbones")
    auditor_mod = importlib.import_module(f"{pack}.tipai_core.auditor.auditor")

    size, h = spec["size"], spec["size"] // 8
    if spec["decoder"] == "taesd":
        from comfy.taesd.taesd import TAESD

        dec = TAESD(latent_channels=4).taesd_decoder
    else:
        from comfy.ldm.modules.diffusionmodules.model import Decoder

        dec = Decoder(ch=128, out_ch=3, ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0,
                      resamp_with_conv=True, in_channels=3, resolution=256, z_channels=4)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in dec.parameters():
            # ComfyUI builds these without init (memory as found): every value is set here
            p.copy_(
                torch.randn(p.shape, generator=gen) / max(1, p[0].numel()) ** 0.5
                if p.dim() > 1
                else torch.zeros_like(p)
            )
    dec.eval().requires_grad_(False)

    def decode(z, scale=1.0):
        return ((dec(z) + 1) / 2).clamp(0, 1)

    arch = backbones.TINY_ARCH if size <= 64 else "ViT-B-32"
    backbones.register_config_dir(backbones.CONFIG_DIR)
    import open_clip

    model = open_clip.create_model(arch, pretrained=None).eval().requires_grad_(False)
    embed = open_clip.get_model_config(arch)["embed_dim"]
    bb = backbones.OpenClipBackbone(
        model, open_clip.get_tokenizer(arch), arch, embed, backbones.OPENAI_MEAN, backbones.OPENAI_STD
    )
    aud = auditor_mod.Auditor(bb).eval()
    for p in aud.parameters():
        p.requires_grad_(False)
    z = torch.randn(1, 4, h, h, generator=gen)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if spec["mode"] == "plain":
        with torch.no_grad():
            decode(z)
        per = time.perf_counter() - t
    else:
        s = referee.RefereeSettings(steps=spec["steps"], lr=0.05, n_augment=spec["k"], micro_batch=spec["mb"])
        referee.referee_refine(z, "a red circle", aud, decode, settings=s)
        per = (time.perf_counter() - t) / spec["steps"]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": per, "peak_mib": max(0, after - before) / 1024}


def _run(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"case {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--sizes", default="64,512")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0
    sys.path.insert(0, str(REPO / "scripts"))
    import host

    comfy = str(host.host_dir() / "ComfyUI")
    print(f"{'size':>5} {'decoder':<9} {'case':<18} {'s/step':>8} {'peak MiB':>9} {'x plain':>8}")
    for size in (int(v) for v in args.sizes.split(",")):
        for decoder in ("taesd", "sd15-vae"):
            base = {"size": size, "decoder": decoder, "steps": args.steps, "threads": args.threads, "comfy": comfy}
            plain = _run({**base, "mode": "plain", "k": 0, "mb": 1})
            print(f"{size:>5} {decoder:<9} {'plain decode':<18} {plain['seconds']:>8.3f} {plain['peak_mib']:>9.0f}")
            for k, mb in ((0, 1), (1, 1), (8, 1), (8, 4), (8, 8)):
                r = _run({**base, "mode": "refine", "k": k, "mb": mb})
                ratio = r["peak_mib"] / plain["peak_mib"] if plain["peak_mib"] > 0 else float("nan")
                case = f"refine K={k} mb={mb}"
                print(f"{size:>5} {decoder:<9} {case:<18} {r['seconds']:>8.3f} {r['peak_mib']:>9.0f} {ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
