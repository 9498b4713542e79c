"""(4) Stage A through the real CLI entry: it learns (≥ 0.9 held-out), resumes bit for bit, skips bad rows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from tipai_core.auditor import TINY_ARCH, Auditor
from tipai_core.auditor.data import PreferencePairs, write_pairs_parquet
from tipai_core.auditor.metrics import pair_auc
from tipai_core.testing.auditor_synthetic import CATEGORIES, make_pairs
from tipai_core.train.__main__ import main as train_main

# Enough optimiser steps for the heads to converge on 320 pairs: 20 steps/epoch × 60 epochs.
# (The trainer's defaults, batch 64 × 40 epochs, give 200 steps here: under-trained, pair-AUC ≈ 0.84.)
TRAIN_ARGS = ["--epochs", "60", "--batch-size", "16", "--seed", "0"]


def auditor_metrics(aud: Auditor, pairs: PreferencePairs) -> dict:
    """Global and patch pair-AUC and per-class ROC-AUC of 1 − P, measured through Auditor.score.

    One batched call per prompt; each pair's region is its mask, so S_R compares chosen and rejected on
    the rejected image's fault. Per-class ROC-AUC uses scikit-learn: positives are the rejected images of
    that Category, negatives every chosen image and the rejected images of the other Category.
    """
    items = [pairs[i] for i in range(len(pairs))]
    s_c, s_r, sr_c, sr_r, risk, labels = [], [], [], [], [], []
    for prompt in sorted({it.prompt for it in items}):
        group = [it for it in items if it.prompt == prompt]
        images = torch.stack([it.chosen for it in group] + [it.rejected for it in group])
        masks = torch.stack([it.mask for it in group] * 2)
        sc = aud.score(images, prompt, masks)
        n = len(group)
        s_c.append(sc.S[:n])
        s_r.append(sc.S[n:])
        sr_c.append(sc.S_R[:n])
        sr_r.append(sc.S_R[n:])
        risk.append(1.0 - sc.P)
        labels += [None] * n + [it.category for it in group]
    risk = torch.cat(risk)
    per_class = {
        c: roc_auc_score([lab == c for lab in labels], risk[:, aud.classes.index(c)].numpy()) for c in CATEGORIES
    }
    return {
        "pair_auc": pair_auc(torch.cat(s_c), torch.cat(s_r)),
        "patch_auc": pair_auc(torch.cat(sr_c), torch.cat(sr_r)),
        "class_auc": per_class,
    }


def run_scorer(train, val, clip, out, *extra):
    return train_main(
        [
            "scorer",
            "--data",
            str(train),
            "--val-data",
            str(val),
            "--backbone",
            str(clip),
            "--arch",
            TINY_ARCH,
            "--out",
            str(out),
            *extra,
        ]
    )


def test_stage_a_learns_the_cues(tmp_path, tiny_clip_file, capsys, one_thread):
    train = write_pairs_parquet(tmp_path / "train.parquet", make_pairs(320, seed=1))
    val = write_pairs_parquet(tmp_path / "val.parquet", make_pairs(120, seed=2))
    heads = tmp_path / "heads.safetensors"
    assert run_scorer(train, val, tiny_clip_file, heads, *TRAIN_ARGS) == 0
    printed = capsys.readouterr().out
    assert "zero-shot (epoch 0)" in printed and "trained:" in printed and "per-class ROC-AUC" in printed
    assert "0 skipped" in printed
    metrics = json.loads(heads.with_suffix(".metrics.json").read_text())
    assert not (tmp_path / "heads.ckpt").exists()  # a finished run clears its checkpoints

    # Independent check: the files the trainer wrote, loaded into an Auditor, on the held-out pairs.
    pairs = PreferencePairs(val, image_size=64)
    before = auditor_metrics(Auditor.from_files(tiny_clip_file, arch=TINY_ARCH), pairs)
    after = auditor_metrics(Auditor.from_files(tiny_clip_file, arch=TINY_ARCH, heads=heads), pairs)
    with capsys.disabled():
        print(f"\n[stage A] held-out ({len(pairs)} pairs)  before -> after")
        print(f"[stage A]   pair-AUC        {before['pair_auc']:.3f} -> {after['pair_auc']:.3f}")
        print(f"[stage A]   patch pair-AUC  {before['patch_auc']:.3f} -> {after['patch_auc']:.3f}")
        for c in CATEGORIES:
            print(f"[stage A]   ROC-AUC {c:<16}{before['class_auc'][c]:.3f} -> {after['class_auc'][c]:.3f}")
        print(f"[stage A]   ECE(S)          {metrics['zero_shot']['ece_S']:.3f} -> {metrics['trained']['ece_S']:.3f}")
        print(f"[stage A]   ECE(F)          {metrics['zero_shot']['ece_F']:.3f} -> {metrics['trained']['ece_F']:.3f}")
    assert before["pair_auc"] < 0.7 and after["pair_auc"] >= 0.9
    assert after["patch_auc"] >= 0.9 and after["patch_auc"] >= before["patch_auc"] + 0.2
    for c in CATEGORIES:
        assert before["class_auc"][c] < 0.75 and after["class_auc"][c] >= 0.9, c
    # the trainer's own validation agrees with the auditor's scores
    assert metrics["trained"]["pair_auc"] == pytest.approx(after["pair_auc"], abs=1e-9)
    assert metrics["zero_shot"]["pair_auc"] == pytest.approx(before["pair_auc"], abs=1e-9)
    for c in CATEGORIES:
        assert metrics["trained"]["class_roc_auc"][c] == pytest.approx(after["class_auc"][c], abs=1e-6)
    assert metrics["trained"]["ece_F"] < metrics["zero_shot"]["ece_F"]  # F is calibrated after training


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path, tiny_clip_file, capsys, one_thread):
    train = write_pairs_parquet(tmp_path / "train.parquet", make_pairs(48, seed=3))
    val = write_pairs_parquet(tmp_path / "val.parquet", make_pairs(16, seed=4))
    args = ["--epochs", "6", "--batch-size", "8", "--seed", "5", "--checkpoint-every", "2"]
    whole, split = tmp_path / "whole.safetensors", tmp_path / "split.safetensors"
    ckpt = tmp_path / "ckpt"
    assert run_scorer(train, val, tiny_clip_file, whole, *args) == 0
    # First leg: stopped after epoch 3 (its checkpoint is the only one: --checkpoint-every 0 here).
    assert (
        run_scorer(
            train,
            val,
            tiny_clip_file,
            split,
            *args,
            "--checkpoint-dir",
            str(ckpt),
            "--stop-after-epoch",
            "3",
            "--checkpoint-every",
            "0",
        )
        == 0
    )
    assert not split.exists() and sorted(p.name for p in ckpt.iterdir()) == [
        "epoch-0003.json",
        "epoch-0003.safetensors",
    ]
    # Second leg: resumed, then stopped after epoch 4.
    assert (
        run_scorer(
            train,
            val,
            tiny_clip_file,
            split,
            *args,
            "--checkpoint-dir",
            str(ckpt),
            "--resume",
            "--stop-after-epoch",
            "4",
        )
        == 0
    )
    assert [p.name for p in sorted(ckpt.glob("*.json"))] == ["epoch-0003.json", "epoch-0004.json"]
    # A kill between epoch 4's two files: without its JSON (written last) the checkpoint does not count,
    # so the last leg resumes from epoch 3 and redoes epoch 4.
    (ckpt / "epoch-0004.json").unlink()
    assert run_scorer(train, val, tiny_clip_file, split, *args, "--checkpoint-dir", str(ckpt), "--resume") == 0
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "epoch-0003 (epoch 3" in printed
    a, b = load_file(str(whole)), load_file(str(split))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a checkpoint of another run is refused, naming what differs
    again = tmp_path / "again"
    run_scorer(
        train,
        val,
        tiny_clip_file,
        tmp_path / "x.safetensors",
        *args,
        "--checkpoint-dir",
        str(again),
        "--stop-after-epoch",
        "1",
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_scorer(
            train,
            val,
            tiny_clip_file,
            tmp_path / "x.safetensors",
            *args,
            "--checkpoint-dir",
            str(again),
            "--resume",
            "--lr",
            "0.1",
        )
    assert exit_info.value.code == 2
    assert re.search(r"\[scorer\] error: checkpoint .* another run.*'lr'", capsys.readouterr().out)


def test_checkpoints_hold_no_pickle(tmp_path, tiny_clip_file, one_thread):
    train = write_pairs_parquet(tmp_path / "train.parquet", make_pairs(16, seed=3))
    ckpt = tmp_path / "ckpt"
    run_scorer(
        train,
        train,
        tiny_clip_file,
        tmp_path / "h.safetensors",
        "--epochs",
        "3",
        "--checkpoint-dir",
        str(ckpt),
        "--stop-after-epoch",
        "1",
    )
    tensors = load_file(str(ckpt / "epoch-0001.safetensors"))
    assert any(k.startswith("optim.") and k.endswith("exp_avg_sq") for k in tensors)
    assert "rng.generator" in tensors and any(k.startswith("heads.") for k in tensors)
    meta = json.loads((ckpt / "epoch-0001.json").read_text())
    assert meta["epoch"] == 1 and meta["step"] == 1 and meta["scheduler"]["last_epoch"] == 1
    assert not list(ckpt.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_corrupt_rows_are_skipped_counted_and_named(tmp_path, tiny_clip_file, capsys, one_thread):
    from PIL import Image

    path = write_pairs_parquet(tmp_path / "data" / "train.parquet", make_pairs(24, seed=6))
    outside = tmp_path / "outside.png"  # a valid image, but outside the dataset's folder: never read
    Image.new("RGB", (64, 64), (255, 0, 0)).save(outside)
    df = pd.read_parquet(path)
    df.at[5, "Rejected"] = {"bytes": b"\x89PNG this is not an image", "path": None}
    df.at[9, "Chosen"] = {"bytes": None, "path": "../outside.png"}
    df.at[11, "Rejected"] = {"bytes": None, "path": str(outside)}
    df.at[17, "Chosen"] = {"bytes": b"", "path": "nowhere/missing.png"}
    df.at[20, "Prompt"] = "   "
    df.to_parquet(path)
    val = write_pairs_parquet(tmp_path / "val.parquet", make_pairs(8, seed=7))
    heads = tmp_path / "h.safetensors"
    assert run_scorer(path, val, tiny_clip_file, heads, "--epochs", "2") == 0
    out = capsys.readouterr().out
    report = out[out.index("skipped 5 unreadable row(s)") :]  # the report is at the end of the run
    assert "wrote" not in report
    assert "row 5 " in report and "'Rejected'" in report
    assert "row 9 " in report and "'../outside.png' leads outside the dataset folder" in report
    assert "row 11 " in report and "is not relative to the dataset folder" in report
    assert "row 17 " in report and "missing.png" in report
    assert "row 20 " in report and "Prompt" in report
    metrics = json.loads(heads.with_suffix(".metrics.json").read_text())
    assert [r["index"] for r in metrics["skipped_rows"]["train"]] == [5, 9, 11, 17, 20]
    assert metrics["trained"]["pairs"] == 8
    # --strict: the first unreadable row is the command's one error line (status 2), and nothing is written
    strict = tmp_path / "strict.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        run_scorer(path, val, tiny_clip_file, strict, "--epochs", "2", "--strict")
    assert exit_info.value.code == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("[scorer] error: row 5 ") and "'Rejected'" in lines[-1]
    assert not list(tmp_path.glob("strict*"))


def test_scorer_settings_are_the_commands_options():
    # the metrics file keeps the settings under "args": same names, order and defaults as the command's
    from dataclasses import fields

    from tipai_core.train.scorer import ScorerSettings, build_parser

    args = build_parser().parse_args(["--data", "d", "--backbone", "b", "--out", "o"])
    assert list(vars(args)) == [f.name for f in fields(ScorerSettings)]
    assert ScorerSettings.from_args(args) == ScorerSettings(data="d", backbone="b", out="o")


def test_scorer_help_and_missing_backbone(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["scorer", "--help"])
    assert exit_info.value.code == 0
    assert "--curriculum-start" in capsys.readouterr().out
    train = write_pairs_parquet(tmp_path / "train.parquet", make_pairs(4, seed=1, size=32))
    missing = tmp_path / "models" / "clip.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        train_main(
            [
                "scorer",
                "--data",
                str(train),
                "--backbone",
                str(missing),
                "--arch",
                TINY_ARCH,
                "--out",
                str(tmp_path / "h.safetensors"),
            ]
        )
    assert exit_info.value.code == 2
    out = capsys.readouterr().out
    assert out.startswith("[scorer] error: ") and str(missing) in out and "Traceback" not in out


# ----------------------------------------------------------------------------- the command's bad inputs

ROOT = Path(__file__).resolve().parents[3]


def run_cli(*args: str) -> tuple[int, str]:
    """``python -m tipai_core.train <args>`` in a subprocess: (exit status, stdout + stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tipai_core.train", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def assert_one_error(code: int, out: str, tag: str, needles: list[str], out_dir: Path) -> None:
    """Status 2, one ``[tag] error: ...`` line holding every needle, no traceback, nothing written."""
    assert code == 2, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"[{tag}] error: "), out
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert not out_dir.exists() or not any(out_dir.rglob("*")), list(out_dir.rglob("*"))


