"""Calibration: PAV against scikit-learn, ECE before/after, δ on a second held-out set, the file and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tipai_core.guard.calibrated_guard import calibrated_guard
from tipai_core.guard.calibration_file import Calibration
from tipai_core.guard.fitting import choose_delta, expected_calibration_error, reliability_table
from tipai_core.guard.maps import IsotonicMap
from tipai_core.guard.plots import learning_curve, reliability_diagram
from tipai_core.protocols import AuditScores
from tipai_core.records.tournament_log import append_records
from tipai_core.testing.bandit import calibration_records
from tipai_core.train import calibrate as stage


def _read_png(path):
    """The PNG decoded by PIL (which checks the signature, the chunks and the pixel data): (width, height,
    the number of coloured pixels, i.e. neither white, grey nor black)."""
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.format == "PNG"
        rgb = im.convert("RGB")
        w, h = rgb.size
        px = rgb.tobytes()
        coloured = sum(1 for j in range(0, len(px), 3) if max(px[j : j + 3]) - min(px[j : j + 3]) > 60)
    return w, h, coloured


def test_isotonic_agrees_with_scikit_learn():
    sk = pytest.importorskip("sklearn.isotonic")
    g = torch.Generator().manual_seed(0)
    m = torch.round(torch.randn(3000, generator=g, dtype=torch.float64) * 20) / 10  # ties, as real margins have
    y = (torch.rand(3000, generator=g, dtype=torch.float64) < torch.sigmoid(3 * m)).double()
    ours = IsotonicMap.fit(m, y)
    ref = sk.IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(m.numpy(), y.numpy())
    grid = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    diff = float((ours(grid) - torch.from_numpy(ref.predict(grid.numpy()))).abs().max())
    print(f"max |ours - sklearn| over the grid: {diff:.2e}")
    assert diff < 1e-9


def test_calibration_stage_must_show(tmp_path, capsys):
    gen = torch.Generator().manual_seed(1)
    append_records(tmp_path / "logs" / "a.records.jsonl", calibration_records(1200, 4, gen))
    out = tmp_path / "calibration.json"
    res = stage.run(
        stage.build_parser().parse_args(
            ["--logs", str(tmp_path / "logs"), "--out", str(out), "--auditor", "tiny.safetensors"]
        )
    )
    print(capsys.readouterr().out)
    print(f"ECE raw {res['ece_raw']:.4f} -> calibrated {res['ece_calibrated']:.4f} ({res['ece_ratio']:.1f}x)")
    assert res["ece_ratio"] >= 3.0 and res["nll_calibrated"] < res["nll_raw"]
    # δ meets the target on a second, fresh held-out set
    cal = Calibration.load(out)
    second = calibration_records(3000, 4, torch.Generator().manual_seed(2))
    m = torch.tensor([r.scores["S"][i] - r.scores["S"][0] for r in second for i in range(1, 5)])
    y = torch.tensor([float(r.true_win[i]) for r in second for i in range(1, 5)])
    rate = float(y[m >= cal.delta].mean())
    print(
        f"δ = {cal.delta:.4f}; second held-out set: Pr[true win | m ≥ δ] = {rate:.3f} "
        f"over {int((m >= cal.delta).sum())}"
    )
    assert rate >= 0.9 and cal.delta > 0
    # τ_P(t) per class, stricter late; the guard uses the file's numbers
    early, late = cal.tau_P(0.0), cal.tau_P(1.0)
    assert early.numel() == 2 and (late >= early).all() and float(cal.tau_F(1.0)) >= float(cal.tau_F(0.0))
    guard = calibrated_guard(cal)
    assert guard.delta == cal.delta
    w, h, coloured = _read_png(tmp_path / "calibration.reliability.png")
    assert (w, h) == (240, 240) and coloured > 50  # the two curves are drawn, not just the axes


def test_delta_and_ece_by_hand():
    m = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4] * 10, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 1] * 10, dtype=torch.float64)
    assert choose_delta(m, y, 0.9, min_count=5, z=0.0) == pytest.approx(0.2)
    assert choose_delta(m, y, 0.9, min_count=5) is None  # 30 of 30 wins: a 99% lower bound of 0.85 is not yet 0.9
    assert expected_calibration_error(torch.full((4,), 0.75), torch.tensor([1.0, 1, 1, 0])) == pytest.approx(0.0)
    assert expected_calibration_error(torch.full((4,), 0.95), torch.tensor([1.0, 0, 0, 0])) == pytest.approx(0.7)


def test_bad_calibration_inputs(tmp_path, capsys):
    # empty logs, another schema version, logs without labels
    (tmp_path / "e.records.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no tournament records"):
        stage.run(
            stage.build_parser().parse_args(
                ["--logs", str(tmp_path / "e.records.jsonl"), "--out", str(tmp_path / "c.json")]
            )
        )
    # the command says the same in one line and exits with status 2
    with pytest.raises(SystemExit) as exit_info:
        stage.main(["--logs", str(tmp_path / "e.records.jsonl"), "--out", str(tmp_path / "c.json")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().out.startswith("[calibrate] error: ") and not (tmp_path / "c.json").exists()
    (tmp_path / "v9.records.jsonl").write_text('{"schema": "tipai.tournament/9"}\n')
    with pytest.raises(ValueError, match="tipai.tournament/9"):
        stage.run(
            stage.build_parser().parse_args(
                ["--logs", str(tmp_path / "v9.records.jsonl"), "--out", str(tmp_path / "c.json")]
            )
        )
    recs = calibration_records(3, 2, torch.Generator().manual_seed(0))
    for r in recs:
        r.true_win = None
    append_records(tmp_path / "nolabel.records.jsonl", recs)
    with pytest.raises(ValueError, match="true_win"):
        stage.run(
            stage.build_parser().parse_args(
                ["--logs", str(tmp_path / "nolabel.records.jsonl"), "--out", str(tmp_path / "c.json")]
            )
        )
    # a calibration file for another auditor
    from tipai_core.diffusion.schedules import Schedule

    cal = Calibration(
        0.1,
        Schedule.constant([0.5, 0.5]),
        Schedule.constant(0.2),
        {"name": "big.safetensors", "classes": ["nsfw", "violence/weapon"]},
    )
    cal.save(tmp_path / "cal.json")
    back = Calibration.load(tmp_path / "cal.json")
    with pytest.raises(ValueError, match="fit for the auditor 'big.safetensors'"):
        back.check_auditor("tiny.safetensors", ["nsfw", "violence/weapon"])
    with pytest.raises(ValueError, match="policy classes"):
        back.check_auditor(None, ["nsfw"])
    scores = AuditScores(
        S=torch.tensor([0.0, 1.0]),
        S_R=torch.zeros(2),
        F=torch.ones(2),
        P=torch.ones(2, 1),
        B=torch.ones(2),
        classes=("logo",),
    )
    with pytest.raises(ValueError, match="calibrate again"):
        calibrated_guard(back).select(scores, 0.5)
    d = json.loads((tmp_path / "cal.json").read_text())
    d["schema"] = "tipai.calibration/0"
    (tmp_path / "old.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="not 'tipai.calibration/1'"):
        Calibration.load(tmp_path / "old.json")


def test_plots_are_readable_pngs_of_the_asked_size(tmp_path):
    p = torch.linspace(0, 1, 100)
    path = reliability_diagram({"a": reliability_table(p, (p > 0.5).double())}, tmp_path / "r.png", size=64)
    w, h, coloured = _read_png(path)
    assert (w, h) == (64, 64) and coloured > 0
    path = learning_curve({"win_rate": [0.1, 0.4, 0.6], "cost": [3.0, 2.0, 1.5]}, tmp_path / "sub" / "c.png")
    w, h, coloured = _read_png(path)
    assert (w, h) == (320, 200) and coloured > 50
    assert not list(tmp_path.rglob("*.tmp"))  # written atomically
    # the same curves give the same bytes (no date or version in the file)
    again = learning_curve({"win_rate": [0.1, 0.4, 0.6], "cost": [3.0, 2.0, 1.5]}, tmp_path / "c2.png")
    assert again.read_bytes() == path.read_bytes()


def test_the_runtime_loads_a_calibration_without_matplotlib(tmp_path):
    # matplotlib belongs to the [train] extra: loading a calibration file and guarding must not import it
    import subprocess
    import sys

    from tipai_core.diffusion.schedules import Schedule

    Calibration(0.1, Schedule.constant([0.5]), Schedule.constant(0.2), {"classes": ["safe"]}).save(tmp_path / "c.json")
    code = (
        "import sys\n"
        "from tipai_core.guard.calibration_file import Calibration\n"
        "from tipai_core.guard.calibrated_guard import calibrated_guard\n"
        f"g = calibrated_guard(Calibration.load(r'{tmp_path / 'c.json'}'))\n"
        "print(g.delta, 'matplotlib' in sys.modules)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0.1", "False"]


def test_listwise_judge_refinement_in_the_calibrate_stage(tmp_path):
    # the synthetic true winners also have higher F and P (bandit.calibration_records): a judge that
    # weighs them in beats the raw S at picking a true winner on the held-out half
    torch.set_num_threads(1)
    append_records(tmp_path / "a.records.jsonl", calibration_records(800, 4, torch.Generator().manual_seed(3)))
    for loss in ("listnet", "pl"):
        res = stage.fit_calibration([tmp_path], tmp_path / f"{loss}.json", listwise=loss)
        j = res["judge"]
        print(f"{loss}: top-1 raw {j['top1_raw']:.3f} -> refined {j['top1_refined']:.3f}, weights {j['weights']}")
        assert j["weights"][0] > 0 and j["weights"][1] > 0 and j["weights"][2] > 0 and j["weights"][3] == 0.0
        assert j["top1_refined"] > j["top1_raw"] and j["tournaments_eval"] > 300
        assert json.loads((tmp_path / f"{loss}.json").read_text())["metrics"]["judge"]["loss"] == loss


def _run_cli(*args: str) -> tuple[int, str]:
    """``python -m tipai_core.train <args>`` in a subprocess: (exit status, stdout + stderr)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tipai_core.train", *args]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_nan_scores_are_dropped_counted_and_reported(tmp_path):
    # records whose scores are NaN used to be left out without a word: now they are counted and named,
    # printed and kept in the calibration file's metadata
    import math

    recs = calibration_records(200, 4, torch.Generator().manual_seed(4))
    for r in recs[:5]:
        r.scores["S"][2] = math.nan  # one candidate of each of five records
    for r in recs[5:7]:
        r.scores["S"][0] = math.nan  # the control: every candidate of two records
    lost = sum(r.true_win[2] is not None for r in recs[:5]) + sum(
        v is not None for r in recs[5:7] for v in r.true_win[1:]
    )
    append_records(tmp_path / "n.records.jsonl", recs)
    out = tmp_path / "c.json"
    code, text = _run_cli("calibrate", "--logs", str(tmp_path / "n.records.jsonl"), "--out", str(out))
    assert code == 0, text
    assert "200 records read from 1 file(s), 0 corrupt line(s) skipped, 7 record(s) dropped" in text
    assert f"dropped {lost} labelled candidate(s) of 7 record(s)" in text
    first = "dropped n.records.jsonl:1: 1 labelled candidate(s) with non-finite or out-of-range numbers: "
    assert first + "scores.S[2]=nan" in text  # the first few are printed, the first 20 kept in the file
    no_nan = {"parse_constant": lambda c: pytest.fail(f"{c} in the calibration file")}
    logs = json.loads(out.read_text(), **no_nan)["metrics"]["logs"]
    assert logs["records_read"] == 200 and logs["records_dropped"] == 7 and logs["candidates_dropped"] == lost
    assert (
        logs["dropped"][5].startswith("n.records.jsonl:6: ") and "scores.S[0]=nan (the control)" in logs["dropped"][5]
    )
    assert logs["dropped"][0].startswith("n.records.jsonl:1: ")


