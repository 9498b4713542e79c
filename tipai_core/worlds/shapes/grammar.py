"""The prompt grammar of ShapesWorld, its parse into typed clauses, and its token vocabulary.

Grammar (``colour`` ∈ red | yellow | green | blue, ``shape`` ∈ circle | square | triangle)::

    prompt   := count | list | relation
    object   := "a" colour shape
    count    := ("two" | "three") colour shape "s"             -> [count(c, s, n)]
    list     := object ("," object)* ["and" object]           -> [binding(c, s)] per object
    relation := object ("left of" | "right of" | "above") object
                                                              -> [binding(a), binding(b), relation(a, kind, b)]

Clause types (the rows of the evaluation table): ``binding`` (an object with colour c *and*
shape s exists), ``count`` (exactly n objects with colour c and shape s), ``relation`` (some
object matching a is left of / right of / above some object matching b, by centres).

A ``PromptSpec`` is what a prompt asks for (objects, optional relation); ``describe`` turns it
into text, ``parse`` turns text into clauses, ``corrupt`` makes a spec whose scene violates the
original prompt (a swapped binding, a reversed relation, a wrong count) for rejected pairs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .render import COLOURS, SHAPES

RELATIONS = ("left of", "right of", "above")
NUMBERS = {"two": 2, "three": 3}
NUMBER_WORDS = {v: k for k, v in NUMBERS.items()}
CLAUSE_TYPES = ("binding", "count", "relation")
FORMS = ("single", "pair", "relation", "count", "triple")
FORM_WEIGHTS = (0.25, 0.2, 0.3, 0.1, 0.15)

# token 0 pads; token 1 (<bos>) starts every sequence, so even the empty prompt of CFG dropout
# has one unmasked key and cross-attention never softmaxes over an all-masked row (NaN).
PAD, BOS = 0, 1
VOCAB = (
    ("<pad>", "<bos>", "a", "and", ",", "left", "right", "of", "above", "two", "three")
    + COLOURS
    + SHAPES
    + tuple(s + "s" for s in SHAPES)
)
TOKEN = {w: i for i, w in enumerate(VOCAB)}
MAX_TOKENS = 12  # "<bos> a red circle , a blue square and a green triangle"


@dataclass(frozen=True)
class Clause:
    """One checkable statement of a prompt.

    ``type`` is binding | count | relation; (colour, shape) the object; ``n`` the count;
    ``relation`` the kind and (colour2, shape2) the reference object of a relation.
    """

    type: str
    colour: str
    shape: str
    n: int = 1
    relation: str | None = None
    colour2: str | None = None
    shape2: str | None = None


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for: objects [(colour, shape)] and a relation (kind, i, j) or None."""

    form: str
    objects: tuple[tuple[str, str], ...]
    relation: tuple[str, int, int] | None = None


def describe(spec: PromptSpec) -> str:
    """Text of a spec in the grammar."""
    obj = [f"a {c} {s}" for c, s in spec.objects]
    if spec.form == "count":
        c, s = spec.objects[0]
        return f"{NUMBER_WORDS[len(spec.objects)]} {c} {s}s"
    if spec.form == "relation":
        if spec.relation is None:
            raise ValueError("a 'relation' PromptSpec needs a relation (kind, i, j), got None")
        kind, i, j = spec.relation
        return f"{obj[i]} {kind} {obj[j]}"
    if len(obj) == 1:
        return obj[0]
    return " , ".join(obj[:-1]) + " and " + obj[-1]


def sample_spec(rng: random.Random) -> PromptSpec:
    """A random prompt spec; objects of list and relation prompts are distinct (colour, shape) pairs."""
    form = rng.choices(FORMS, weights=FORM_WEIGHTS)[0]
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    if form == "count":
        return PromptSpec(form, (rng.choice(pairs),) * rng.choice((2, 3)))
    n = {"single": 1, "pair": 2, "relation": 2, "triple": 3}[form]
    objects = tuple(rng.sample(pairs, n))
    relation = (rng.choice(RELATIONS), 0, 1) if form == "relation" else None
    return PromptSpec(form, objects, relation)


