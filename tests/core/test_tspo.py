"""TSPO: credits, the loss terms, and the synthetic-bandit must-shows (on-policy and off-policy)."""

from __future__ import annotations

import pytest
import torch

from tipai_core.policy.policy_net import PolicyNet
from tipai_core.policy.tspo import (
    candidate_cost,
    diversity,
    listnet_loss,
    loo_credits,
    plackett_luce_nll,
    records_to_batch,
    records_to_batches,
    refine_judge,
    soft_credits,
)
from tipai_core.records.tournament_log import LogStats, append_records, iter_records, require_records
from tipai_core.testing.bandit import CONTEXTS, KnobBandit
from tipai_core.train import tspo as tspo_stage


def test_credits():
    u = torch.tensor([[0.3, 0.0, 0.5, 0.1]])
    assert torch.allclose(loo_credits(u), torch.tensor([[0.3 - 0.5, -0.5, 0.5 - 0.3, 0.1 - 0.5]]))
    s = soft_credits(u, 0.1)
    assert torch.allclose(s.sum(-1), torch.zeros(1), atol=1e-7) and int(s.argmax()) == 2
    tie = loo_credits(torch.tensor([[0.5, 0.5, 0.1]]))
    assert (tie <= 0).all()
    d = diversity(torch.tensor([[[0.0], [0.0], [3.0]]]))
    assert int(d.argmax()) == 2 and abs(float(d.sum())) < 1e-6
    assert candidate_cost(2, "invert") == 5 and candidate_cost(2, "renoise") == 3


def test_listwise_refinement_recovers_ranking():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, 3, generator=g)
    target = x @ torch.tensor([2.0, -1.0, 0.0])
    for loss in ("listnet", "pl"):
        w = refine_judge(x, target, loss=loss)
        agree = ((x @ w).argmax(-1) == target.argmax(-1)).float().mean()
        assert agree > 0.9, (loss, float(agree))
    assert plackett_luce_nll(torch.tensor([[3.0, 0.0]]), torch.tensor([[0, 1]])) < plackett_luce_nll(
        torch.tensor([[3.0, 0.0]]), torch.tensor([[1, 0]])
    )
    assert listnet_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])) < listnet_loss(
        torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    )


