"""Stage C: calibrate the guard on held-out tournaments.

    python -m tipai_core.train calibrate --logs output/tipai_logs --auditor tipai_tiny_auditor.safetensors \
        --out models/tipai/calibration.json

Reads tournament logs (``*.records.jsonl``, streamed) whose candidates carry a ``true_win`` label (a human,
a stronger judge or a held-out preference set supplies it), splits the tournaments into a fit half and an
evaluation half, and:

* fits Platt or isotonic from the raw margin m = S_i - S_0 to Pr[true win | m]; prints NLL and ECE of the
  raw σ(m) and of the calibrated map on the evaluation half;
* chooses δ = min{Δ ≥ 0 : Pr[true win | m ≥ Δ] ≥ --target} on the fit half and prints the win rate of
  "m ≥ δ" on the evaluation half;
* chooses τ_P(t) per class and τ_F(t) as ROC operating points over the true winners: the strictest
  threshold that keeps --keep-early (early audits, t < 0.5) or --keep-late (late) of the true winners; the
  late threshold is never laxer than the early one;
* writes the calibration file (JSON) and a reliability diagram PNG next to it (matplotlib);
* with --listwise listnet|pl, refines the judge listwise (tspo.refine_judge): a linear judge
  s_i = w · x_i over the components x_i = (S_i - S_0, F_i, min_c P_i, B_i) is fit to the true-win labels of
  each tournament's candidates (ListNet: -Σ softmax(y/τ)·log softmax(s); Plackett–Luce: -log PL(winners
  first | s)); the file keeps w under metrics.judge with the held-out top-1 agreement of raw S and of s
  (the share of tournaments with a true winner whose argmax is one).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..diffusion.schedules import Schedule
from ..guard.calibration_file import Calibration
from ..guard.fitting import (
    choose_delta,
    choose_tau,
    expected_calibration_error,
    nll,
    reliability_table,
    stricter_late,
)
from ..guard.maps import fit_map
from ..guard.plots import reliability_diagram
from ..records.tournament_log import LogStats, iter_records, require_records
from .cli import run_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tipai_core.train calibrate",
        description="Stage C: fit δ, τ_P(t), τ_F(t) on held-out tournaments with true-win labels.",
    )
    p.add_argument("--logs", nargs="+", required=True, help=".records.jsonl files or folders of them")
    p.add_argument("--out", required=True, help="calibration file to write (.json), e.g. models/tipai/calibration.json")
    p.add_argument("--png", help="reliability diagram (default: <out stem>.reliability.png)")
    p.add_argument("--method", choices=("isotonic", "platt"), default="isotonic")
    p.add_argument("--target", type=float, default=0.9, help="Pr[true win | margin ≥ δ] to reach")
    p.add_argument("--eval-fraction", type=float, default=0.5, help="share of tournaments held out for the report")
    p.add_argument("--keep-early", type=float, default=0.95, help="share of true winners τ_P, τ_F keep early")
    p.add_argument("--keep-late", type=float, default=0.9, help="share of true winners τ_P, τ_F keep late (stricter)")
    p.add_argument("--auditor", default=None, help="name of the auditor the logs were scored with (its backbone file)")
    p.add_argument("--bins", type=int, default=10)
    p.add_argument(
        "--listwise",
        choices=("none", "listnet", "pl"),
        default="none",
        help="also refine the judge listwise on the true-win labels (reported, kept in the file)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def collect(logs: Sequence[str | Path]) -> tuple[dict[str, torch.Tensor], list[str], LogStats]:
    """Per labelled candidate: margin, label, P (classes), F, t, tournament id. Streams the logs."""
    stats = LogStats()
    m, y, P, F, B, t, tid = [], [], [], [], [], [], []
    classes: list[str] | None = None
    for k, rec in enumerate(iter_records(logs, stats)):
        if rec.true_win is None:
            continue
        cls = list(rec.scores.get("classes") or [])
        if classes is None:
            classes = cls
        elif cls != classes:
            raise ValueError(f"the logs mix auditors with policy classes {classes} and {cls}; calibrate each apart")
        s = rec.scores
        for i in range(1, len(rec.actions) + 1):
            if rec.true_win[i] is None or not math.isfinite(s["S"][i]):
                continue
            m.append(s["S"][i] - s["S"][0])
            y.append(float(bool(rec.true_win[i])))
            P.append([float(v) for v in s["P"][i]])
            F.append(float(s["F"][i]))
            B.append(float(s["B"][i]))
            t.append(float(rec.t))
            tid.append(k)
    require_records(stats, "calibrate")
    if not m:
        raise ValueError(
            f"calibrate: none of the {stats.read} records has a true_win label; the log field "
            "'true_win' (N+1 entries, index 0 null) must be filled by a human or a stronger judge"
        )
    data = {
        "m": torch.tensor(m, dtype=torch.float64),
        "y": torch.tensor(y, dtype=torch.float64),
        "P": torch.tensor(P, dtype=torch.float64),
        "F": torch.tensor(F, dtype=torch.float64),
        "B": torch.tensor(B, dtype=torch.float64),
        "t": torch.tensor(t, dtype=torch.float64),
        "tid": torch.tensor(tid),
    }
    return data, classes or [], stats


def split(data: dict[str, torch.Tensor], fraction: float, seed: int) -> tuple[dict, dict]:
    """By tournament, so that the candidates of one tournament never sit on both sides."""
    ids = data["tid"].unique()
    perm = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))]
    held = set(perm[: max(1, int(round(fraction * len(ids))))].tolist())
    mask = torch.tensor([int(i) in held for i in data["tid"].tolist()])
    if mask.all() or not mask.any():
        raise ValueError("calibrate: too few tournaments to hold some out; log more tournaments")
    return {k: v[~mask] for k, v in data.items()}, {k: v[mask] for k, v in data.items()}


def thresholds(fit: dict[str, torch.Tensor], keep_early: float, keep_late: float) -> tuple[Schedule, Schedule]:
    """τ_P(t) per class and τ_F(t): linear from the early to the late operating point, stricter late."""
    win = fit["y"] > 0.5
    early, late = fit["t"] < 0.5, fit["t"] >= 0.5

    def tau(score: torch.Tensor, sel: torch.Tensor, keep: float) -> float:
        # keep `keep` of the true winners: flag a winner only in the lowest (1 - keep) tail (TPR = keep)
        s = score[win & sel] if (win & sel).any() else score[win]
        return choose_tau(s, torch.ones_like(s, dtype=torch.bool), 1.0 - keep) if len(s) else 0.0

    n_cls = fit["P"].shape[1]
    pe = [tau(fit["P"][:, c], early, keep_early) for c in range(n_cls)]
    pl = [tau(fit["P"][:, c], late, keep_late) for c in range(n_cls)]
    pe, pl = stricter_late(pe, pl)
    fe, fl = stricter_late([tau(fit["F"], early, keep_early)], [tau(fit["F"], late, keep_late)])
    return Schedule.linear(pe, pl), Schedule.linear(fe[0], fl[0])


JUDGE_COMPONENTS = ("S_cand - S_ctrl", "F", "min_c P", "B")


def judge_lists(d: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """x ``[T, N, 4]`` (JUDGE_COMPONENTS) and labels ``[T, N]`` of the tournaments whose N candidates all carry
    a label, N the most common such count."""
    ids, counts = d["tid"].unique(return_counts=True)
    if not len(ids):
        return torch.zeros(0, 0, 4, dtype=torch.float64), torch.zeros(0, 0, dtype=torch.float64)
    n = int(counts.mode().values)
    keep = ids[counts == n]
    rows = torch.isin(d["tid"], keep)
    order = torch.argsort(d["tid"][rows], stable=True)
    x = torch.stack([d["m"], d["F"], d["P"].min(dim=1).values, d["B"]], dim=-1)[rows][order]
    return x.reshape(-1, n, 4), d["y"][rows][order].reshape(-1, n)


def top1_agreement(score: torch.Tensor, y: torch.Tensor) -> float | None:
    """Share of tournaments with a true winner whose highest-scored candidate is one."""
    has = y.max(-1).values > 0.5
    if not has.any():
        return None
    pick = y.gather(-1, score.argmax(-1, keepdim=True))[:, 0]
    return float(pick[has].mean())


def refine(fit: dict, held: dict, loss: str) -> dict:
    """The listwise judge refinement of the module docstring; its weights and held-out top-1 agreements."""
    from ..policy.tspo import refine_judge

    xf, yf = judge_lists(fit)
    xh, yh = judge_lists(held)
    if len(xf) < 2 or len(xh) < 1:
        raise ValueError("calibrate --listwise: too few fully labelled tournaments (every candidate needs true_win)")
    mean, std = xf.reshape(-1, 4).mean(0), xf.reshape(-1, 4).std(0).clamp_min(1e-6)
    w = refine_judge((xf - mean) / std, yf, loss=loss).double()
    refined = ((xh - mean) / std) @ w
    return {
        "loss": loss,
        "components": list(JUDGE_COMPONENTS),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "weights": w.tolist(),
        "top1_raw": top1_agreement(xh[..., 0], yh),
        "top1_refined": top1_agreement(refined, yh),
        "tournaments_eval": int(len(xh)),
    }


def _map_metrics(fit: dict, held: dict, raw_p: torch.Tensor, cal_p: torch.Tensor, bins: int) -> dict[str, Any]:
    """NLL and ECE on the held-out half of the raw σ(m) (``raw_p``) and of the calibrated g(m) (``cal_p``)."""
    metrics = {
        "candidates_fit": int(len(fit["m"])),
        "candidates_eval": int(len(held["m"])),
        "nll_raw": nll(raw_p, held["y"]),
        "nll_calibrated": nll(cal_p, held["y"]),
        "ece_raw": expected_calibration_error(raw_p, held["y"], bins),
        "ece_calibrated": expected_calibration_error(cal_p, held["y"], bins),
    }
    metrics["ece_ratio"] = metrics["ece_raw"] / max(metrics["ece_calibrated"], 1e-12)
    return metrics


def _delta(fit: dict, held: dict, target: float, say: Callable[..., Any]) -> tuple[float, dict[str, Any]]:
    """δ from the fit half, and how often "m ≥ δ" truly wins on the held-out half."""
    delta = choose_delta(fit["m"], fit["y"], target)
    if delta is None:
        say(f"[calibrate] no margin reaches Pr[true win] ≥ {target} on the fit half; δ = the largest margin")
        delta = float(fit["m"].max().clamp_min(0))
    above = held["m"] >= delta
    return delta, {
        "delta": delta,
        "delta_eval_win_rate": float(held["y"][above].mean()) if above.any() else None,
        "delta_eval_count": int(above.sum()),
    }


def _report(
    metrics: dict,
    delta: float,
    target: float,
    tau_P: Schedule,
    tau_F: Schedule,
    out: Path,
    png: Path,
    say: Callable[..., Any],
) -> None:
    say(
        f"[calibrate] eval half: NLL raw {metrics['nll_raw']:.4f} -> {metrics['nll_calibrated']:.4f}   "
        f"ECE raw {metrics['ece_raw']:.4f} -> {metrics['ece_calibrated']:.4f} ({metrics['ece_ratio']:.1f}x lower)"
    )
    dw = metrics["delta_eval_win_rate"]
    say(
        f"[calibrate] δ = {delta:.4f} (target {target}); on the eval half Pr[true win | m ≥ δ] = "
        f"{'n/a' if dw is None else f'{dw:.3f}'} over {metrics['delta_eval_count']} candidates"
    )
    say(
        f"[calibrate] τ_P(t) early {list(tau_P.values[0])} late {list(tau_P.values[-1])}; "
        f"τ_F(t) {tau_F.values[0]:.3f} -> {tau_F.values[-1]:.3f}"
    )
    if "judge" in metrics:
        j = metrics["judge"]
        say(
            f"[calibrate] listwise judge ({j['loss']}): weights {[round(v, 3) for v in j['weights']]} over "
            f"{j['components']}; held-out top-1 agreement with the true winners: raw S {j['top1_raw']:.3f} -> "
            f"refined {j['top1_refined']:.3f} over {j['tournaments_eval']} tournaments"
        )
    say(f"[calibrate] wrote {out} and {png}")


def reliability_path(out: Path) -> Path:
    """The default reliability diagram next to the calibration file: <out stem>.reliability.png."""
    stem = out.with_suffix("")
    return stem.with_name(stem.name + ".reliability.png")


def fit_calibration(
    logs: Sequence[str | Path],
    out: str | Path,
    *,
    png: str | Path | None = None,
    method: str = "isotonic",
    target: float = 0.9,
    eval_fraction: float = 0.5,
    keep_early: float = 0.95,
    keep_late: float = 0.9,
    auditor: str | None = None,
    bins: int = 10,
    listwise: str = "none",
    seed: int = 0,
    say: Callable[..., Any] = print,
) -> dict[str, Any]:
    """Stage C on the labelled tournaments of ``logs`` (the module docstring); writes the calibration file
    ``out`` and its reliability diagram (``png``, default ``<out stem>.reliability.png``).

    Returns the file names and the metrics the file keeps. Raises ValueError on unusable logs.
    """
    data, classes, stats = collect([logs] if isinstance(logs, (str, Path)) else list(logs))
    say(f"[calibrate] {stats.summary()}; {len(data['m'])} labelled candidates, classes {classes}")
    for e in stats.errors[:5]:
        say(f"[calibrate] skipped {e}")
    fit, held = split(data, eval_fraction, seed)
    g = fit_map(method, fit["m"], fit["y"])
    raw_p, cal_p = torch.sigmoid(held["m"]), g(held["m"])
    metrics = _map_metrics(fit, held, raw_p, cal_p, bins)
    delta, delta_metrics = _delta(fit, held, target, say)
    metrics.update(delta_metrics)
    tau_P, tau_F = thresholds(fit, keep_early, keep_late)
    if listwise != "none":
        metrics["judge"] = refine(fit, held, listwise)
    cal = Calibration(
        delta=delta,
        tau_P=tau_P,
        tau_F=tau_F,
        auditor={"name": auditor, "classes": classes},
        target=target,
        map={**g.to_dict(), "input": "S_cand - S_ctrl"},
        metrics=metrics,
    )
    cal_path = cal.save(out)
    png_path = Path(png) if png else reliability_path(cal_path)
    reliability_diagram(
        {"raw σ(m)": reliability_table(raw_p, held["y"], bins), method: reliability_table(cal_p, held["y"], bins)},
        png_path,
    )
    _report(metrics, delta, target, tau_P, tau_F, cal_path, png_path, say)
    return {"calibration": str(cal_path), "png": str(png_path), **metrics}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The command's parsed arguments, handed to ``fit_calibration``."""
    return fit_calibration(**vars(args))


def main(argv: list[str] | None = None) -> int:
    return run_command("calibrate", build_parser(), run, argv)
