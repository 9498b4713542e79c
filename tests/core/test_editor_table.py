"""The ShapesWorld learned-editor table at CI size: the editor is trained on the world's in-place pairs by the
real trainer, for a tiny base model and a random auditor, and the loop runs with it against the diffusion
editor; the costs follow the cost formula."""

import pytest
import torch

from tipai_core.auditor.auditor import Auditor
from tipai_core.eval.shapes import editor_table as et
from tipai_core.eval.shapes.settings import EvalSettings
from tipai_core.mining.regions import SaliencyMiner
from tipai_core.worlds.shapes.clip import ARCH, CONFIG_DIR, build
from tipai_core.worlds.shapes.model import ModelConfig
from tipai_core.worlds.shapes.oracle import checker_saliency
from tipai_core.worlds.shapes.train import TrainConfig, load_model, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    from safetensors.torch import save_file

    cfg = TrainConfig(model=ModelConfig(size=24, channels=(8, 16, 16), text_dim=16, text_layers=1, heads=2), batch=4)
    model, _ = load_model(train(cfg, 2, tmp_path_factory.mktemp("shapes"), log=lambda *_: None))
    folder = tmp_path_factory.mktemp("auditor")
    backbone = build(0)
    save_file({k: v.contiguous() for k, v in backbone.model.state_dict().items()}, str(folder / "clip.safetensors"))
    return model, Auditor(backbone).eval(), folder


def test_the_pairs_are_in_place_edits_without_held_out_prompts(tmp_path, monkeypatch):
    monkeypatch.setattr(et, "N_PAIRS", 12)
    monkeypatch.setattr(et, "N_VAL", 4)
    tr, va = et.editor_pairs(tmp_path, 24)
    from tipai_core.auditor.data import PreferencePairs
    from tipai_core.worlds.shapes.evaluate import held_out

    pairs = PreferencePairs(tr)
    assert len(pairs) == 12 and len(PreferencePairs(va)) == 4
    banned = {p for p, _ in held_out(et.HELD_OUT_GUARD)}
    for i in range(len(pairs)):
        row = pairs[i]
        assert row.prompt not in banned
        differ = (row.chosen - row.rejected).abs().amax(0) > 0
        assert 0 < float(differ.float().mean()) <= et.MAX_EDIT_AREA  # one region differs, the rest is equal
        assert bool((row.mask[0] > 0.5)[differ].all())  # the mask covers the edit


def test_the_table_runs_the_learned_editor_against_the_diffusion_editor(pieces, tmp_path, monkeypatch):
    from tipai_core.train.editor import EditorSettings, train_editor

    model, auditor, folder = pieces
    monkeypatch.setattr(et, "N_PAIRS", 16)
    monkeypatch.setattr(et, "N_VAL", 4)
    tr, va = et.editor_pairs(tmp_path, 24)
    out = tmp_path / "editor.safetensors"
    train_editor(
        EditorSettings(data=str(tr), val_data=str(va), backbone=str(folder / "clip.safetensors"), arch=ARCH,
                       config_dir=str(CONFIG_DIR), out=str(out), family="shapes", epochs=1, width=8, device="cpu"),
        say=lambda *_: None,
    )  # fmt: skip
    s = EvalSettings(n_prompts=2, n_steps=6, audit_first=2, audit_every=2, audit_skip_last=1, n_candidates=2)
    s.knobs["depth"] = ([1, 2], [0.5, 0.5])
    miner = SaliencyMiner(checker_saliency(), k=1, threshold=0.5)
    text, rows = et.editor_table(model, s, auditor, miner, out, n=2, log=lambda *_: None)
    diffusion, learned, equal, bo = rows
    assert [r["editor"] for r in rows][:3] == ["diffusion", "learned", "learned, equal evals"]
    assert bo["editor"].startswith("best-of-") and len(bo["correct"]) == 2 and "paired differences" in text
    assert equal["n_candidates"] == round(2 * 2.5)  # N·E[d + 1] at equal denoiser compute
    assert diffusion["editor_forwards_per_image"] == 0 < learned["editor_forwards_per_image"]
    from tipai_core.eval.shapes.runs import run_plain
    from tipai_core.worlds.shapes.evaluate import held_out

    plain = sum(run_plain(model, held_out(2), s).evals)
    # per tournament the learned editor spends N rows (its audit call), the diffusion editor N·(d + 1) with
    # d in {1, 2}; an accepted edit adds one restart row
    extra_l = learned["denoiser_evals_per_image"] * 2 - plain
    assert extra_l == 2 * learned["tournaments"] + learned["accepted"] > 0
    extra_d = diffusion["denoiser_evals_per_image"] * 2 - plain - diffusion["accepted"]
    assert 2 * 2 * diffusion["tournaments"] <= extra_d <= 2 * 3 * diffusion["tournaments"]
    for r in rows[:3]:
        assert 0 <= r["accuracy"][0] <= 1 and 0 <= r["winnable"] <= 1
        assert {"delta_r", "delta_clip", "ring"} <= r.keys() and torch.isfinite(torch.tensor(r["ring"]))
    with pytest.raises(ValueError, match="trained for the 'sd15' model family; the model here is 'shapes'"):
        bad = tmp_path / "other.safetensors"
        from tipai_core.editing.learned_file import EditorIdentity, load_editor, save_editor

        net, ident = load_editor(out)
        save_editor(bad, net, EditorIdentity(ident.arch, family="sd15", text_encoder=ident.text_encoder))
        et.shapes_learned_editor(bad, auditor)
