"""The comparison: plain, then per TiPAI row the loop and the best-of-N matched to its compute, scored by
the checker into one table (and a grid of the images)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ...records.files import atomic_write
from ...worlds.shapes.checker import Checker
from ...worlds.shapes.evaluate import clause_accuracy, held_out, save_grid
from ...worlds.shapes.model import ShapesUNet
from .runs import LabellingAuditor, run_best_of_n, run_plain, run_tipai
from .settings import EvalSettings, MethodResult, Pieces, make_suite, oracle_pieces


def table(results: list[MethodResult], items, checker: Checker, plain: MethodResult) -> tuple[str, list[dict]]:
    prompts = [p for p, _ in items]
    _, plain_v = clause_accuracy(plain.images, prompts, checker)
    rows = []
    for r in results:
        acc, v = clause_accuracy(r.images, prompts, checker)
        worse = sum(
            1 for i in range(len(items)) if r.accepted_boxes and r.accepted_boxes[i] and sum(v[i]) < sum(plain_v[i])
        )
        rows.append(
            {
                "method": r.name,
                **{k: acc.get(k) for k in ("binding", "count", "relation", "all")},
                "calls_per_image": sum(r.calls) / len(r.calls),
                "evals_per_image": sum(r.evals) / len(r.evals),
                "seconds_per_image": r.seconds / len(items),
                "accept_rate": (r.accepted / r.tournaments) if r.tournaments else None,
                "tournaments": r.tournaments,
                "regressions": worse / len(items) if r.accepted_boxes else None,
            }
        )

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = (
        f"{'method':<24} {'binding':>8} {'count':>6} {'relation':>8} {'all':>6} {'calls/img':>9} "
        f"{'evals/img':>9} {'s/img':>6} {'accept':>7} {'tourn.':>6} {'regress':>7}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row['method']:<24} {f(row['binding'], '.3f'):>8} {f(row['count'], '.3f'):>6} "
            f"{f(row['relation'], '.3f'):>8} {f(row['all'], '.3f'):>6} {row['calls_per_image']:>9.1f} "
            f"{row['evals_per_image']:>9.1f} "
            f"{row['seconds_per_image']:>6.2f} {f(row['accept_rate'], '.3f'):>7} {row['tournaments']:>6} "
            f"{f(row['regressions'], '.3f'):>7}"
        )
    return "\n".join(lines), rows


def outlines_for(r: MethodResult, size: int) -> list[torch.Tensor | None]:
    out: list[torch.Tensor | None] = []
    for boxes in r.accepted_boxes:
        if not boxes:
            out.append(None)
            continue
        m = torch.zeros(size, size)
        for y0, x0, y1, x1 in boxes:
            m[y0:y1, x0:x1] = 1
        out.append(m)
    return out


def evaluate(
    model: ShapesUNet,
    s: EvalSettings,
    png: str | Path | None = None,
    log=print,
    pieces: dict | None = None,
    log_dir: str | Path | None = None,
) -> tuple[str, list[dict]]:
    """Plain, then for each row label in ``pieces`` (label -> ``Pieces`` or an (auditor, miner) pair;
    default: the checker oracle) TiPAI and the best-of-N whole images matched to its evaluations.
    Returns the printed table and its rows."""
    items = held_out(s.n_prompts)
    checker = Checker()
    pieces = pieces or {"oracle": oracle_pieces(checker)}
    plain = run_plain(model, items, s)
    log(f"plain done ({plain.seconds:.0f}s)")
    results, cols = [plain], [plain.images]
    outl: list[list[torch.Tensor | None]] = [[None] * len(items)]
    memo: dict[int, MethodResult] = {}
    for label, piece in pieces.items():
        if not isinstance(piece, Pieces):
            a, m = piece
            piece = Pieces(a, m, judge=label)
        auditor = LabellingAuditor(piece.auditor, checker) if log_dir else piece.auditor
        suite = make_suite(s, auditor, piece.miner, piece.policy, piece.guard)
        log_path = Path(log_dir) / f"tournaments-{label}.records.jsonl" if log_dir else None
        if log_path is not None and log_path.exists():
            log_path.unlink()  # one evaluation, one log: a rerun must not append twice
        tipai = run_tipai(model, items, s, suite, log_path)
        tipai.name = f"tipai[{label}]"
        log(f"{tipai.name} done ({tipai.seconds:.0f}s)")
        # N whole images cost N·n_steps evaluations of D; match TiPAI's evaluations (candidates count)
        n = max(2, math.ceil(sum(tipai.evals) / len(tipai.evals) / s.n_steps - 1e-9))
        name = f"best-of-{n}[{piece.judge}]"
        if all(r.name != name for r in results):
            best = run_best_of_n(model, items, s, n, piece.auditor, first=plain, memo=memo)
            best.name = name
            log(f"{best.name} done ({best.seconds:.0f}s)")
            results.append(best)
            cols.append(best.images)
            outl.append([None] * len(items))
        results.append(tipai)
        cols.append(tipai.images)
        outl.append(outlines_for(tipai, model.config.size))
    text, rows = table(results, items, checker, plain)
    if png:
        save_grid(cols, png, outlines=outl, labels=[r.name for r in results])
        atomic_write(
            Path(png).with_suffix(".txt"),
            "columns: "
            + " | ".join(r.name for r in results)
            + " (accepted regions outlined in magenta)\n"
            + "\n".join(p for p, _ in items)
            + "\n",
        )
    return text, rows
