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
* drops labelled candidates whose numbers are non-finite or out of range (NaN scores, a NaN label), and
  says so: the count and the first records are printed and kept in the file under metrics.logs;
* writes the calibration file (JSON, no NaN) and a reliability diagram PNG next to it (matplotlib);
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
from .cli import StageParser, check_ranges, number, run_command, seed_option


def build_parser() -> argparse.ArgumentParser:
    p = StageParser(
        prog="python -m tipai_core.train calibrate",
        description="Stage C: fit δ, τ_P(t), τ_F(t) on held-out tournaments with true-win labels.",
        tag="calibrate",
    )
    p.add_argument("--logs", nargs="+", required=True, help=".records.jsonl files or folders of them")
    p.add_argument("--out", required=True, help="calibration file to write (.json), e.g. models/tipai/calibration.json")
    p.add_argument("--png", help="reliability diagram (default: <out stem>.reliability.png)")
    p.add_argument("--method", choices=("isotonic", "platt"), default="isotonic")
    number(p, "--target", float, 0, 1, lo_open=True, default=0.9, help="Pr[true win | margin ≥ δ] to reach")
    number(
        p,
        "--eval-fraction",
        float,
        0,
        1,
        lo_open=True,
        hi_open=True,
        default=0.5,
        help="share of tournaments held out for the report",
    )
    number(p, "--keep-early", float, 0, 1, lo_open=True, default=0.95, help="share of true winners τ_P, τ_F keep early")
    number(p, "--keep-late", float, 0, 1, lo_open=True, default=0.9, help="share of true winners τ_P, τ_F keep late")
    p.add_argument("--auditor", default=None, help="name of the auditor the logs were scored with (its backbone file)")
    number(p, "--bins", int, 1, 1000, default=10, help="bins of the ECE and the reliability diagram")
    p.add_argument(
        "--listwise",
        choices=("none", "listnet", "pl"),
        default="none",
        help="also refine the judge listwise on the true-win labels (reported, kept in the file)",
    )
    seed_option(p)
    return p


SCORE_LIMIT = 1e6  # |S|, |F|, |B|, |P| above this are corrupt numbers (no auditor scores near them)


def _real(v: Any) -> bool:
    """A finite number (not a bool) with |v| <= SCORE_LIMIT; a huge JSON integer is not one."""
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= SCORE_LIMIT
    except OverflowError:
        return False


def _unusable(s: dict, i: int, label: Any) -> str | None:
    """Why labelled candidate ``i`` of a record cannot be used (None: it can)."""
    for key in ("S", "F", "B"):
        if not _real(s[key][i]):
            return f"scores.{key}[{i}]={s[key][i]!r}"
    if not _real(s["S"][0]):
        return f"scores.S[0]={s['S'][0]!r} (the control)"
    if not s["P"][i] or not all(_real(v) for v in s["P"][i]):
        return f"scores.P[{i}]={s['P'][i]!r}"
    if isinstance(label, float) and not math.isfinite(label):
        return f"true_win[{i}]={label!r}"
    return None


def _check_auditor(rec: Any, seen: dict[str, Any], where: str) -> None:
    """One auditor per calibration: the same policy classes (and P width) in every labelled record."""
    cls = list(rec.scores.get("classes") or [])
    width = len(rec.scores["P"][0])
    if "classes" not in seen:
        seen.update(classes=cls, width=width)
    elif cls != seen["classes"] or width != seen["width"]:
        raise ValueError(
            f"the logs mix auditors with policy classes {seen['classes']} ({seen['width']} wide) and {cls} "
            f"({width} wide) at {where}; calibrate each apart"
        )


def _take(rec: Any, k: int, rows: dict[str, list], stats: LogStats) -> None:
    """Append the usable labelled candidates of record ``k`` to ``rows``; drop (count, name) the others."""
    s, lost = rec.scores, []
    for i in range(1, len(rec.actions) + 1):
        if rec.true_win[i] is None:
            continue
        why = _unusable(s, i, rec.true_win[i]) if _real(rec.t) else f"t={rec.t!r}"
        if why is not None:
            lost.append(why)
            continue
        rows["m"].append(float(s["S"][i]) - float(s["S"][0]))
        rows["y"].append(float(bool(rec.true_win[i])))
        rows["P"].append([float(v) for v in s["P"][i]])
        rows["F"].append(float(s["F"][i]))
        rows["B"].append(float(s["B"][i]))
        rows["t"].append(float(rec.t))
        rows["tid"].append(k)
    if lost:
        stats.dropped_candidates += len(lost)
        stats.drop(f"{len(lost)} labelled candidate(s) with non-finite or out-of-range numbers: {', '.join(lost)}")


