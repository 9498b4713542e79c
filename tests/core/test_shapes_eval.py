"""ShapesWorld evaluation plumbing at CI size: three methods, table, PNG, reproducibility, oracle pieces."""

import pytest
import torch
from PIL import Image

from tipai_core.eval.__main__ import main as eval_main
from tipai_core.eval.shapes.settings import EvalSettings
from tipai_core.eval.shapes.table import evaluate
from tipai_core.mining.regions import SaliencyMiner
from tipai_core.protocols import Auditor
from tipai_core.worlds.shapes.checker import Checker
from tipai_core.worlds.shapes.model import ModelConfig
from tipai_core.worlds.shapes.oracle import CheckerAuditor, checker_saliency
from tipai_core.worlds.shapes.render import Scene, ShapeSpec, render
from tipai_core.worlds.shapes.train import TrainConfig, load_model, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(size=16, channels=(8, 16, 16), text_dim=16, text_layers=1, heads=2)


def test_oracle_auditor_and_saliency():
    rc = ShapeSpec("circle", "red", 0.25, 0.5, 0.15)
    gs = ShapeSpec("square", "green", 0.75, 0.5, 0.15)
    img = render(Scene((rc, gs)))[None]
    aud = CheckerAuditor()
    assert isinstance(aud, Auditor)
    sc = aud.score(torch.cat([img, img]), "a red circle left of a blue square")
    assert torch.allclose(sc.S, torch.tensor([1 / 3, 1 / 3]))  # binding(blue square) and the relation fail
    sal = checker_saliency()(img, "a red circle left of a blue square")
    # the unwanted green square is salient, the red circle (asked for, relation would hold) is not
    assert sal[0, 0, 16, 24] == 1 and sal[0, 0, 16, 8] == 0
    regions = SaliencyMiner(checker_saliency(), k=2)(img, "a red circle left of a blue square")
    assert len(regions) == 1 and regions[0].bbox[1] >= 16
    # a reversed relation marks the first object
    sal = checker_saliency()(img, "a red circle right of a green square")
    assert sal[0, 0, 16, 8] == 1 and sal[0, 0, 16, 24] == 0
    assert checker_saliency()(img, "a red circle left of a green square").sum() == 0


def test_eval_runs_and_reproduces(tmp_path, capsys):
    cfg = TrainConfig(model=TINY, batch=8, warmup=2)
    model, _ = load_model(train(cfg, 3, tmp_path, log=lambda *_: None))
    s = EvalSettings(n_prompts=3, n_steps=6, audit_first=2, audit_every=2, audit_skip_last=1, n_candidates=2)
    text, rows = evaluate(model, s, tmp_path / "grid.png", log=lambda *_: None)
    print(text)
    assert rows[0]["method"] == "plain" and rows[2]["method"] == "tipai[oracle]"
    assert rows[1]["method"].startswith("best-of-")
    plain, best, tipai = rows
    assert plain["calls_per_image"] == 6
    assert tipai["calls_per_image"] >= 6 and tipai["tournaments"] >= 0
    n = int(best["method"].split("-")[-1].split("[")[0])
    assert best["evals_per_image"] == 6 * n >= tipai["evals_per_image"]  # equal or greater compute
    for r in rows:
        assert r["all"] is None or 0 <= r["all"] <= 1
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size[0] > im.size[1] / 3  # three columns
    _, rows2 = evaluate(model, s, None, log=lambda *_: None, log_dir=tmp_path / "logs")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds_per_image"} for r in rs]  # noqa: E731
    assert strip(rows) == strip(rows2)
    # the tournaments were logged with the checker's true_win, readable by the Stage C reader
    from tipai_core.records.tournament_log import iter_records

    recs = list(iter_records([tmp_path / "logs" / "tournaments-oracle.records.jsonl"]))
    assert len(recs) == rows2[2]["tournaments"] > 0
    for r in recs:
        assert r.true_win[0] is None and len(r.true_win) == len(r.actions) + 1
        # the oracle auditor's S is the checker's share of clauses: a true win is exactly a higher S
        assert [bool(w) for w in r.true_win[1:]] == [s_i > r.scores["S"][0] for s_i in r.scores["S"][1:]]


def test_eval_cli_help_and_unknown_world(capsys):
    assert eval_main([]) == 2
    assert eval_main(["nowhere"]) == 2
    with pytest.raises(SystemExit):
        eval_main(["shapes", "--help"])
    assert "--train-only" in capsys.readouterr().out


