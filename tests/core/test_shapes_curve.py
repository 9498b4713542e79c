"""The accuracy–compute curve at CI size: budgets respected, nothing accepted = plain bit for bit, intervals."""

import json
import math

import numpy as np
import pytest
import torch

from tipai_core.eval.bootstrap import interval, paired
from tipai_core.eval.shapes.curve import CurveSettings, global_candidates, global_suite, plot, run_curve
from tipai_core.eval.shapes.runs import run_plain, run_tipai
from tipai_core.eval.shapes.settings import EvalSettings, Pieces, oracle_pieces
from tipai_core.guard.tournament_guard import TournamentGuard
from tipai_core.policy.actions import Action
from tipai_core.worlds.shapes.checker import Checker
from tipai_core.worlds.shapes.evaluate import calibration_set, development_set, held_out
from tipai_core.worlds.shapes.model import ModelConfig, ShapesUNet

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(size=16, channels=(8, 16, 16), text_dim=16, text_layers=1, heads=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ShapesUNet(TINY).eval()


def test_global_candidates_fill_the_budget_and_never_pass_it():
    for n_steps in (6, 20):
        for g in (1, 3, 5):
            for b in (1, 2, 4, 8):
                n = global_candidates(b, n_steps, g)
                assert n == 0 or n_steps + n * (g + 1) + 1 <= b * n_steps  # the restart included
                assert n_steps + (n + 1) * (g + 1) + 1 > b * n_steps  # one more would not fit
    assert global_candidates(1, 20, 4) == 0


def test_a_global_action_edits_the_whole_latent():
    from tipai_core.editing.diffusion_editor import action_mask

    region = torch.zeros(1, 1, 8, 8)
    region[..., 2:4, 2:4] = 1
    assert torch.equal(action_mask(region, Action(scope="global")), torch.ones_like(region))
    assert torch.equal(action_mask(region, Action()), region)
    with pytest.raises(ValueError, match="scope must be one of"):
        Action(scope="everywhere")


def test_global_tournament_stays_in_budget_and_is_plain_when_nothing_is_accepted(model):
    s = EvalSettings(n_prompts=3, n_steps=6)
    items = held_out(3)
    plain = run_plain(model, items, s)
    a, _ = oracle_pieces(Checker())
    g, b = 2, 2
    n = global_candidates(b, s.n_steps, g)
    suite = global_suite(s, a, g, n)
    res = run_tipai(model, items, s, suite)
    assert res.tournaments == len(items)  # one whole-image tournament per image, no miner asked
    assert all(e <= b * s.n_steps for e in res.evals)
    assert all(e in (s.n_steps + n * (g + 1), s.n_steps + n * (g + 1) + 1) for e in res.evals)
    # a guard that never accepts: the plain images, bit for bit
    suite.guard = TournamentGuard(delta=1e9)
    never = run_tipai(model, items, s, suite)
    assert never.accepted == 0
    assert all(torch.equal(x, y) for x, y in zip(never.images, plain.images))


def test_bootstrap_intervals_of_known_values():
    m, lo, hi = interval([1.0] * 10)
    assert m == lo == hi == 1.0
    m, lo, hi = interval([0.0, 1.0] * 50)
    assert m == 0.5 and lo < 0.5 < hi
    # the interval's half-width is about 1.96 standard errors: sqrt(0.25 / 100) = 0.05
    assert math.isclose((hi - lo) / 2, 1.96 * 0.05, rel_tol=0.15)
    d, dlo, dhi = paired([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    assert d == dlo == dhi == 0.0
    assert interval(np.arange(5.0)) == interval(np.arange(5.0))  # a fixed seed: reruns agree
    with pytest.raises(ValueError, match="same prompts"):
        paired([1.0], [1.0, 0.0])


def test_development_held_out_and_calibration_sets_are_apart():
    dev, test, cal = development_set(64), held_out(64), calibration_set(64)
    seeds = [set(x for _, x in v) for v in (dev, test, cal)]
    assert not (seeds[0] & seeds[1]) and not (seeds[0] & seeds[2]) and not (seeds[1] & seeds[2])


def test_the_curve_runs_every_method_and_writes_a_plot(model, tmp_path):
    s = EvalSettings(n_prompts=2, n_steps=6, audit_first=2, audit_every=2, audit_skip_last=1, n_candidates=2)
    a, m = oracle_pieces(Checker())
    c = CurveSettings(budgets=(1, 2), global_step=2, fk_every=2, finals_step=2, finalists=1)
    partials: list[dict] = []
    out = run_curve(model, held_out(2), s, c, {"oracle": Pieces(a, m, "oracle")}, partial=partials.append)
    # one report after the 2x budget, before the local loop: its rows are the final table's first rows, as measured
    assert len(partials) == 1 and partials[0]["rows"] == out["rows"][:5] and partials[0]["comparisons"]
    methods = [(r["method"], r["budget"]) for r in out["rows"]]
    assert methods == [
        ("plain", 1),
        ("best-of-N", 2),
        ("fk", 2),
        ("tipai-global", 2),
        ("tipai-finals", 2),
        ("tipai-local", None),
    ]
    by = {(r["method"], r["budget"]): r for r in out["rows"]}
    assert by[("plain", 1)]["evals_per_image"] == 6 and by[("best-of-N", 2)]["evals_per_image"] == 12
    assert by[("fk", 2)]["evals_per_image"] == 12
    assert by[("tipai-global", 2)]["evals_per_image"] <= 12
    # finals at g = 2, m = 1: the plain run, N = 1 candidate of g + 1 = 3, one finalist of 6 - 2 - 1 = 3 steps
    assert by[("tipai-finals", 2)]["evals_per_image"] == 12 and by[("tipai-finals", 2)]["size"] == 1
    assert by[("tipai-finals", 2)]["tournaments"] == 2 * 2  # a preview and a final tournament per prompt
    for r in out["rows"]:
        assert r["ci"][0] <= r["accuracy"] <= r["ci"][1]
    assert {(c["method"], c["vs"]) for c in out["comparisons"]} == {
        (f, p) for f in ("tipai-global", "tipai-finals") for p in ("best-of-N", "fk")
    }
    json.dumps(out, default=str)
    plot(out["rows"], "oracle", tmp_path / "curve.png", "test")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_the_curve_command_on_a_given_model_file(tmp_path, capsys):
    """``--curve --model FOLDER``: the user's own base-model file, the table, JSON and one plot per judge."""
    from tipai_core.eval.__main__ import main as eval_main
    from tipai_core.worlds.shapes.train import TrainConfig, train

    folder = train(TrainConfig(model=TINY, batch=8, warmup=2), 2, tmp_path / "cache", log=lambda *_: None)
    out = tmp_path / "curve"
    argv = ["shapes", "--curve", "--model", str(folder), "--size", "16", "--n", "2", "--dev", "0"]
    argv += ["--budgets", "1,2", "--auditor", "oracle", "--steps", "6", "--out-dir", str(out), "--no-local"]
    assert eval_main(argv) == 0
    text = capsys.readouterr().out
    assert f"base model from {folder}" in text and "TiPAI minus its peer" in text
    saved = json.loads((out / "curve.json").read_text())
    assert saved["n_held_out"] == 2 and {r["method"] for r in saved["rows"]} >= {"plain", "best-of-N", "fk"}
    assert "tipai-local" not in {r["method"] for r in saved["rows"]}  # --no-local
    assert (out / "curve-oracle.png").is_file() and (out / "curve.txt").read_text().startswith("judge")
    assert (out / "curve.partial.txt").read_text().startswith("judge")  # written after each budget
    assert eval_main(["shapes", "--curve", "--model", str(folder), "--budgets", "0,2"]) == 2


def test_tuning_tries_every_grid_point_and_picks_the_best_of_each_family(model):
    """``tune`` on a development set: each family's pick is the argmax of the rows it tried."""
    from tipai_core.eval.shapes.curve import tune
    from tipai_core.worlds.shapes.evaluate import development_set

    s = EvalSettings(n_prompts=2, n_steps=8, n_candidates=2)
    a, m = oracle_pieces(Checker())
    c = CurveSettings(budgets=(2,), fk_every=2)
    picks, tried = tune(
        model,
        development_set(2),
        s,
        c,
        {"oracle": Pieces(a, m, "oracle")},
        log=lambda *_: None,
        budget=4,
        global_steps=(2, 3),
        lams=(1.0,),
        finalists=(1, 2),
        finals_steps=(2, 3),
    )
    rows = [r for r in tried if r["judge"] == "oracle"]
    finals = [r for r in rows if r["method"] == "tipai-finals" and not r.get("two_looks")]
    assert {(r["g"], r["m"]) for r in finals} == {(2, 1), (2, 2), (3, 1), (3, 2)}
    assert all(r["evals"] <= 4 * 8 for r in rows if "evals" in r)
    best = max(finals, key=lambda r: r["accuracy"])
    two = [r for r in rows if r.get("two_looks")]
    assert len(two) == 1 and (two[0]["g"], two[0]["m"]) == (best["g"], best["m"])
    g, mm, two_looks = picks["oracle"]["finals"]
    assert (g, mm) == (best["g"], best["m"]) and two_looks == (two[0]["accuracy"] > best["accuracy"])
    glob = [r for r in rows if r["method"] == "tipai-global"]
    assert picks["oracle"]["global_step"] == max(glob, key=lambda r: r["accuracy"])["g"]
