"""The accuracy–compute curve: every method at budgets of 1×, 2×, 4×, 8× the plain sampler's evaluations.

Compute is counted in batch rows through the denoiser ("evals", N candidates in one call count N),
per image; the judge's share (auditor images, decodes) and the wall time are reported beside it. At
each budget B (B·n_steps evals per image) and for each judge (the checker oracle, the learned auditor;
every method uses the same judge for its choices):

* ``best-of-B``: B whole images from B start latents (j = 0 is the plain one), the judge's S picks;
* ``fk-B``: FK steering with k = B particles from the same start latents, resampled by the judge's S
  of x̂0 every ``fk_every`` steps over the middle of the trajectory, the judge's best particle kept;
* ``tipai-global-B``: the TiPAI loop with one coarse, early, *global* tournament at step g (the design's
  "coarse scales early"): N candidates re-noise the whole image from x̂0 at step g back to σ_0 with fresh
  noise (d = g, jitter 1) and re-denoise to step g, at (g + 1) evals each; the auditor scores control and
  candidates on their x̂0 previews and the guard keeps the control unless a candidate beats it. N is the
  largest with ``n_steps + N·(g + 1) + 1 ≤ B·n_steps`` (the 1: the restart after an accepted edit);
* ``tipai-finals-B``: the same preview tournament at step g, but nothing is accepted on previews:
  the m candidates with the best preview S are finished (m·(n − g − 1) evals, their first step reuses
  the editor's x̂0) and the judge compares them with the control on final images, the guard deciding
  (``loop/finals.py``). N is the largest with ``n + N·(g + 1) + m·(n − g − 1) ≤ B·n``;
* ``tipai-local``: the local repair loop of ``EvalSettings`` at its own compute (one point per judge).

Accuracy is the share of prompts with every clause satisfied (the checker), with bootstrap 95%
intervals over prompts; "regress" is the share of images whose satisfied clauses fell below the
plain image's. ``compare`` gives TiPAI − best-of-N and TiPAI − FK at each budget, paired.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ...editing.diffusion_editor import DiffusionEditor
from ...guard.tournament_guard import TournamentGuard
from ...loop.audit_schedule import AuditSchedule
from ...loop.audit_step import AuditSuite
from ...loop.finals import FinalsPlan, finals_candidates
from ...loop.fk_steering import FKSettings, resample_every
from ...policy.actions import FixedKnobPolicy
from ...records.files import atomic_write
from ...worlds.shapes.checker import Checker
from ...worlds.shapes.evaluate import clause_accuracy
from ...worlds.shapes.model import PixelDecoder, ShapesUNet
from ..bootstrap import interval, paired
from .runs import run_best_of_n, run_fk, run_plain, run_tipai
from .settings import EvalSettings, MethodResult, Pieces, make_suite


@dataclass(frozen=True)
class CurveSettings:
    budgets: tuple[int, ...] = (1, 2, 4, 8)
    global_step: int = 4  # g of the global tournament; tuned per judge on the development set
    fk_lam: float = 10.0  # FK's temperature λ; tuned per judge on the development set
    fk_eta: float = 1.0  # FK's transitions: Euler-ancestral (η = 1), so resampled duplicates diverge
    fk_every: int = 5
    finals_step: int = 8  # g of the finals' preview tournament; tuned per judge on the development set
    finalists: int = 1  # m, the candidates finished for the final tournament; tuned with g
    local: bool = True  # also run the local loop (EvalSettings) at its own compute

    def __post_init__(self) -> None:
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise ValueError(f"budgets must be whole multiples >= 1 of the plain evaluations, got {self.budgets}")
        if self.global_step < 1:
            raise ValueError(f"global_step must be >= 1, got {self.global_step}")


def global_candidates(budget: int, n_steps: int, g: int) -> int:
    """The largest N with n_steps + N·(g + 1) + 1 ≤ budget·n_steps (0: the budget holds no tournament)."""
    return max(0, (n_steps * (budget - 1) - 1) // (g + 1))


def global_suite(s: EvalSettings, auditor, g: int, n: int) -> AuditSuite:
    """One whole-image tournament at step g: N renoised trajectories (d = g, jitter 1, the base CFG)."""
    knobs: dict[str, tuple[list, list[float]]] = {
        "editor": (["renoise"], [1.0]),
        "depth": ([g], [1.0]),
        "jitter": ([1.0], [1.0]),
        "cfg_inside": ([s.cfg], [1.0]),
        "scope": (["global"], [1.0]),
    }
    return AuditSuite(
        decoder=PixelDecoder(),
        miner=lambda view, prompt, user_mask=None: [],  # never asked: a global step holds the whole image
        auditor=auditor,
        editor=DiffusionEditor(),
        policy=FixedKnobPolicy(knobs),
        guard=TournamentGuard(delta=s.delta),
        schedule=AuditSchedule(every=s.n_steps, first=g, skip_last=0, scales=(1.0,), global_until=g + 1),
        n_candidates=n,
        seed=0,
    )


def fk_settings(s: EvalSettings, c: CurveSettings, k: int, lam: float) -> FKSettings:
    return FKSettings(
        k=k, lam=lam, potential="difference", resample_at=resample_every(s.n_steps, c.fk_every), eta=c.fk_eta
    )


@dataclass
class Point:
    judge: str
    method: str  # family: plain, best-of-N, fk, tipai-global, tipai-finals, tipai-local
    budget: int | None
    size: int  # N or k (candidates, particles, images)
    result: MethodResult


def judge_points(
    model: ShapesUNet,
    items,
    s: EvalSettings,
    c: CurveSettings,
    judge: str,
    piece: Pieces,
    plain: MethodResult,
    memo: dict,
    log=print,
    lam: float | None = None,
    g: int | None = None,
    finals: tuple | None = None,
    budget_done: Callable[[list[Point]], None] | None = None,
) -> list[Point]:
    """Every method of one judge at every budget; ``finals`` is the (g, m[, two_looks]) of tipai-finals.
    ``budget_done`` sees this judge's points so far after each budget."""
    lam = c.fk_lam if lam is None else lam
    g = c.global_step if g is None else g
    gf, mf, two = (
        (c.finals_step, c.finalists, False) if finals is None else (*finals[:2], bool(finals[2:3] and finals[2]))
    )
    points = [Point(judge, "plain", 1, 1, plain)]
    for b in c.budgets:
        if b < 2:
            continue
        best = run_best_of_n(model, items, s, b, piece.auditor, first=plain, memo=memo)
        points.append(Point(judge, "best-of-N", b, b, best))
        fk = run_fk(model, items, s, piece.auditor, fk_settings(s, c, b, lam))
        points.append(Point(judge, "fk", b, b, fk))
        n = global_candidates(b, s.n_steps, g)
        if n >= 1:
            tg = run_tipai(model, items, s, global_suite(s, piece.auditor, g, n))
            tg.name = f"tipai-global-{n}@{g}"
            points.append(Point(judge, "tipai-global", b, n, tg))
        nf = finals_candidates(b, s.n_steps, gf, mf) if gf <= s.n_steps - 2 else 0  # g needs a step after it
        if nf >= 1:
            plan = FinalsPlan(gf, mf, preview_win=two)
            tf = run_tipai(model, items, s, global_suite(s, piece.auditor, gf, nf), finals=plan)
            tf.name = f"tipai-finals-{nf}@{gf}m{mf}" + ("x2" if two else "")
            points.append(Point(judge, "tipai-finals", b, nf, tf))
        log(f"[{judge}] budget {b}x done")
        if budget_done is not None:
            budget_done(points)
    if c.local:
        tl = run_tipai(model, items, s, make_suite(s, piece.auditor, piece.miner, piece.policy, piece.guard))
        tl.name = "tipai-local"
        points.append(Point(judge, "tipai-local", None, s.n_candidates, tl))
    return points