def test_stage_c_and_tspo_rows(tmp_path):
    """The calibration set's tournaments feed the real Stage C and offline TSPO commands; their files
    load back into the loop; a guard that cannot accept leaves every image exactly the plain one."""
    from tipai_core.eval.shapes.settings import Pieces
    from tipai_core.eval.shapes.stage_c import calibrated_pieces, fit_stage_c
    from tipai_core.guard.calibration_file import Calibration
    from tipai_core.guard.tournament_guard import TournamentGuard
    from tipai_core.policy.policy_net import PolicyNet
    from tipai_core.records.tournament_log import iter_records
    from tipai_core.worlds.shapes.evaluate import calibration_set, held_out

    assert not {p for p in calibration_set(64)} & {p for p in held_out(64)}  # seeds never shared
    cfg = TrainConfig(model=TINY, batch=8, warmup=2)
    model, _ = load_model(train(cfg, 3, tmp_path, log=lambda *_: None))
    s = EvalSettings(n_prompts=3, n_steps=6, audit_first=2, audit_every=2, audit_skip_last=1, n_candidates=2)
    base = Pieces(CheckerAuditor(), SaliencyMiner(checker_saliency(), k=2, threshold=0.5), "oracle")
    cal, pol = fit_stage_c(model, s, base, tmp_path / "stagec", n_calib=8, log=lambda *_: None)
    recs = list(iter_records([tmp_path / "stagec" / "tournaments.records.jsonl"]))
    assert recs and all(r.true_win is not None and r.true_win[0] is None for r in recs)
    c = Calibration.load(cal)
    assert c.delta >= 0 and c.auditor["name"] == "oracle"
    policy = PolicyNet.load(pol, expect_knobs={k: v[0] for k, v in s.knobs.items()})
    assert policy.n_classes == 1
    stamp = (cal.stat().st_mtime_ns, pol.stat().st_mtime_ns)
    fit_stage_c(model, s, base, tmp_path / "stagec", n_calib=8, log=lambda *_: None)
    assert (cal.stat().st_mtime_ns, pol.stat().st_mtime_ns) == stamp  # reused, not refitted
    never = Pieces(base.auditor, base.miner, "oracle", policy=policy, guard=TournamentGuard(delta=1e9))
    pieces = {"oracle+tspo": never, "oracle+tspo+cal": calibrated_pieces(base, cal, pol)}
    _, rows = evaluate(model, s, None, log=lambda *_: None, pieces=pieces)
    plain, tipai = rows[0], next(r for r in rows if r["method"] == "tipai[oracle+tspo]")
    assert tipai["tournaments"] > 0 and tipai["accept_rate"] == 0 and tipai["regressions"] == 0
    for k in ("binding", "count", "relation", "all"):
        assert tipai[k] == plain[k]
    assert [r["method"] for r in rows][-1] == "tipai[oracle+tspo+cal]"


def test_diagnose_oracle_ranks_true_wins_perfectly(tmp_path):
    """The oracle auditor's margin is the checker's own: its AUC for a true win is exactly 1."""
    from tipai_core.eval.shapes.diagnose import diagnose
    from tipai_core.eval.shapes.settings import oracle_pieces

    cfg = TrainConfig(model=TINY, batch=8, warmup=2)
    model, _ = load_model(train(cfg, 3, tmp_path, log=lambda *_: None))
    s = EvalSettings(n_prompts=3, n_steps=6, audit_first=2, audit_every=2, audit_skip_last=1, n_candidates=3)
    rows = diagnose(model, s, {"oracle": oracle_pieces(Checker())}, 12, tmp_path / "d", log=lambda *_: None)
    (row,) = rows
    assert row["tournaments"] > 0 and 0 <= row["candidate_win"] <= row["tournaments_with_winner"] <= 1
    assert row["auc_margin"] is None or row["auc_margin"] == 1.0
    assert (tmp_path / "d" / "diagnose-oracle.records.jsonl").is_file()


def test_weights_digest_keys_tensors_not_file_bytes(tmp_path):
    from safetensors.torch import save_file

    from tipai_core.eval.shapes.stage_c import _weights_digest

    t = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    save_file(t, str(tmp_path / "x.safetensors"), metadata={"p": "1", "q": "2"})
    save_file(dict(reversed(list(t.items()))), str(tmp_path / "y.safetensors"), metadata={"q": "2"})
    assert _weights_digest(tmp_path / "x.safetensors") == _weights_digest(tmp_path / "y.safetensors")
    save_file({**t, "a": t["a"] + 1}, str(tmp_path / "z.safetensors"))
    assert _weights_digest(tmp_path / "x.safetensors") != _weights_digest(tmp_path / "z.safetensors")
