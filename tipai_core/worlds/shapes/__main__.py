"""``python -m tipai_core.worlds.shapes <command>``: train | sample | clip | auditor | check.

* ``train --steps N``: train (or continue) the base model of a recipe in the cache;
* ``sample``: plain samples of held-out prompts, their checker accuracy and a PNG grid;
* ``clip``: train the auditor's tiny open_clip backbone contrastively (``clip.py``);
* ``auditor``: the backbone (if missing), DETONATE pairs and Stage A heads (``auditor.py``);
* ``check``: the checker's accuracy on rendered scenes with known truth;
* ``review``: numbered pages of generated images with the checker's readings, to check by eye.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tipai_core.worlds.shapes")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("train", "sample", "review"):
        p = sub.add_parser(name)
        p.add_argument("--steps", type=int, default=6000, help="training steps of the base model")
        p.add_argument("--size", type=int, default=24)
        p.add_argument("--batch", type=int, default=64)
        p.add_argument("--lr", type=float, default=2e-3)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--cache", default=None, help="cache root (default $TIPAI_CACHE or ~/.cache/tipai)")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--time-limit", type=float, default=None, help="stop training after this many seconds")
        p.add_argument("--device", default="cpu", help="cpu or cuda: where the network trains")
        p.add_argument("--workers", type=int, default=0, help="processes that render batches ahead")
    r = sub.choices["review"]
    r.add_argument("--n", type=int, default=96)
    r.add_argument("--out", default="shapes_review")
    s = sub.choices["sample"]
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--sample-steps", type=int, default=20)
    s.add_argument("--cfg", type=float, default=3.0)
    s.add_argument("--png", default=None)
    k = sub.add_parser("clip", help="train the auditor's tiny open_clip backbone contrastively")
    k.add_argument("--steps", type=int, default=1000)
    k.add_argument("--batch", type=int, default=64)
    k.add_argument("--size", type=int, default=24)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--out", default=None, help="weights file (default <cache>/shapes/auditor/clip.safetensors)")
    k.add_argument("--cache", default=None)
    k.add_argument("--threads", type=int, default=1)
    k.add_argument("--device", default="cpu")
    k.add_argument("--workers", type=int, default=0, help="processes that render batches ahead")
    a = sub.add_parser("auditor", help="contrastive backbone (if missing), pairs, Stage A heads via the scorer")
    a.add_argument("--clip-steps", type=int, default=1000)
    a.add_argument("--pairs", type=int, default=2000)
    a.add_argument("--val-pairs", type=int, default=500)
    a.add_argument(
        "--pair-kind",
        choices=("audit", "fresh"),
        default="audit",
        help="audit: in-place edits, degraded like mid-sampling previews; fresh: laid out apart, clean",
    )
    a.add_argument("--epochs", type=int, default=20)
    a.add_argument("--seed", type=int, default=0, help="another seed trains an independent auditor (auditor-seed<N>)")
    a.add_argument("--size", type=int, default=24)
    a.add_argument("--cache", default=None)
    a.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("--n", type=int, default=300)
    c.add_argument("--size", type=int, default=32)
    args = ap.parse_args(argv)

    import torch

    if args.cmd == "check":
        from .validate import validate

        t = time.time()
        print(
            f"checker accuracy at {args.size}px on {args.n} chosen+rejected pairs: "
            f"{validate(args.n, args.size):.4f} ({time.time() - t:.1f}s)"
        )
        return 0
    torch.set_num_threads(args.threads)
    if args.cmd == "clip":
        from pathlib import Path

        from .clip import train_clip
        from .train import cache_root

        out = (
            Path(args.out) if args.out else Path(args.cache or cache_root()) / "shapes" / "auditor" / "clip.safetensors"
        )
        t = time.time()
        train_clip(
            out,
            steps=args.steps,
            batch=args.batch,
            size=args.size,
            seed=args.seed,
            device=args.device,
            workers=args.workers,
        )
        print(f"wrote {out} in {time.time() - t:.0f}s")
        return 0
    if args.cmd == "auditor":
        from .auditor import auditor_dir, train_auditor

        t = time.time()
        m = train_auditor(
            auditor_dir(args.cache, args.seed),
            clip_steps=args.clip_steps,
            n_pairs=args.pairs,
            n_val=args.val_pairs,
            epochs=args.epochs,
            size=args.size,
            pairs=args.pair_kind,
            seed=args.seed,
        )
        print(
            f"auditor in {auditor_dir(args.cache, args.seed)}: held-out pair-AUC {m['trained']['pair_auc']:.3f} "
            f"(zero-shot {m['zero_shot']['pair_auc']:.3f}) in {time.time() - t:.0f}s"
        )
        return 0
    from .model import ModelConfig
    from .train import TrainConfig, load_model, recipe_dir, train

    cfg = TrainConfig(model=ModelConfig(size=args.size), batch=args.batch, lr=args.lr, seed=args.seed)
    if args.cmd == "train":
        t = time.time()
        folder = train(
            cfg, args.steps, args.cache, time_limit=args.time_limit, device=args.device, workers=args.workers
        )
        print(f"trained {folder} in {time.time() - t:.0f}s")
        return 0
    if args.cmd == "review":
        from .review import main_review

        model, meta = load_model(recipe_dir(cfg, args.cache))
        print(f"model {meta['recipe']} at step {meta['step']}")
        main_review(model, args.n, args.out)
        return 0
    from .evaluate import plain_accuracy

    model, meta = load_model(recipe_dir(cfg, args.cache))
    print(f"model {meta['recipe']} at step {meta['step']}")
    plain_accuracy(model, n=args.n, steps=args.sample_steps, cfg=args.cfg, png=args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