def _verdicts(images, items, checker: Checker) -> tuple[list[float], list[int]]:
    """Per image: 1.0 when every clause holds, and the number of clauses that hold."""
    _, v = clause_accuracy(images, [p for p, _ in items], checker)
    return [float(all(x)) for x in v], [sum(x) for x in v]


def _mean(v) -> float:
    return sum(v) / len(v) if v else 0.0


def rows_of(points: list[Point], items, checker: Checker, n_steps: int) -> tuple[list[dict], dict]:
    """Per point: accuracy with its interval, regress rate with its interval, costs per image.
    Also the per-prompt correctness of each point (for the paired comparisons), keyed by (judge, method, budget)."""
    _, plain_sat = _verdicts(points[0].result.images, items, checker)
    rows, correct = [], {}
    for p in points:
        allv, sat = _verdicts(p.result.images, items, checker)
        worse = [float(a < b) for a, b in zip(sat, plain_sat)]
        acc, lo, hi = interval(allv)
        reg, rlo, rhi = interval(worse)
        r = p.result
        rows.append(
            {
                "judge": p.judge,
                "method": p.method,
                "name": r.name,
                "budget": p.budget,
                "size": p.size,
                "accuracy": acc,
                "ci": [lo, hi],
                "regress": reg,
                "regress_ci": [rlo, rhi],
                "evals_per_image": _mean(r.evals),
                "evals_x_plain": _mean(r.evals) / n_steps,
                "calls_per_image": _mean(r.calls),
                "auditor_images_per_image": _mean(r.auditor_images),
                "decodes_per_image": _mean(r.decodes),
                "seconds_per_image": r.seconds / len(items),
                "tournaments": r.tournaments,
                "accept_rate": (r.accepted / r.tournaments) if r.tournaments else None,
            }
        )
        correct[(p.judge, p.method, p.budget)] = allv
    return rows, correct