@pytest.mark.parametrize(
    "flag, value, allowed",
    [
        ("--target", "nan", "(0, 1]"),
        ("--eval-fraction", "1", "(0, 1)"),
        ("--eval-fraction", "-inf", "(0, 1)"),
        ("--keep-early", "0", "(0, 1]"),
        ("--keep-late", "1.5", "(0, 1]"),
        ("--bins", "0", "[1, 1000]"),
        ("--seed", "-1", "[0, 9223372036854775807]"),
    ],
)
def test_every_numeric_calibrate_option_is_bounded(flag, value, allowed, tmp_path, capsys):
    (tmp_path / "e.records.jsonl").write_text("\n")
    with pytest.raises(SystemExit) as exit_info:
        stage.main(["--logs", str(tmp_path / "e.records.jsonl"), "--out", str(tmp_path / "c.json"), f"{flag}={value}"])
    assert exit_info.value.code == 2
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"[calibrate] error: argument {flag}: ") and allowed in line and repr(value) in line, line
    assert not (tmp_path / "c.json").exists()
    assert f"range {allowed}" in " ".join(stage.build_parser().format_help().split())  # documented in --help
    kind = next(a.type.kind for a in stage.build_parser()._actions if flag in a.option_strings)
    with pytest.raises(ValueError, match=f"argument {flag}: must be"):  # the library call gets the same bounds
        stage.fit_calibration([tmp_path], tmp_path / "c.json", **{flag[2:].replace("-", "_"): kind(float(value))})
