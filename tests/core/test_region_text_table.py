"""Inpaint Biases in ShapesWorld (``eval/shapes/region_text_table.py``): the parsed-phrase upper bound names
the failing clause that a region's objects belong to, on rendered scenes with known truth; and in the loop,
the region's text reaches the editor's third CFG branch and only its records say so."""

import pytest
import torch

from tipai_core.eval.shapes.region_text_table import ParsedPhraseMiner, clause_phrase, parsed_phrase
from tipai_core.mining.regions import Region
from tipai_core.worlds.shapes.checker import Checker
from tipai_core.worlds.shapes.grammar import parse
from tipai_core.worlds.shapes.render import Scene, ShapeSpec, render

SIZE = 24


def _view(*objects: ShapeSpec) -> torch.Tensor:
    return render(Scene(objects), SIZE)[None]


def _box(cx: float, cy: float, r: float) -> Region:
    m = torch.zeros(1, 1, SIZE, SIZE)
    y0, y1, x0, x1 = (int((c - r - 0.04) * SIZE) for c in (cy, cy + 2 * r + 0.08, cx, cx + 2 * r + 0.08))
    m[..., max(0, y0) : y1, max(0, x0) : x1] = 1
    return Region.from_mask(m)


def test_clause_phrases_are_the_grammars_own_text():
    for text in (
        "a red circle",
        "two blue squares",
        "a green triangle above a yellow circle",
        "a red circle left of a blue square",
    ):
        clauses = parse(text)
        assert clause_phrase(clauses[-1]) == text  # the last clause: the one binding, the count, the relation


def test_the_parsed_phrase_is_the_failing_clause_the_region_covers():
    checker = Checker()
    prompt = "a red circle , a blue square and a green triangle"
    # asked: red circle, blue square, green triangle; drawn: a red SQUARE, a blue TRIANGLE, the green triangle
    view = _view(
        ShapeSpec("square", "red", 0.25, 0.25, 0.13),
        ShapeSpec("triangle", "blue", 0.75, 0.25, 0.13),
        ShapeSpec("triangle", "green", 0.5, 0.75, 0.13),
    )
    assert [ok for _, ok in checker(view[0], prompt)] == [False, False, True]
    assert parsed_phrase(checker, view, prompt, _box(0.25, 0.25, 0.13)) == "a red circle"  # by its colour
    assert parsed_phrase(checker, view, prompt, _box(0.75, 0.25, 0.13)) == "a blue square"
    # the region holds the satisfied green triangle only: nothing failing there, so the first failing clause
    assert parsed_phrase(checker, view, prompt, _box(0.5, 0.75, 0.13)) == "a red circle"
    assert parsed_phrase(checker, view, "a green triangle", _box(0.5, 0.75, 0.13)) is None


def test_a_wrong_relation_names_the_relation():
    checker = Checker()
    view = _view(ShapeSpec("circle", "red", 0.75, 0.5, 0.14), ShapeSpec("square", "blue", 0.25, 0.5, 0.14))
    prompt = "a red circle left of a blue square"
    assert parsed_phrase(checker, view, prompt, _box(0.75, 0.5, 0.14)) == prompt
    assert parsed_phrase(checker, view, "a red circle right of a blue square", _box(0.75, 0.5, 0.14)) is None


def test_the_parsed_phrase_miner_only_sets_the_text(one_thread):
    checker = Checker()
    view = _view(ShapeSpec("square", "red", 0.3, 0.3, 0.14))
    region = _box(0.3, 0.3, 0.14)
    calls = []

    def inner(image, prompt, user_mask=None):
        calls.append(prompt)
        return [region]

    (r,) = ParsedPhraseMiner(inner, checker)(view, "a red circle")
    assert r.prompt == "a red circle" and torch.equal(r.mask, region.mask) and calls == ["a red circle"]
    (r,) = ParsedPhraseMiner(inner, checker)(view, "a red square")
    assert r.prompt is None  # every clause holds: the region keeps what it had


@pytest.mark.parametrize("with_text", [False, True])
def test_in_the_loop_the_region_text_reaches_the_editor_and_its_record(with_text, one_thread, tmp_path):
    from dataclasses import replace

    from tipai_core.eval.shapes.runs import LabellingAuditor, run_tipai
    from tipai_core.eval.shapes.settings import EvalSettings, make_suite, oracle_pieces
    from tipai_core.records.tournament_log import iter_records
    from tipai_core.worlds.shapes.model import ModelConfig, ShapesUNet

    torch.manual_seed(0)
    model = ShapesUNet(ModelConfig(size=16, channels=(8, 16, 16), text_dim=16, text_layers=1, heads=2)).eval()
    s = EvalSettings(n_prompts=2, n_steps=6, audit_every=2, audit_first=2, audit_skip_last=2)
    checker = Checker()
    auditor, miner = oracle_pieces(checker)
    suite = make_suite(s, LabellingAuditor(auditor, checker), ParsedPhraseMiner(miner, checker) if with_text else miner)
    told = []

    class Recording:  # the editor as it is, and what each of its tournaments was told inside the region
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, ctx, region_mask, actions):
            told.append(ctx.region_payload)
            return self.inner(ctx, region_mask, actions)

    encoded = []

    def encoder(text):  # ShapesWorld's payload is the text itself (its model tokenizes it)
        encoded.append(text)
        return text

    suite = replace(suite, editor=Recording(suite.editor), region_encoder=encoder)
    items = [("a red circle , a blue square", 3), ("two green triangles", 5), ("a blue circle above a red square", 7)]
    log = tmp_path / "t.jsonl"
    run_tipai(model, items, s, suite, log)
    recs = list(iter_records([log]))
    assert recs and len(told) == len(recs)
    texts = [r.region["prompt"] for r in recs]
    assert told == texts and encoded == [t for t in texts if t]  # the encoder's payload, or the base prompt (None)
    if with_text:
        assert any(texts) and all(t is None or parse(t) for t in texts)
    else:
        assert not any(texts)
