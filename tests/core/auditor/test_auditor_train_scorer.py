"""(4) Stage A through the real CLI entry raises held-out pair-AUC clearly above the zero-shot auditor's."""

from __future__ import annotations

import json

import pytest
import torch

from auditor_synthetic import make_pairs
from tipai_core.auditor import TINY_ARCH, Auditor
from tipai_core.auditor.data import PreferencePairs, write_pairs_parquet
from tipai_core.auditor.metrics import pair_auc
from tipai_core.train.__main__ import main as train_main


def auditor_pair_aucs(aud: Auditor, pairs: PreferencePairs) -> tuple[float, float]:
    """Global and patch pair-AUC measured through Auditor.score, one batched call per prompt.

    Each pair's region is its mask, so S_R compares chosen and rejected on the rejected image's fault.
    """
    items = [pairs[i] for i in range(len(pairs))]
    s_c, s_r, sr_c, sr_r = [], [], [], []
    for prompt in sorted({it.prompt for it in items}):
        group = [it for it in items if it.prompt == prompt]
        images = torch.stack([it.chosen for it in group] + [it.rejected for it in group])
        masks = torch.stack([it.mask for it in group] * 2)
        sc = aud.score(images, prompt, masks)
        n = len(group)
        s_c.append(sc.S[:n]); s_r.append(sc.S[n:]); sr_c.append(sc.S_R[:n]); sr_r.append(sc.S_R[n:])
    return pair_auc(torch.cat(s_c), torch.cat(s_r)), pair_auc(torch.cat(sr_c), torch.cat(sr_r))


@pytest.fixture
def one_thread():
    # The test machine's 2 cores are shared; one intra-op thread avoids oversubscription stalls.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_stage_a_beats_the_zero_shot_auditor(tmp_path, tiny_clip_file, capsys, one_thread):
    train = write_pairs_parquet(tmp_path / "train.parquet", make_pairs(320, seed=1))
    val = write_pairs_parquet(tmp_path / "val.parquet", make_pairs(120, seed=2))
    heads = tmp_path / "heads.safetensors"
    rc = train_main(["scorer", "--data", str(train), "--val-data", str(val), "--backbone", str(tiny_clip_file),
                     "--arch", TINY_ARCH, "--out", str(heads), "--epochs", "40", "--seed", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "zero-shot (epoch 0)" in printed and "trained:" in printed and "per-class ROC-AUC" in printed
    metrics = json.loads(heads.with_suffix(".metrics.json").read_text())

    # Independent check: the files the trainer wrote, loaded into an Auditor, on the held-out pairs.
    pairs = PreferencePairs(val, image_size=64)
    zs_auc, zs_patch = auditor_pair_aucs(Auditor.from_files(tiny_clip_file, arch=TINY_ARCH), pairs)
    tr_auc, tr_patch = auditor_pair_aucs(Auditor.from_files(tiny_clip_file, arch=TINY_ARCH, heads=heads), pairs)
    with capsys.disabled():
        print(f"\n[stage A] held-out pair-AUC zero-shot={zs_auc:.3f} trained={tr_auc:.3f}; "
              f"patch pair-AUC zero-shot={zs_patch:.3f} trained={tr_patch:.3f}; "
              f"ECE(S) {metrics['zero_shot']['ece_S']:.3f} -> {metrics['trained']['ece_S']:.3f}")
    assert tr_auc >= zs_auc + 0.15 and tr_auc >= 0.7
    assert tr_patch >= zs_patch + 0.15
    # the trainer's own validation agrees with the auditor's scores
    assert metrics["trained"]["pair_auc"] == pytest.approx(tr_auc, abs=1e-9)
    assert metrics["zero_shot"]["pair_auc"] == pytest.approx(zs_auc, abs=1e-9)
    assert metrics["trained"]["ece_F"] < metrics["zero_shot"]["ece_F"]  # F is calibrated after training


def test_scorer_help_and_missing_backbone(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["scorer", "--help"])
    assert exit_info.value.code == 0
    assert "--curriculum-start" in capsys.readouterr().out
    train = write_pairs_parquet(tmp_path / "train.parquet", make_pairs(4, seed=1, size=32))
    missing = tmp_path / "models" / "clip.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        train_main(["scorer", "--data", str(train), "--backbone", str(missing), "--arch", TINY_ARCH,
                    "--out", str(tmp_path / "h.safetensors")])