def compare(correct: dict, judges: list[str], budgets: tuple[int, ...]) -> list[dict]:
    """Each TiPAI family (global, finals) − best-of-N and − FK at each budget, paired over prompts."""
    out = []
    for j in judges:
        for b in budgets:
            for family in TIPAI_FAMILIES:
                t = correct.get((j, family, b))
                if t is None:
                    continue
                for peer in ("best-of-N", "fk"):
                    other = correct.get((j, peer, b))
                    if other is not None:
                        d, lo, hi = paired(t, other)
                        out.append({"judge": j, "budget": b, "method": family, "vs": peer, "diff": d, "ci": [lo, hi]})
    return out


TIPAI_FAMILIES = ("tipai-global", "tipai-finals")


def text_table(rows: list[dict], comparisons: list[dict]) -> str:
    head = (
        f"{'judge':<8} {'method':<22} {'budget':>6} {'all':>6} {'95% CI':>15} {'regress':>7} {'evals/img':>9} "
        f"{'x plain':>7} {'aud.img':>7} {'decodes':>7} {'s/img':>6} {'accept':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        acc = "-" if r["accept_rate"] is None else f"{r['accept_rate']:.2f}"
        lines.append(
            f"{r['judge']:<8} {r['name']:<22} {str(r['budget'] or '-'):>6} {r['accuracy']:>6.3f} "
            f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] {r['regress']:>7.3f} {r['evals_per_image']:>9.1f} "
            f"{r['evals_x_plain']:>7.2f} {r['auditor_images_per_image']:>7.1f} {r['decodes_per_image']:>7.1f} "
            f"{r['seconds_per_image']:>6.3f} {acc:>6}"
        )
    if comparisons:
        lines += ["", "TiPAI minus its peer at the same budget (paired over prompts, bootstrap 95% CI):"]
        for c in comparisons:
            lines.append(
                f"  [{c['judge']}] {c.get('method', 'tipai-global'):<12} {c['budget']}x vs {c['vs']:<9} "
                f"{c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
            )
    return "\n".join(lines)