def _bad_scorer_input(case: str, tmp: Path) -> tuple[list[str], list[str]]:
    """(the --data/--lr/--strict arguments, what the error line must name) of one bad input."""
    good = write_pairs_parquet(tmp / "good.parquet", make_pairs(6, seed=1, size=32))
    if case == "missing column":
        pd.DataFrame({"Prompt": ["x"], "Chosen": [b""]}).to_parquet(tmp / "bad.parquet")
        return ["--data", str(tmp / "bad.parquet")], ["bad.parquet", "['Rejected', 'Category']"]
    if case == "not parquet":
        (tmp / "garbage.parquet").write_text("this is not parquet")
        return ["--data", str(tmp / "garbage.parquet")], ["garbage.parquet", "could not be read as parquet"]
    if case == "not a table file":
        (tmp / "pairs.txt").write_text("Prompt,Chosen")
        return ["--data", str(tmp / "pairs.txt")], ["pairs.txt", "unsupported pairs file"]
    if case == "missing data file":
        return ["--data", str(tmp / "nowhere.parquet")], ["nowhere.parquet", "not found"]
    if case == "no --data":
        return [], ["required: --data"]
    if case == "lr nan":
        return ["--data", str(good), "--lr", "nan"], ["argument --lr:", "(0, 1]", "'nan'"]
    df = pd.read_parquet(good)
    if case == "strict corrupt row":
        df.at[2, "Rejected"] = {"bytes": b"\x89PNG this is not an image", "path": None}
        needles = ["row 2 ", "'Rejected'"]
    else:  # "strict path outside the folder"
        (tmp / "data").mkdir()
        good = tmp / "data" / "pairs.parquet"
        df.at[1, "Chosen"] = {"bytes": None, "path": "../outside.png"}
        needles = ["row 1 ", "'../outside.png' leads outside the dataset folder"]
    df.to_parquet(good)
    return ["--data", str(good), "--strict"], needles


