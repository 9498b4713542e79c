"""ShapesWorld: renderer, grammar, checker (tipai_core/worlds/shapes)."""

import random

import pytest
import torch

from tipai_core.worlds.shapes import grammar
from tipai_core.worlds.shapes.checker import Checker, check, scene_truth
from tipai_core.worlds.shapes.dataset import batch, example, pair, pair_scenes
from tipai_core.worlds.shapes.grammar import Clause, describe, parse, sample_spec, tokenize
from tipai_core.worlds.shapes.render import PALETTE, Scene, ShapeSpec, layout, render
from tipai_core.worlds.shapes.validate import validate


def verdicts(img, prompt):
    return [ok for _, ok in check(img, prompt)]


# --- renderer ---------------------------------------------------------------------------------


def test_render_pixels_and_determinism():
    scene = Scene((ShapeSpec("square", "red", 0.5, 0.5, 0.25),))
    img = render(scene, 32)
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert torch.allclose(img[:, 16, 16], torch.tensor(PALETTE["red"]))  # inside: the palette colour
    assert torch.allclose(img[:, 1, 1], torch.ones(3))  # outside: white background
    # square covers [0.25, 0.75]² exactly: 16×16 pixels at 32 px
    assert int(((img - 1).abs().sum(0) > 1e-6).sum()) == 256
    a, b = example(7), example(7)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert example(7, size=24)[0].shape == (3, 24, 24)
    assert not torch.equal(example(7)[0], example(8)[0])


def test_layout_respects_relation_and_gap():
    rng = random.Random(0)
    for _ in range(50):
        s = layout([("red", "circle"), ("blue", "square")], rng, ("above", 1, 0))
        a, b = s.objects
        assert b.cy + 0.15 < a.cy
        assert not a.overlaps(b, 0.07)


# --- grammar ----------------------------------------------------------------------------------


def test_parse_exact_clauses():
    assert parse("a red circle left of a blue square") == [
        Clause("binding", "red", "circle"),
        Clause("binding", "blue", "square"),
        Clause("relation", "red", "circle", relation="left of", colour2="blue", shape2="square"),
    ]
    assert parse("a green triangle above a red circle")[2].relation == "above"
    assert parse("three yellow triangles") == [Clause("count", "yellow", "triangle", n=3)]
    assert parse("a red circle , a blue square and a green triangle") == [
        Clause("binding", "red", "circle"),
        Clause("binding", "blue", "square"),
        Clause("binding", "green", "triangle"),
    ]
    for bad in [
        "",
        "a purple circle",
        "red circle",
        "a red circle left a blue square",
        "two red circle",
        "a red circle and a blue square , a green circle",
    ]:
        with pytest.raises(ValueError):
            parse(bad)


def test_grammar_round_trip_and_tokens():
    rng = random.Random(1)
    forms = set()
    for _ in range(300):
        spec = sample_spec(rng)
        forms.add(spec.form)
        text = describe(spec)
        clauses = parse(text)
        assert {c.type for c in clauses} <= set(grammar.CLAUSE_TYPES)
        ids = tokenize(text)
        assert len(ids) == grammar.MAX_TOKENS and ids[0] == grammar.BOS
        assert " ".join(grammar.VOCAB[i] for i in ids if i > 1) == " ".join(grammar.words(text))
    assert forms == set(grammar.FORMS)
    # the empty prompt (CFG dropout) keeps one unmasked key: <bos>
    assert tokenize("") == [grammar.BOS] + [grammar.PAD] * (grammar.MAX_TOKENS - 1)


def test_corruption_violates_the_prompt():
    for seed in range(200):
        prompt, (good, bad) = pair_scenes(seed)
        assert all(ok for _, ok in scene_truth(good, prompt)), prompt
        assert not all(ok for _, ok in scene_truth(bad, prompt)), prompt


# --- checker: exact on hand-made scenes --------------------------------------------------------


def test_checker_hand_made_scenes():
    rc = ShapeSpec("circle", "red", 0.25, 0.5, 0.15)
    bs = ShapeSpec("square", "blue", 0.75, 0.5, 0.15)
    img = render(Scene((rc, bs)))
    found = Checker().detect(img)
    assert sorted((d.colour, d.shape) for d in found) == [("blue", "square"), ("red", "circle")]
    d = [d for d in found if d.colour == "red"][0]
    assert abs(d.cx - 0.25) < 0.02 and abs(d.cy - 0.5) < 0.02
    assert verdicts(img, "a red circle left of a blue square") == [True, True, True]
    assert verdicts(img, "a blue square left of a red circle") == [True, True, False]
    assert verdicts(img, "a red circle above a blue square") == [True, True, False]
    # swapped binding: colours present, shapes present, but not bound as the prompt says
    assert verdicts(img, "a blue circle and a red square") == [False, False]
    tri = ShapeSpec("triangle", "green", 0.5, 0.2, 0.12)
    yt = ShapeSpec("triangle", "yellow", 0.5, 0.75, 0.12)
    img3 = render(Scene((rc, bs, tri, yt)))
    assert verdicts(img3, "a green triangle above a yellow triangle") == [True, True, True]
    assert verdicts(img3, "a yellow triangle above a green triangle") == [True, True, False]
    two = render(Scene((ShapeSpec("circle", "red", 0.25, 0.3, 0.12), ShapeSpec("circle", "red", 0.7, 0.7, 0.12))))
    assert verdicts(two, "two red circles") == [True]
    assert verdicts(two, "three red circles") == [False]
    assert verdicts(two, "two red squares") == [False]
    blank = torch.ones(3, 32, 32)
    assert Checker().detect(blank) == []
    assert verdicts(blank, "a red circle") == [False]