def plot(rows: list[dict], judge: str, path, title: str) -> None:
    """One PNG per judge: accuracy against evaluations per image (log scale), with the 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    styles = {
        "plain": "kx",
        "best-of-N": "o-",
        "fk": "s-",
        "tipai-global": "D-",
        "tipai-finals": "^-",
        "tipai-local": "*",
    }
    mine = [r for r in rows if r["judge"] == judge]
    for method, style in styles.items():
        pts = [r for r in mine if r["method"] == method]
        if method == "best-of-N":
            pts = [r for r in mine if r["method"] == "plain"] + pts  # best-of-1 is the plain sampler
        if not pts:
            continue
        x = [r["evals_per_image"] for r in pts]
        y = [r["accuracy"] for r in pts]
        err = [[r["accuracy"] - r["ci"][0] for r in pts], [r["ci"][1] - r["accuracy"] for r in pts]]
        ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=method, markersize=6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("denoiser evaluations per image (batch rows)")
    ax.set_ylabel("whole-prompt accuracy (checker)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))  # a killed run leaves no half a PNG
    plt.close(fig)


def _finals_row(model, items, s: EvalSettings, piece: Pieces, judge: str, budget: int, g: int, m: int,
                two_looks: bool, checker: Checker, log) -> dict | None:  # fmt: skip
    """One development run of tipai-finals at (g, m); None when the budget holds no m finalists."""
    n = finals_candidates(budget, s.n_steps, g, m)
    if n < 1:
        return None
    plan = FinalsPlan(g, m, preview_win=two_looks)
    r = run_tipai(model, items, s, global_suite(s, piece.auditor, g, n), finals=plan)
    acc = _mean(_verdicts(r.images, items, checker)[0])
    log(f"[dev {judge}] tipai-finals g={g} m={m} N={n}{' two looks' if two_looks else ''}: {acc:.3f} "
        f"at {_mean(r.evals):.1f} evals/img")  # fmt: skip
    row = {"judge": judge, "method": "tipai-finals", "g": g, "m": m, "N": n, "accuracy": acc, "evals": _mean(r.evals)}
    return {**row, "two_looks": True} if two_looks else row


def tune(
    model: ShapesUNet,
    items,
    s: EvalSettings,
    c: CurveSettings,
    pieces: dict[str, Pieces],
    log=print,
    budget: int = 4,
    global_steps: tuple[int, ...] = (5, 8, 10, 12),
    lams: tuple[float, ...] = (1.0, 10.0, 100.0),
    finalists: tuple[int, ...] = (1, 2, 3),
    finals_steps: tuple[int, ...] = (5, 8),
) -> tuple[dict[str, dict], list[dict]]:
    """On the development items: per judge, the global step g, the finals' (g, m) and FK's λ that
    score best at ``budget`` (the finals' "two looks" rule is tried at their best (g, m)).
    Returns ({judge: {"global_step": g, "fk_lam": λ, "finals": (g, m, two_looks)}}, the rows tried)."""
    checker = Checker()
    picks: dict[str, dict] = {}
    tried: list[dict] = []
    plain = run_plain(model, items, s)
    tried.append({"judge": None, "method": "plain", "accuracy": _mean(_verdicts(plain.images, items, checker)[0])})
    memo: dict = {}
    for judge, piece in pieces.items():
        best = run_best_of_n(model, items, s, budget, piece.auditor, first=plain, memo=memo)
        acc = _mean(_verdicts(best.images, items, checker)[0])
        tried.append({"judge": judge, "method": "best-of-N", "N": budget, "accuracy": acc})
        log(f"[dev {judge}] plain {tried[0]['accuracy']:.3f}, best-of-{budget} {acc:.3f} (for reference)")
        best_g: tuple[int | None, float] = (None, -1.0)
        best_l: tuple[float | None, float] = (None, -1.0)
        for g in global_steps:
            n = global_candidates(budget, s.n_steps, g)
            r = run_tipai(model, items, s, global_suite(s, piece.auditor, g, n))
            acc = _mean(_verdicts(r.images, items, checker)[0])
            row = {"judge": judge, "method": "tipai-global", "g": g, "N": n, "accuracy": acc, "evals": _mean(r.evals)}
            tried.append(row)
            log(f"[dev {judge}] tipai-global g={g} N={n}: {acc:.3f} at {_mean(r.evals):.1f} evals/img")
            best_g = max(best_g, (g, acc), key=lambda t: t[1])
        best_f: tuple[tuple | None, float] = (None, -1.0)
        for g in finals_steps:
            for m in finalists:
                fr = _finals_row(model, items, s, piece, judge, budget, g, m, False, checker, log)
                if fr is not None:
                    tried.append(fr)
                    best_f = max(best_f, ((g, m, False), float(fr["accuracy"])), key=lambda t: t[1])
        if best_f[0] is not None:  # the picked (g, m) with "two looks": a finalist must also win its preview
            g, m, _ = best_f[0]
            fr = _finals_row(model, items, s, piece, judge, budget, g, m, True, checker, log)
            if fr is not None:
                tried.append(fr)
                best_f = max(best_f, ((g, m, True), float(fr["accuracy"])), key=lambda t: t[1])
        for lam in lams:
            r = run_fk(model, items, s, piece.auditor, fk_settings(s, c, budget, lam))
            acc = _mean(_verdicts(r.images, items, checker)[0])
            tried.append({"judge": judge, "method": "fk", "lam": lam, "k": budget, "accuracy": acc})
            log(f"[dev {judge}] fk k={budget} λ={lam}: {acc:.3f}")
            best_l = max(best_l, (lam, acc), key=lambda t: t[1])
        picks[judge] = {"global_step": best_g[0], "fk_lam": best_l[0], "finals": best_f[0]}
    return picks, tried


def loop_quality(
    model, s: EvalSettings, c: CurveSettings, pieces: dict[str, Pieces], picks: dict, n: int, out
) -> list[dict]:
    """How well the learned judge's tournaments can be won and ranked, global (at the 4x budget's N) and
    local, on n prompts of the calibration set (neither the development nor the held-out set)."""
    from ...worlds.shapes.evaluate import calibration_set
    from .diagnose import quality_line, tournament_quality

    if n <= 0 or "learned" not in pieces:
        return []
    p = pieces["learned"]
    g = picks.get("learned", {}).get("global_step", c.global_step)
    k = global_candidates(4, s.n_steps, g)
    suites = {
        f"learned global g={g} N={k}": lambda a: global_suite(s, a, g, k),
        "learned local": lambda a: make_suite(s, a, p.miner),
    }
    rows = []
    for label, suite_for in suites.items():
        row = tournament_quality(
            model, s, suite_for, p.auditor, calibration_set(n), out / f"quality-{label.split()[1]}.jsonl"
        )
        print("in-loop " + quality_line(label, row))
        rows.append({"suite": label, **row})
    return rows


def run_curve(
    model: ShapesUNet,
    items,
    s: EvalSettings,
    c: CurveSettings,
    pieces: dict[str, Pieces],
    picks: dict[str, dict] | None = None,
    log=print,
    partial: Callable[[dict], None] | None = None,
) -> dict:
    """Every judge's points on ``items``; returns {"rows", "comparisons", "text", "settings"}.
    ``partial`` gets the same dict after each budget of each judge, so a run cut off later keeps what it measured."""
    t0 = time.time()
    plain = run_plain(model, items, s)
    memo: dict = {}
    points: list[Point] = []
    checker = Checker()

    def summary(pts: list[Point], judges: list[str]) -> dict:
        # rows_of compares every point with the first, the plain run (one plain row per judge)
        rows, correct = rows_of(pts, items, checker, s.n_steps)
        comparisons = compare(correct, judges, c.budgets)
        return {
            "rows": rows,
            "comparisons": comparisons,
            "text": text_table(rows, comparisons),
            "settings": {"eval": asdict(s), "curve": asdict(c), "picks": picks or {}},
            "seconds": time.time() - t0,
        }

    done: list[str] = []
    for judge, piece in pieces.items():

        def budget_done(ps: list[Point], judge: str = judge) -> None:
            if partial is not None:
                partial(summary(points + ps, [*done, judge]))

        pk = (picks or {}).get(judge, {})
        points.extend(
            judge_points(
                model,
                items,
                s,
                c,
                judge,
                piece,
                plain,
                memo,
                log,
                lam=pk.get("fk_lam"),
                g=pk.get("global_step"),
                finals=tuple(pk["finals"]) if pk.get("finals") else None,
                budget_done=budget_done,
            )
        )
        done.append(judge)
    return summary(points, done)