def collect(logs: Sequence[str | Path]) -> tuple[dict[str, torch.Tensor], list[str], LogStats]:
    """Per labelled candidate: margin, label, P (classes), F, t, tournament id. Streams the logs.

    A labelled candidate whose numbers are non-finite or beyond ±SCORE_LIMIT (NaN scores, a NaN label)
    is dropped; each record that loses one is counted in ``stats.dropped`` and named in
    ``stats.dropped_errors``, the candidates in ``stats.dropped_candidates``.
    """
    stats = LogStats()
    rows: dict[str, list] = {k: [] for k in ("m", "y", "P", "F", "B", "t", "tid")}
    seen: dict[str, Any] = {}
    for k, rec in enumerate(iter_records(logs, stats)):
        if rec.true_win is None:
            continue
        _check_auditor(rec, seen, stats.where)
        _take(rec, k, rows, stats)
    require_records(stats, "calibrate")
    if not rows["m"]:
        if stats.dropped:
            raise ValueError(
                f"calibrate: every labelled candidate of {', '.join(stats.files)} was dropped for non-finite or "
                f"out-of-range numbers, e.g. {stats.dropped_errors[0]}"
            )
        raise ValueError(
            f"calibrate: none of the {stats.read} records has a true_win label; the log field "
            "'true_win' (N+1 entries, index 0 null) must be filled by a human or a stronger judge"
        )
    data = {k: torch.tensor(v, dtype=torch.float64) for k, v in rows.items() if k != "tid"}
    data["tid"] = torch.tensor(rows["tid"])
    return data, seen.get("classes") or [], stats


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
        top1 = {k: "n/a" if j[k] is None else f"{j[k]:.3f}" for k in ("top1_raw", "top1_refined")}
        weights = [v if v is None else round(v, 3) for v in j["weights"]]
        say(
            f"[calibrate] listwise judge ({j['loss']}): weights {weights} over "
            f"{j['components']}; held-out top-1 agreement with the true winners: raw S {top1['top1_raw']} -> "
            f"refined {top1['top1_refined']} over {j['tournaments_eval']} tournaments"
        )
    say(f"[calibrate] wrote {out} and {png}")


def _finite_or_none(x: Any) -> Any:
    """``x`` with every NaN or infinite float replaced by None: the calibration file holds no NaN."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    return x


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
    options = {"target": target, "eval_fraction": eval_fraction, "keep_early": keep_early, "keep_late": keep_late}
    check_ranges(build_parser(), {**options, "bins": bins, "seed": seed})  # the command's bounds, before any work
    data, classes, stats = collect([logs] if isinstance(logs, (str, Path)) else list(logs))
    say(f"[calibrate] {stats.summary()}; {len(data['m'])} labelled candidates, classes {classes}")
    for e in stats.errors[:5]:
        say(f"[calibrate] skipped {e}")
    if stats.dropped:
        say(
            f"[calibrate] dropped {stats.dropped_candidates} labelled candidate(s) of {stats.dropped} record(s): "
            f"non-finite or out-of-range numbers (kept in the file under metrics.logs)"
        )
    for e in stats.dropped_errors[:5]:
        say(f"[calibrate] dropped {e}")
    try:
        fit, held = split(data, eval_fraction, seed)
    except ValueError as exc:
        raise ValueError(f"{exc} ({stats.summary()}: {', '.join(stats.files)})") from None
    g = fit_map(method, fit["m"], fit["y"])
    raw_p, cal_p = torch.sigmoid(held["m"]), g(held["m"])
    metrics = _map_metrics(fit, held, raw_p, cal_p, bins)
    delta, delta_metrics = _delta(fit, held, target, say)
    metrics.update(delta_metrics)
    tau_P, tau_F = thresholds(fit, keep_early, keep_late)
    if listwise != "none":
        try:
            metrics["judge"] = refine(fit, held, listwise)
        except ValueError as exc:
            raise ValueError(f"{exc} (logs: {', '.join(stats.files)})") from None
    metrics["logs"] = {
        "records_read": stats.read,
        "corrupt_lines_skipped": stats.skipped,
        "records_dropped": stats.dropped,
        "candidates_dropped": stats.dropped_candidates,
        "dropped": stats.dropped_errors[:20],
    }
    metrics = _finite_or_none(metrics)
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