def test_checker_ignores_specks_and_survives_noise():
    img = render(Scene((ShapeSpec("square", "green", 0.5, 0.5, 0.2),)))
    img[:, 2, 2] = torch.tensor(PALETTE["red"])  # a one-pixel speck is below min_area
    assert [(d.colour, d.shape) for d in Checker().detect(img)] == [("green", "square")]
    noisy = (img + 0.05 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert [(d.colour, d.shape) for d in Checker().detect(noisy)] == [("green", "square")]


@pytest.mark.parametrize("size", [32, 24])
def test_checker_accuracy_on_rendered_scenes(size):
    """Must show: ≥ 98% agreement with scene ground truth, on chosen and rejected scenes."""
    acc = validate(n=300, size=size)
    print(f"checker accuracy at {size}px over 300 chosen+rejected pairs, every clause: {acc:.4f}")
    assert acc >= 0.98


def test_batch_and_pairs_shapes():
    imgs, prompts = batch(range(5), size=16)
    assert imgs.shape == (5, 3, 16, 16) and len(prompts) == 5
    p, good, bad = pair(3, size=24)
    assert good.shape == bad.shape == (3, 24, 24) and not torch.equal(good, bad)
    assert all(verdicts(good, p)) and not all(verdicts(bad, p))


def test_ragged_square_keeps_its_class():
    """Generated squares are ragged (fill ratio < 0.89) while their corners stay filled: still squares."""
    sq = render(Scene((ShapeSpec("square", "red", 0.5, 0.5, 0.25),)), 24)  # pixels 6..17
    for k in (6, 7, 16, 17):  # notch the middle of each side, two pixels deep
        sq[:, k, 9:15] = 1.0
        sq[:, 9:15, k] = 1.0
    d = Checker().detect(sq)
    assert [x.shape for x in d] == ["square"] and d[0].fill < 0.89  # the fill ratio alone says circle
    ci = render(Scene((ShapeSpec("circle", "blue", 0.5, 0.5, 0.25),)), 24)
    assert [x.shape for x in Checker().detect(ci)] == ["circle"]


def test_diagonal_ratio_closed_form():
    """q = mean diagonal extent / mean axis extent: √2 for a square, 1 for a disc (from the centre)."""
    import numpy as np

    from tipai_core.worlds.shapes.checker import diagonal_ratio

    yy, xx = np.mgrid[0:96, 0:96] + 0.5
    square = ((abs(xx - 48) <= 24) & (abs(yy - 48) <= 24)).astype(float)
    disc = ((xx - 48) ** 2 + (yy - 48) ** 2 <= 24**2).astype(float)
    assert abs(diagonal_ratio(square, 48.0, 48.0) - 2**0.5) < 0.02
    assert abs(diagonal_ratio(disc, 48.0, 48.0) - 1.0) < 0.02


@pytest.mark.parametrize("blur", [0.6, 1.0, 1.2])
def test_soft_edged_shapes_keep_their_class(blur):
    """Blurred and faded like a mid-sampling preview, squares stay squares and circles circles (the fill
    ratio reads such a square as a circle)."""
    import random

    from tipai_core.worlds.shapes.dataset import degrade

    shapes = ["square", "circle", "triangle"]
    scene = Scene(
        tuple(ShapeSpec(s, c, x, 0.5, 0.14) for s, c, x in zip(shapes, ("red", "blue", "green"), (0.2, 0.5, 0.8)))
    )
    img = render(scene, 32)
    rng = random.Random(0)
    soft = degrade(img[None], rng)[0]  # the draw below replaces blur; degrade's fade/noise stay
    import torch.nn.functional as F

    r = 3
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * blur * blur))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    b = F.conv2d(F.pad(img[None], (r, r, 0, 0), mode="replicate"), k, groups=3)
    b = F.conv2d(F.pad(b, (0, 0, r, r), mode="replicate"), k.transpose(2, 3), groups=3)[0]
    for im in (b, soft):
        d = sorted(Checker().detect(im), key=lambda x: x.cx)
        assert [x.shape for x in d] == shapes


def test_local_pairs_edit_in_place_and_violate():
    from tipai_core.worlds.shapes.checker import scene_truth
    from tipai_core.worlds.shapes.dataset import audit_pair, local_pair_scenes

    in_place = 0
    for seed in range(60):
        prompt, (good, bad) = local_pair_scenes(seed)
        assert all(ok for _, ok in scene_truth(good, prompt))
        assert not all(ok for _, ok in scene_truth(bad, prompt))
        same = len(good.objects) == len(bad.objects) and all(
            (a.cx, a.cy, a.r) == (b.cx, b.cy, b.r) for a, b in zip(good.objects, bad.objects)
        )
        swapped = len(good.objects) == len(bad.objects) and {(a.cx, a.cy) for a in good.objects} == {
            (b.cx, b.cy) for b in bad.objects
        }
        in_place += same or swapped
    assert in_place >= 40  # most corruptions are edits where the objects stand
    p1, g1, b1 = audit_pair(7, 24)
    p2, g2, b2 = audit_pair(7, 24)
    assert p1 == p2 and torch.equal(g1, g2) and torch.equal(b1, b2)  # a pure function of the seed
    assert float(g1.min()) >= 0 and float(g1.max()) <= 1
