"""ShapesWorld auditor at CI size: contrastive open_clip backbone, pairs, Stage A via the real scorer CLI path."""

import pandas as pd
import pytest
import torch

from tipai_core.eval.shapes.settings import EvalSettings, learned_pieces
from tipai_core.eval.shapes.table import evaluate
from tipai_core.protocols import Auditor as AuditorProtocol
from tipai_core.worlds.shapes.auditor import load_auditor, train_auditor, write_pairs
from tipai_core.worlds.shapes.clip import clip_batch
from tipai_core.worlds.shapes.grammar import parse
from tipai_core.worlds.shapes.model import ModelConfig
from tipai_core.worlds.shapes.train import TrainConfig, load_model, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_clip_batch_hard_negatives_are_deterministic_and_different():
    imgs, pos, neg = clip_batch(5, 6, 24)
    imgs2, pos2, neg2 = clip_batch(5, 6, 24)
    assert torch.equal(imgs, imgs2) and pos == pos2 and neg == neg2
    assert imgs.shape == (6, 3, 24, 24)
    for p, n in zip(pos, neg):
        assert p != n
        parse(n)  # the corrupted prompt is in the grammar too


def test_stage_a_through_the_scorer_path(tmp_path):
    write_pairs(tmp_path / "probe.parquet", range(4), 24)
    df = pd.read_parquet(tmp_path / "probe.parquet")
    assert list(df.columns)[:4] == ["Prompt", "Chosen", "Rejected", "Category"]
    metrics = train_auditor(tmp_path, clip_steps=2, clip_batch=8, n_pairs=24, n_val=8, epochs=1, log=lambda *_: None)
    assert (tmp_path / "clip.safetensors").is_file() and (tmp_path / "heads.safetensors").is_file()
    assert 0 <= metrics["trained"]["pair_auc"] <= 1 and metrics["trained"]["pairs"] == 8  # held-out pairs
    aud = load_auditor(tmp_path)
    assert isinstance(aud, AuditorProtocol) and not aud.zero_shot
    sc = aud.score(torch.rand(3, 3, 24, 24), "a red circle left of a blue square")
    assert sc.S.shape == (3,) and sc.P.shape == (3, 1) and torch.isfinite(sc.S).all()
    # the learned auditor and its Grad-CAM miner drive the loop in the evaluation
    tiny = TrainConfig(
        model=ModelConfig(size=16, channels=(8, 16, 16), text_dim=16, text_layers=1, heads=2), batch=8, warmup=2
    )
    model, _ = load_model(train(tiny, 2, tmp_path / "base", log=lambda *_: None))
    s = EvalSettings(n_prompts=2, n_steps=6, audit_first=2, audit_every=2, audit_skip_last=1, n_candidates=2)
    _, rows = evaluate(model, s, None, log=lambda *_: None, pieces={"learned": learned_pieces(tmp_path)})
    assert [r["method"].split("[")[-1] for r in rows[1:]] == ["learned]", "learned]"]
    assert rows[2]["tournaments"] >= 0 and rows[2]["calls_per_image"] >= 6
