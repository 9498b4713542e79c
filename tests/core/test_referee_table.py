"""The ShapesWorld referee tables at CI size: every setting of the grid runs, the numbers are in range and the
costs follow the settings (a tiny base model and two random auditors of different seeds)."""

import pytest

from tipai_core.auditor.auditor import Auditor
from tipai_core.eval.shapes.referee_table import grid, referee_table, tournament_table
from tipai_core.eval.shapes.settings import EvalSettings
from tipai_core.mining.regions import SaliencyMiner
from tipai_core.worlds.shapes.clip import build
from tipai_core.worlds.shapes.model import ModelConfig
from tipai_core.worlds.shapes.oracle import checker_saliency
from tipai_core.worlds.shapes.train import TrainConfig, load_model, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    cfg = TrainConfig(model=ModelConfig(size=24, channels=(8, 16, 16), text_dim=16, text_layers=1, heads=2), batch=4)
    model, _ = load_model(train(cfg, 2, tmp_path_factory.mktemp("shapes"), log=lambda *_: None))
    return model, Auditor(build(0)).eval(), Auditor(build(1)).eval()


def test_referee_table_covers_the_grid(pieces, monkeypatch):
    import tipai_core.eval.shapes.referee_table as rt

    model, a, b = pieces
    small = [(name, s.__class__(**{**s.__dict__, "steps": 2})) for name, s in grid()]
    monkeypatch.setattr(rt, "grid", lambda: small)
    text, rows = referee_table(model, a, b, n=2, steps=4, cfg=3.0, log=lambda *_: None)
    assert [r["setting"] for r in rows] == [n for n, _ in grid()] and len(rows) == 8
    for (name, s), r in zip(small, rows):
        assert 0 <= r["accuracy"][0] <= 1 and r["accuracy"][1] <= r["accuracy"][0] <= r["accuracy"][2]
        # per image and step: the plain image forward, then K views forward and back (or the image itself)
        k = max(1, s.n_augment)
        assert r["auditor_passes_per_image"] == s.steps * (1 + 2 * k) + 1, name
    assert "gap (a)-(c)" in text


def test_tournament_table_compares_the_two_editors(pieces):
    model, a, _ = pieces
    s = EvalSettings(n_prompts=2, n_steps=6, audit_first=2, audit_every=2, audit_skip_last=1, n_candidates=2)
    miner = SaliencyMiner(checker_saliency(), k=1, threshold=0.5)
    text, rows = tournament_table(model, s, a, miner, n=2, log=lambda *_: None)
    diffusion, referee = rows
    assert diffusion["editor"] == "diffusion editor" and referee["editor"] == "referee editor"
    # the referee makes no denoiser call of its own: only the base steps (and restarts) count
    assert referee["denoiser_evals_per_image"] <= diffusion["denoiser_evals_per_image"]
    assert referee["auditor_images_per_image"] > diffusion["auditor_images_per_image"]
    assert 0 <= referee["winnable"] <= 1