SCORER_CASES = [
    "missing column",
    "not parquet",
    "not a table file",
    "missing data file",
    "no --data",
    "lr nan",
    "strict corrupt row",
    "strict path outside the folder",
]


@pytest.mark.parametrize("case", SCORER_CASES)
def test_scorer_command_refuses_bad_inputs_in_one_line(case, tmp_path, tiny_clip_file):
    """Each bad input is one ``[scorer] error: ...`` line, status 2, no traceback, no file written."""
    args, needles = _bad_scorer_input(case, tmp_path)
    out_dir = tmp_path / "out"
    backbone = ["--backbone", str(tiny_clip_file), "--arch", TINY_ARCH, "--epochs", "1"]
    code, out = run_cli("scorer", *args, *backbone, "--out", str(out_dir / "h.safetensors"))
    assert_one_error(code, out, "scorer", needles, out_dir)


def test_scorer_library_call_gets_the_commands_bounds(tmp_path):
    from tipai_core.train.scorer import ScorerSettings, train_scorer

    for field, value, option in (("epochs", 0, "--epochs"), ("lr", float("nan"), "--lr"), ("seed", -1, "--seed")):
        s = ScorerSettings(data="d", backbone="b", out=str(tmp_path / "h"), **{field: value})
        with pytest.raises(ValueError, match=f"argument {option}: must be"):
            train_scorer(s)