def corrupt(spec: PromptSpec, rng: random.Random) -> PromptSpec:
    """A spec whose scenes violate at least one clause of ``describe(spec)``.

    binding: swap the colours of two objects with different colours and shapes (both binding
    clauses fail), else recolour one object; relation: additionally may reverse the relation
    (objects i, j swap roles); count: a different number of the same object.
    """
    objs = list(spec.objects)
    if spec.form == "count":
        n = rng.choice([k for k in (1, 2, 3) if k != len(objs)])
        return PromptSpec("count" if n > 1 else "single", (objs[0],) * n)
    if spec.form == "relation" and rng.random() < 0.5:
        if spec.relation is None:
            raise ValueError("a 'relation' PromptSpec needs a relation (kind, i, j), got None")
        kind, i, j = spec.relation
        return PromptSpec(spec.form, spec.objects, (kind, j, i))
    swappable = [
        (i, j)
        for i in range(len(objs))
        for j in range(i + 1, len(objs))
        if objs[i][0] != objs[j][0] and objs[i][1] != objs[j][1]
    ]
    if swappable:
        i, j = rng.choice(swappable)
        (ci, si), (cj, sj) = objs[i], objs[j]
        objs[i], objs[j] = (cj, si), (ci, sj)
    else:
        i = rng.randrange(len(objs))
        c, s = objs[i]
        objs[i] = (rng.choice([k for k in COLOURS if k != c]), s)
    return PromptSpec(spec.form, tuple(objs), spec.relation)


def words(text: str) -> list[str]:
    return text.lower().replace(",", " , ").split()


def parse(text: str) -> list[Clause]:
    """Clauses of a prompt in the grammar; ValueError on anything else."""
    w = words(text)
    if not w:
        raise ValueError("empty prompt")

    def obj(k: int) -> tuple[tuple[str, str], int]:
        if k + 2 < len(w) and w[k] == "a" and w[k + 1] in COLOURS and w[k + 2] in SHAPES:
            return (w[k + 1], w[k + 2]), k + 3
        raise ValueError(f"expected 'a <colour> <shape>' at word {k} of {text!r}")

    if w[0] in NUMBERS:
        if len(w) == 3 and w[1] in COLOURS and w[2].endswith("s") and w[2][:-1] in SHAPES:
            return [Clause("count", w[1], w[2][:-1], n=NUMBERS[w[0]])]
        raise ValueError(f"expected '<number> <colour> <shapes>' in {text!r}")
    a, k = obj(0)
    if k < len(w) and w[k] in ("left", "right", "above"):
        kind = "above" if w[k] == "above" else f"{w[k]} of"
        k += 1 if kind == "above" else 2
        if kind != "above" and w[k - 1] != "of":
            raise ValueError(f"expected 'of' after {w[k - 2]!r} in {text!r}")
        b, k = obj(k)
        if k != len(w):
            raise ValueError(f"trailing words in {text!r}")
        return [
            Clause("binding", *a),
            Clause("binding", *b),
            Clause("relation", a[0], a[1], relation=kind, colour2=b[0], shape2=b[1]),
        ]
    objects = [a]
    while k < len(w):
        sep = w[k]
        if sep not in (",", "and"):
            raise ValueError(f"unexpected {sep!r} in {text!r}")
        o, k = obj(k + 1)
        objects.append(o)
        if sep == "and" and k != len(w):
            raise ValueError(f"'and' must join the last object in {text!r}")
    return [Clause("binding", c, s) for c, s in objects]


def tokenize(text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
    """``[<bos>, w_1, ..., <pad>...]`` of length max_tokens; the empty prompt is just ``<bos>``."""
    ids = [BOS] + [TOKEN[t] for t in words(text)]
    if len(ids) > max_tokens:
        raise ValueError(f"{text!r} has {len(ids)} tokens > {max_tokens}")
    return ids + [PAD] * (max_tokens - len(ids))
