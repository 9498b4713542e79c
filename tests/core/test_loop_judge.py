"""Stage A on the loop's own images (``eval/shapes/loop_judge.py``): pairs from a tournament are exactly the
checker-ordered ones, capped; the finals' tournaments (previews, then final images) are what is captured; the
training items never meet an evaluation set."""

import random

import pytest
import torch

from tipai_core.eval.shapes.loop_judge import CapturingAuditor, LoopJudgeSettings, loop_pairs, tournament_pairs
from tipai_core.eval.shapes.settings import EvalSettings, oracle_pieces
from tipai_core.worlds.shapes.checker import Checker
from tipai_core.worlds.shapes.evaluate import calibration_set, development_set, held_out, training_set
from tipai_core.worlds.shapes.model import ModelConfig, ShapesUNet
from tipai_core.worlds.shapes.render import Scene, ShapeSpec, render

pytestmark = pytest.mark.usefixtures("one_thread")


def _scene(*objects):
    return render(Scene(objects), 24)


def test_pairs_are_the_checker_ordered_ones_and_capped():
    prompt = "a red circle , a blue square"
    both = _scene(ShapeSpec("circle", "red", 0.3, 0.3, 0.14), ShapeSpec("square", "blue", 0.7, 0.7, 0.14))
    one = _scene(ShapeSpec("circle", "red", 0.3, 0.3, 0.14))
    none = _scene(ShapeSpec("triangle", "green", 0.5, 0.5, 0.14))
    images = torch.stack([one, none, both, one])  # satisfied clauses 1, 0, 2, 1
    rows = tournament_pairs(prompt, images, Checker(), random.Random(0), cap=100)
    got = sorted((int(r["Chosen"].sum()), int(r["Rejected"].sum())) for r in rows)
    want = sorted((int(images[i].sum()), int(images[j].sum())) for i, j in [(0, 1), (2, 0), (2, 1), (2, 3), (3, 1)])
    assert got == want and all(r["Prompt"] == prompt and r["Category"] == "binding" for r in rows)
    assert len(tournament_pairs(prompt, images, Checker(), random.Random(0), cap=2)) == 2
    assert tournament_pairs(prompt, torch.stack([one, one]), Checker(), random.Random(0), cap=9) == []  # ties


def test_the_finals_tournaments_are_captured_and_paired():
    torch.manual_seed(0)
    model = ShapesUNet(ModelConfig(size=16, channels=(8, 16, 16), text_dim=16, text_layers=1, heads=2)).eval()
    s = EvalSettings(n_steps=6)
    c = LoopJudgeSettings(g=2, finalists=2, budget=4, per_tournament=50)
    auditor, _ = oracle_pieces(Checker())
    items = training_set(3)
    capture = CapturingAuditor(auditor)
    rows = loop_pairs(model, capture, items, s, c, log=lambda *_: None)
    # per item: the preview tournament (control + N), then the final one (control + m finalists)
    sizes = [len(images) for _, images in capture.tournaments]
    assert len(sizes) == 2 * len(items) and sizes[1::2] == [c.finalists + 1] * len(items)
    checker = Checker()
    for r in rows:
        sat = [sum(ok for _, ok in checker(img, r["Prompt"])) for img in (r["Chosen"], r["Rejected"])]
        assert sat[0] > sat[1]


def test_training_items_meet_no_evaluation_set():
    train = set(training_set(300)) | set(training_set(50, 100_000))
    for other in (held_out(300), calibration_set(300), development_set(300)):
        assert not train & set(other) and not {s for _, s in train} & {s for _, s in other}
    assert training_set(2, 5) == training_set(7)[5:]
