"""``python -m tipai_core.eval shapes``: train or load the base model, build the rows, print the table."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ...records.files import atomic_write
from ...worlds.shapes.checker import Checker
from ...worlds.shapes.generate import SAMPLE_SIGMA_MAX
from ...worlds.shapes.model import ShapesUNet
from .diagnose import diagnose
from .settings import EvalSettings, Pieces, learned_pieces, oracle_pieces
from .stage_c import calibrated_pieces, fit_stage_c, stage_c_key
from .table import evaluate


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m tipai_core.eval shapes")
    # 3902: the steps the reported model reached in 3000 s on one CPU thread (worlds/shapes/RESULTS.md); a fresh
    # run trains the same batches to the same step, so it rebuilds that model up to the machine's float rounding
    ap.add_argument(
        "--train-steps",
        type=int,
        default=3902,
        help="base-model steps (trained, or continued if the cache has fewer; about 50 min on one CPU thread)",
    )
    ap.add_argument("--reuse", action="store_true", help="use the cached model as it is, never train")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--size", type=int, default=24)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=64, help="held-out prompts")
    ap.add_argument("--steps", type=int, default=20, help="sampling steps")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--sigma-max", type=float, default=SAMPLE_SIGMA_MAX, help="first σ of the sampling schedule")
    ap.add_argument("--png", default="shapes_eval.png")
    ap.add_argument("--json", default=None)
    ap.add_argument("--log-dir", default=None, help="write the TiPAI tournaments (with checker true_win) as JSONL here")
    ap.add_argument(
        "--calibration-prompts",
        type=int,
        default=64,
        help="prompts of the calibration set whose tournaments fit Stage C and TSPO (0: skip those rows)",
    )
    ap.add_argument(
        "--pairs",
        choices=("audit", "fresh"),
        default="audit",
        help="Stage A pairs: audit = in-place edits, degraded like mid-sampling previews; fresh = apart, clean",
    )
    ap.add_argument(
        "--diagnose",
        type=int,
        default=0,
        metavar="N",
        help="first, on N calibration prompts, which of the learned auditor and miner limits the loop",
    )
    ap.add_argument(
        "--loop-judge",
        action="store_true",
        help="the learned judge is Stage A trained on the loop's own previews and final images of training "
        "prompts, labelled by the checker (eval/shapes/loop_judge.py; trained into the cache when missing)",
    )
    ap.add_argument("--target", type=float, default=0.9, help="Stage C: Pr[true win | margin ≥ δ] to reach")
    ap.add_argument(
        "--auditor",
        choices=("oracle", "learned", "both"),
        default="both",
        help="oracle: the checker-based auditor and miner; learned: tiny open_clip + Stage A heads "
        "(trained into the cache when missing) with the Grad-CAM RegionMiner",
    )
    curve = ap.add_argument_group("the accuracy-compute curve (--curve)")
    curve.add_argument(
        "--curve",
        action="store_true",
        help="every method at budgets of the plain evaluations, both judges, intervals, plots (eval/shapes/curve.py)",
    )
    curve.add_argument("--budgets", default="1,2,4,8", help="multiples of the plain sampler's evaluations")
    curve.add_argument("--dev", type=int, default=48, help="development prompts to tune g and FK's λ on (0: defaults)")
    curve.add_argument("--out-dir", default="shapes_curve", help="table (txt, json) and one plot per judge go here")
    curve.add_argument(
        "--no-local", action="store_true", help="leave out the local repair loop's point (the slowest method)"
    )
    ap.add_argument(
        "--model",
        default=None,
        help="a base-model folder (model.safetensors + model.json) to evaluate instead of the cached recipe",
    )
    ap.add_argument("--base-seed", type=int, default=0, help="training seed of the base-model recipe")
    ap.add_argument(
        "--referee",
        action="store_true",
        help="referee inversion of the plain samples: the optimised auditor's rise, the checker, and a second "
        "auditor of another seed (trained into the cache when missing)",
    )
    ap.add_argument(
        "--learned-editor",
        action="store_true",
        help="Stage B1: train the learned editor on in-place pairs (into the cache when missing) and run the "
        "loop with it against the diffusion editor (editor_table.py)",
    )
    region = ap.add_argument_group("Inpaint Biases: which text conditions a mined region's edit (--region-text)")
    region.add_argument(
        "--region-text",
        action="store_true",
        help="the learned local loop with the base prompt, the parsed phrase (an upper bound), the auditor's "
        "phrase and the LLM's phrase inside each region (eval/shapes/region_text_table.py)",
    )
    region.add_argument(
        "--llm",
        default=None,
        help="a local causal LM (a .gguf file or a transformers folder) for the LLM arm; without it, no LLM arm",
    )
    return ap


def base_model(args: argparse.Namespace) -> tuple[ShapesUNet, dict]:
    """The cached base model (``--reuse``), or trained / continued to ``--train-steps``; (model, its meta)."""
    from ...worlds.shapes.model import ModelConfig
    from ...worlds.shapes.train import TrainConfig, ensure_model, load_model, recipe_dir

    if args.model:
        model, meta = load_model(Path(args.model))
        print(f"base model from {args.model}: recipe {meta.get('recipe')} at step {meta.get('step')}")
        return model, meta
    cfg = TrainConfig(model=ModelConfig(size=args.size), seed=args.base_seed)
    if args.reuse:
        model, meta = load_model(recipe_dir(cfg, args.cache))
    else:
        model, meta = ensure_model(cfg, args.train_steps, args.cache)
    print(f"base model {meta['recipe']} at step {meta['step']} ({recipe_dir(cfg, args.cache)})")
    return model, meta


def learned_rows(args: argparse.Namespace, model: ShapesUNet, meta: dict, s: EvalSettings) -> dict[str, Pieces]:
    """The learned auditor's rows (Stage A trained into the cache when missing or of other pairs), and with
    ``--calibration-prompts`` its Stage C guard and TSPO policy rows."""
    from ...worlds.shapes.auditor import auditor_dir, heads_pairs, train_auditor

    folder = auditor_dir(args.cache)
    if not (folder / "heads.safetensors").is_file() or heads_pairs(folder) != args.pairs:
        train_auditor(folder, size=args.size, pairs=args.pairs)  # the backbone is reused when present
    if args.loop_judge:
        from .loop_judge import LoopJudgeSettings, train_loop_judge

        folder = train_loop_judge(model, meta, folder, s, LoopJudgeSettings())
    metrics = json.loads((folder / "heads.metrics.json").read_text())
    print(
        f"learned auditor {folder}: held-out pair-AUC {metrics['trained']['pair_auc']:.3f} "
        f"(zero-shot {metrics['zero_shot']['pair_auc']:.3f}), "
        f"patch pair-AUC {metrics['trained']['patch_pair_auc']:.3f}, "
        f"on held-out {'loop' if args.loop_judge else metrics.get('pairs', 'fresh')} pairs"
    )
    auditor, miner = learned_pieces(folder)
    rows = {"learned": Pieces(auditor, miner, "learned")}
    if args.calibration_prompts > 0:
        key = stage_c_key(meta, folder, s, args.calibration_prompts, args.target)
        stage = folder.parent / f"stagec-{key}"
        cal, pol = fit_stage_c(model, s, rows["learned"], stage, args.calibration_prompts, args.target)
        c = json.loads(cal.read_text())
        print(
            f"Stage C ({stage}): δ = {c['delta']:.4g}, τ_F {c['tau_F']}; "
            f"eval-half Pr[true win | m ≥ δ] = {c['metrics'].get('delta_eval_win_rate')}"
        )
        rows["learned+cal"] = calibrated_pieces(rows["learned"], cal, None)
        rows["learned+tspo+cal"] = calibrated_pieces(rows["learned"], cal, pol)
    return rows


def diagnose_pieces(model: ShapesUNet, s: EvalSettings, learned: Pieces, n: int, log_dir: str | None) -> None:
    """``--diagnose``: every combination of the learned and the oracle auditor and miner."""
    oracle_a, oracle_m = oracle_pieces(Checker())
    diagnose(
        model,
        s,
        {
            "learned auditor + learned miner": (learned.auditor, learned.miner),
            "learned auditor + oracle miner": (learned.auditor, oracle_m),
            "oracle auditor + learned miner": (oracle_a, learned.miner),
            "oracle auditor + oracle miner": (oracle_a, oracle_m),
        },
        n,
        Path(log_dir or ".") / "diagnose",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, meta = base_model(args)
    if args.train_only:
        return 0
    from ...worlds.shapes.validate import validate

    print(
        f"checker on rendered scenes with known truth (300 chosen + 300 rejected, every clause) at "
        f"{args.size}px: {validate(300, args.size):.4f}"
    )
    s = EvalSettings(
        n_prompts=args.n, n_steps=args.steps, cfg=args.cfg, n_candidates=args.candidates, sigma_max=args.sigma_max
    )
    if args.curve:
        return curve_main(args, model, meta, s, t0)
    if args.referee:
        return referee_main(args, model, t0)
    if args.learned_editor:
        return learned_editor_main(args, model, t0)
    if args.region_text:
        return region_text_main(args, model, s, t0)
    pieces: dict = {}
    if args.auditor in ("oracle", "both"):
        pieces["oracle"] = oracle_pieces(Checker())
    if args.auditor in ("learned", "both"):
        pieces.update(learned_rows(args, model, meta, s))
    if args.diagnose > 0 and "learned" in pieces:
        diagnose_pieces(model, s, pieces["learned"], args.diagnose, args.log_dir)
    text, rows = evaluate(model, s, args.png, pieces=pieces, log_dir=args.log_dir)
    if "oracle" in pieces:
        print("[oracle] rows: auditor and miner read the checker itself (worlds/shapes/oracle.py): an upper bound")
    print(text)
    print(f"total {time.time() - t0:.0f}s; grid: {args.png}")
    if args.json:
        atomic_write(
            Path(args.json),
            json.dumps(
                {"settings": s.__dict__, "rows": rows, "model": meta["recipe"], "model_step": meta["step"]},
                indent=1,
                default=str,
            ),
        )
    return 0


def referee_main(args: argparse.Namespace, model: ShapesUNet, t0: float) -> int:
    """``--referee``: see ``referee_table.py``."""
    from ...worlds.shapes.auditor import auditor_dir, heads_pairs, load_auditor, train_auditor
    from .referee_table import referee_table, tournament_table

    auditors = []
    for seed in (0, 1):
        folder = auditor_dir(args.cache, seed)
        if not (folder / "heads.safetensors").is_file() or heads_pairs(folder) != args.pairs:
            train_auditor(folder, size=args.size, pairs=args.pairs, seed=seed)
        auditors.append(load_auditor(folder))
        print(f"auditor {'AB'[seed]}: {folder}")
    text, rows = referee_table(model, auditors[0], auditors[1], args.n, args.steps, args.cfg)
    s = EvalSettings(
        n_prompts=args.n, n_steps=args.steps, cfg=args.cfg, n_candidates=args.candidates, sigma_max=args.sigma_max
    )
    auditor, miner = learned_pieces(auditor_dir(args.cache, 0))
    t_text, t_rows = tournament_table(model, s, auditor, miner, args.n)
    print("\n" + text + "\n\n" + t_text)
    print(f"total {time.time() - t0:.0f}s")
    if args.json:
        atomic_write(Path(args.json), json.dumps({"refine": rows, "tournaments": t_rows, "n": args.n}, indent=1))
    return 0


def learned_editor_main(args: argparse.Namespace, model: ShapesUNet, t0: float) -> int:
    """``--learned-editor``: see ``editor_table.py``."""
    from ...worlds.shapes.auditor import auditor_dir, heads_pairs, train_auditor
    from .editor_table import editor_table, ensure_editor

    folder = auditor_dir(args.cache)
    if not (folder / "heads.safetensors").is_file() or heads_pairs(folder) != args.pairs:
        train_auditor(folder, size=args.size, pairs=args.pairs)
    path = ensure_editor(folder, args.size)
    metrics = json.loads(path.with_suffix(".metrics.json").read_text())
    print(f"learned editor {path}")
    for tag in ("before", "after", "ceiling"):
        print(f"  validation {tag:<8} " + "  ".join(f"{k}={v:+.4f}" for k, v in metrics[tag].items()))
    s = EvalSettings(
        n_prompts=args.n, n_steps=args.steps, cfg=args.cfg, n_candidates=args.candidates, sigma_max=args.sigma_max
    )
    auditor, miner = learned_pieces(folder)
    text, rows = editor_table(model, s, auditor, miner, path, args.n)
    print("\n" + text)
    print(f"total {time.time() - t0:.0f}s")
    if args.json:
        atomic_write(Path(args.json), json.dumps({"validation": metrics, "tournaments": rows, "n": args.n}, indent=1))
    return 0


def region_text_main(args: argparse.Namespace, model: ShapesUNet, s: EvalSettings, t0: float) -> int:
    """``--region-text``: see ``region_text_table.py``."""
    from ...prompting.llm import load_causal_lm
    from ...worlds.shapes.auditor import auditor_dir, load_auditor
    from ...worlds.shapes.evaluate import held_out
    from .region_text_table import region_text_table

    lm = load_causal_lm(args.llm) if args.llm else None  # a missing or corrupt file is named before any run
    folder = auditor_dir(args.cache)
    auditor = load_auditor(folder)
    print(f"learned auditor {folder}; language model {args.llm or '(none: the LLM arm is left out)'}")
    text, out = region_text_table(model, s, auditor, held_out(args.n), lm)
    print(text)
    print(f"total {time.time() - t0:.0f}s")
    if args.json:
        atomic_write(Path(args.json), json.dumps(out, indent=1))
    return 0


def curve_main(args: argparse.Namespace, model: ShapesUNet, meta: dict, s: EvalSettings, t0: float) -> int:
    """``--curve``: tune on the development set, then run every method on the held-out set once."""
    from ...worlds.shapes.evaluate import development_set, held_out
    from .curve import CurveSettings, loop_quality, plot, run_curve, tune

    try:
        budgets = tuple(int(b) for b in args.budgets.split(","))
        c = CurveSettings(budgets=budgets, local=not args.no_local)
    except ValueError as exc:
        print(f"error: --budgets: {exc}")
        return 2
    pieces: dict[str, Pieces] = {}
    if args.auditor in ("oracle", "both"):
        a, m = oracle_pieces(Checker())
        pieces["oracle"] = Pieces(a, m, "oracle")
    if args.auditor in ("learned", "both"):
        args.calibration_prompts = 0  # Stage C and TSPO rows are the table's (without --curve), not the curve's
        pieces["learned"] = learned_rows(args, model, meta, s)["learned"]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    picks: dict[str, dict] = {}
    tried: list[dict] = []
    if args.dev > 0:
        picks, tried = tune(model, development_set(args.dev), s, c, pieces)
        print(f"development set ({args.dev} prompts): picks {picks}")
    quality = loop_quality(model, s, c, pieces, picks, args.dev, out)

    def partial(r: dict) -> None:  # what a run cut off later still leaves
        atomic_write(out / "curve.partial.txt", r["text"] + "\n")
        atomic_write(out / "curve.partial.json", json.dumps(r, indent=1, default=str))

    result = run_curve(model, held_out(args.n), s, c, pieces, picks, partial=partial)
    result.update({"development": tried, "model": meta.get("recipe"), "model_step": meta.get("step")})
    result["loop_quality"] = quality
    result["n_held_out"], result["n_development"] = args.n, args.dev
    print(result["text"])
    atomic_write(out / "curve.txt", result["text"] + "\n")
    atomic_write(out / "curve.json", json.dumps(result, indent=1, default=str))
    for judge in pieces:
        title = f"ShapesWorld, {args.n} held-out prompts, {judge} judge"
        plot(result["rows"], judge, out / f"curve-{judge}.png", title)
    print(f"total {time.time() - t0:.0f}s; table, JSON and plots in {out}/")
    return 0