@pytest.fixture(scope="module")
def on_policy(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bandit") / "bandit_policy"
    result = tspo_stage.run(
        tspo_stage.build_parser().parse_args(
            [
                "bandit",
                "--out",
                str(out),
                "--iterations",
                "40",
                "--tournaments",
                "256",
                "--lr",
                "0.05",
                "--lambda-c",
                "0.2",
                "--beta",
                "0.02",
                "--beta-final",
                "0",
                "--n-classes",
                "1",
                "--seed",
                "0",
            ]
        )
    )
    return result


def test_bandit_tspo_near_oracle_for_less_compute(on_policy):
    final, oracle, uniform = on_policy["final"], on_policy["oracle"], on_policy["uniform"]
    ratio, saving = final["win_rate"] / oracle["win_rate"], 1 - final["cost"] / uniform["cost"]
    print(
        f"bandit: win rate {final['win_rate']:.3f} vs oracle {oracle['win_rate']:.3f} ({ratio:.1%}); compute "
        f"{final['cost']:.2f} vs uniform {uniform['cost']:.2f} ({saving:.1%} less)"
    )
    for p in on_policy["curve"][:: max(1, len(on_policy["curve"]) // 6)]:
        print(f"  iteration {p['iteration']:4d}  win rate {p['win_rate']:.3f}  compute {p['cost']:.2f}")
    assert ratio >= 0.9 and saving >= 0.3
    from pathlib import Path

    png = Path(on_policy["png"]).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 100
    # the learned preference is context dependent, as the bandit's: high CFG inside early, low late
    assert on_policy["preferred"][str(CONTEXTS[0])]["cfg_inside"] == 7.0
    assert on_policy["preferred"][str(CONTEXTS[1])]["cfg_inside"] == 3.0


def test_off_policy_converges_to_the_on_policy_preferences(on_policy, tmp_path):
    torch.set_num_threads(1)
    bandit = KnobBandit()
    # a behaviour policy that prefers the wrong things (the first choice of every knob: dilation 0, feather 0,
    # CFG 3 early too, emphasis 1, depth 1 with invert), with full support
    skew = {k: (v, [0.6] + [0.4 / (len(v) - 1)] * (len(v) - 1)) for k, v in bandit.choices.items()}
    behaviour = type(bandit.uniform())(skew)
    assert bandit.evaluate(behaviour)["win_rate"] < 0.75 * on_policy["final"]["win_rate"]
    log = tmp_path / "behaviour.records.jsonl"
    append_records(log, bandit.play(behaviour, 1500, 8, torch.Generator().manual_seed(5)))
    with open(log, "ab") as fh:
        fh.write(b'{"schema": "tipai.tournament/1", "torn')  # a torn last line is skipped, not fatal
    out = tmp_path / "offline_policy"
    # the same loss as on-policy, but a constant, larger entropy β: π stays spread over the behaviour
    # policy's support, so the clipped importance weights stay informative (mean weight ≈ 0.7, not ≈ 0)
    result = tspo_stage.run(
        tspo_stage.build_parser().parse_args(
            [
                "offline",
                "--logs",
                str(log),
                "--out",
                str(out),
                "--iterations",
                "60",
                "--batch",
                "1500",
                "--n-classes",
                "1",
                "--lr",
                "0.05",
                "--lambda-c",
                "0.2",
                "--beta",
                "0.2",
            ]
        )
    )
    assert result["curve"][-1]["weight"] > 0.3
    off = PolicyNet.load(out.with_suffix(".safetensors"))
    for t in CONTEXTS:
        got, want = off.preferred(bandit.state(t)), on_policy["preferred"][str(t)]
        print(f"t={t}: off-policy {got}\n       on-policy  {want}")
        assert got == want
    print(
        f"off-policy: win rate {bandit.evaluate(off)['win_rate']:.3f} (a softer π: β = 0.2), behaviour "
        f"{bandit.evaluate(behaviour)['win_rate']:.3f}, on-policy {on_policy['final']['win_rate']:.3f}"
    )


def test_bad_logs_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.records.jsonl"
    empty.write_text("")
    stats = LogStats()
    assert list(iter_records([empty], stats)) == []
    with pytest.raises(ValueError, match="hold no tournament records"):
        require_records(stats, "tspo")
    other = tmp_path / "v2.records.jsonl"
    other.write_text('{"schema": "tipai.tournament/2", "step": 1}\n')
    with pytest.raises(SystemExit):
        tspo_stage.main(["offline", "--logs", str(other), "--out", str(tmp_path / "p")])
    stats = LogStats()
    list(iter_records([other], stats))
    with pytest.raises(ValueError, match=r"schema \['tipai.tournament/2'\]; this version reads"):
        require_records(stats, "tspo")
    # a policy file whose knobs cannot draw the logged actions
    bandit = KnobBandit()
    log = tmp_path / "b.records.jsonl"
    append_records(log, bandit.play(bandit.uniform(), 5, 2, torch.Generator().manual_seed(0)))
    init = PolicyNet({"cfg_inside": (4.5,)}, n_classes=1).save(tmp_path / "narrow")
    with pytest.raises(ValueError, match="knobs do not match the logs"):
        tspo_stage.run(
            tspo_stage.build_parser().parse_args(
                ["offline", "--logs", str(log), "--out", str(tmp_path / "p"), "--init", str(init)]
            )
        )


def test_tspo_settings_are_the_commands_options():
    # the command is a thin wrapper: its defaults are the library's, and it passes --knobs as JSON
    from dataclasses import fields

    args = tspo_stage.build_parser().parse_args(["bandit", "--out", "p", "--knobs", '{"depth": [1, 2]}'])
    s = tspo_stage.settings_from_args(args)
    assert s == tspo_stage.TSPOSettings(out="p", knobs={"depth": [1, 2]})
    assert {f.name for f in fields(tspo_stage.TSPOSettings)} <= set(vars(args))
    with pytest.raises(ValueError, match="offline mode needs --logs"):
        tspo_stage.train_offline([], s)


def test_checkpoint_resume_matches_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    bandit = KnobBandit()
    log = tmp_path / "l.records.jsonl"
    append_records(log, bandit.play(bandit.uniform(), 200, 4, torch.Generator().manual_seed(1)))
    common = [
        "offline",
        "--logs",
        str(log),
        "--iterations",
        "6",
        "--batch",
        "64",
        "--n-classes",
        "1",
        "--checkpoint-every",
        "2",
    ]
    tspo_stage.main(common + ["--out", str(tmp_path / "full")])
    tspo_stage.main(common + ["--out", str(tmp_path / "split"), "--stop-after-iteration", "3"])
    assert not (tmp_path / "split.safetensors").exists()
    tspo_stage.main(common + ["--out", str(tmp_path / "split"), "--resume"])
    a, b = PolicyNet.load(tmp_path / "full.safetensors"), PolicyNet.load(tmp_path / "split.safetensors")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_offline_reads_logs_of_mixed_n_as_one_batch_per_n(tmp_path):
    torch.set_num_threads(1)
    bandit = KnobBandit()
    log = tmp_path / "mixed.records.jsonl"
    append_records(log, bandit.play(bandit.uniform(), 30, 2, torch.Generator().manual_seed(0)))
    append_records(log, bandit.play(bandit.uniform(), 20, 3, torch.Generator().manual_seed(1)))
    policy = PolicyNet(n_classes=1)
    batches = records_to_batches(policy, iter_records([log]))
    assert sorted(batches) == [2, 3] and len(batches[2]) == 30 and tuple(batches[3].u.shape) == (20, 3)
    assert bool(batches[3].valid.all())
    with pytest.raises(ValueError, match="different N"):
        records_to_batch(policy, iter_records([log]))
    res = tspo_stage.train_offline([log], tspo_stage.TSPOSettings(out=tmp_path / "p", iterations=2, n_classes=1))
    assert len(res["curve"]) == 2 and PolicyNet.load(tmp_path / "p.safetensors").choices == policy.choices


def test_vectorised_bandit_play_draws_from_the_policy():
    torch.manual_seed(0)
    bandit, policy = KnobBandit(), PolicyNet(n_classes=1, hidden=8)
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0, 0.7)
    batch = bandit.play_batch(policy, 4000, 3, torch.Generator().manual_seed(0))
    table = policy.log_probs_table(batch.feats, batch.max_depth)
    logp = sum(table[k].gather(1, batch.idx[k]) for k in policy.knob_names).double()
    assert torch.allclose(logp, batch.behaviour_logp, atol=1e-5)  # the recorded μ is the policy's own
    for t in CONTEXTS:
        rows = (batch.feats == policy.features([bandit.state(t)])).all(-1)
        freq = torch.bincount(batch.idx["cfg_inside"][rows].flatten(), minlength=3).double() / (3 * rows.sum())
        assert torch.allclose(freq, bandit.knob_tables(policy, t)["cfg_inside"], atol=0.03), (t, freq)
    win = batch.u > 0
    assert ((batch.u[win] >= 0.5) & (batch.u[win] <= 1)).all() and 0.1 < float(win.double().mean()) < 0.9


# ----------------------------------------------------------------------------- the command's bounds and bad logs


def _run_cli(*args: str) -> tuple[int, str]:
    """``python -m tipai_core.train <args>`` in a subprocess: (exit status, stdout + stderr)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tipai_core.train", *args]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("iterations", ["-5", "1000000"])
def test_tspo_command_refuses_iterations_out_of_range(iterations, tmp_path):
    # -5 used to exit 0 with an untrained policy; 10^6 used to run without bound
    out = tmp_path / "out"
    code, text = _run_cli("tspo", "bandit", "--out", str(out / "p"), "--iterations", iterations)
    assert code == 2 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if "error:" in line]
    assert errors == [
        f"[tspo] error: argument --iterations: must be an integer in [1, 100000], got '{iterations}' (see --help)"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    "flag, value, allowed",
    [
        ("--lr", "nan", "(0, 1]"),
        ("--lr", "0", "(0, 1]"),
        ("--tau", "0", "[0.001, 100]"),
        ("--beta", "inf", "[0, 100]"),
        ("--beta-final", "-1", "[0, 100]"),
        ("--clip", "-inf", "(0, 1e+06]"),
        ("--seed", "-1", "[0, 9223372036854775807]"),
        ("--batch", "0", "[1, 65536]"),
        ("--tournaments", "1e9", "[1, 65536]"),
        ("--n", "65", "[1, 64]"),
        ("--hidden", "abc", "[1, 4096]"),
        ("--checkpoint-every", "-1", "[0, 100000]"),
        ("--job-timeout", "0", "(0, 86400]"),
    ],
)
def test_every_numeric_tspo_option_is_bounded(flag, value, allowed, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tspo_stage.main(["bandit", "--out", str(tmp_path / "p"), f"{flag}={value}"])
    assert exit_info.value.code == 2
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"[tspo] error: argument {flag}: ") and allowed in line and repr(value) in line, line
    assert not list(tmp_path.iterdir())
    assert f"range {allowed}" in " ".join(tspo_stage.build_parser().format_help().split())  # documented in --help


def test_library_calls_get_the_commands_bounds(tmp_path):
    with pytest.raises(ValueError, match=r"argument --iterations: must be an integer in \[1, 100000\], got '-5'"):
        tspo_stage.train_bandit(tspo_stage.TSPOSettings(out=tmp_path / "p", iterations=-5))
    with pytest.raises(ValueError, match="argument --n: must be"):
        tspo_stage.train_bandit(tspo_stage.TSPOSettings(out=tmp_path / "p", iterations=1), n=0)
    assert not list(tmp_path.iterdir())


def test_offline_drops_unusable_records_and_names_them(tmp_path, capsys):
    import json
    import math

    torch.set_num_threads(1)
    bandit = KnobBandit()
    log = tmp_path / "l.records.jsonl"
    append_records(log, bandit.play(bandit.uniform(), 40, 3, torch.Generator().manual_seed(2)))
    lines = log.read_text().splitlines()
    bad = [json.loads(line) for line in lines[:3]]
    bad[0]["log_probs"][1] = math.nan  # NaN behaviour log-prob: would make the loss NaN
    bad[1]["state"]["region_area"] = 1e300  # a huge state number
    bad[2]["log_probs"] = ["x", 0.0, 0.0]  # a wrong type: a corrupt line
    log.write_text("\n".join([json.dumps(d) for d in bad] + lines[3:]) + "\n")
    out = tmp_path / "p"
    tspo_stage.main(["offline", "--logs", str(log), "--out", str(out), "--iterations", "2", "--n-classes", "1"])
    text = capsys.readouterr().out
    assert "37 records read" not in text and "39 records read from 1 file(s), 1 corrupt line(s) skipped" in text
    assert "2 record(s) dropped" in text
    assert "dropped l.records.jsonl:1: log_probs must be finite" in text
    assert "dropped l.records.jsonl:2: state numbers non-finite or beyond" in text
    assert "skipped l.records.jsonl:3: ValueError: log_probs must be a list of numbers" in text
    policy = PolicyNet.load(out.with_suffix(".safetensors"))
    assert all(bool(torch.isfinite(v).all()) for v in policy.state_dict().values())
