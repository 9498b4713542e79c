"""Hypothesis strategies for the TiPAI nodes, derived from each node's own V3 schema.

``widgets(cls)`` reads ``cls.define_schema().inputs`` (ids, types, min/max, combo options, defaults),
so an input added to a node is fuzzed without touching this file. For each widget there is

- ``valid_values(w)``: a strategy of values ComfyUI's graph validation would pass, and
- ``edge_values(w)``: the values that broke things before: NaN, ±inf, 1e9, negatives, 0, just
  outside min/max, unconvertible text; for comma-list strings "nan", "1,,2", "1000", ...; for
  filename prefixes "../../etc/x", "a/b", ...

Socket inputs (IMAGE, MASK, ...) have labelled tensor variants (``MASKS``, ``IMAGES``): a label is
drawn, the tensor is built from it, so a failure report can say ``user_mask=<nan>``.

ComfyUI's API is imported lazily: it is importable only once ``InProcessComfy`` has set it up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st

INT, FLOAT, STRING, COMBO, BOOLEAN = "INT", "FLOAT", "STRING", "COMBO", "BOOLEAN"
WIDGET_KINDS = (INT, FLOAT, STRING, COMBO, BOOLEAN)


@dataclass(frozen=True)
class Widget:
    """One input of a node's schema, as far as fuzzing needs it."""

    id: str
    kind: str  # INT, FLOAT, STRING, COMBO, BOOLEAN, or the socket's io type ("MASK", "TIPAI_MINER", ...)
    optional: bool
    default: Any = None
    min: Any = None
    max: Any = None
    options: tuple = ()
    display_name: str | None = None

    @property
    def is_widget(self) -> bool:
        return self.kind in WIDGET_KINDS


def widgets(cls) -> list[Widget]:
    """Every input of ``cls`` (a V3 node class), read from its own schema."""
    from comfy_api.latest import io

    out = []
    for inp in cls.define_schema().inputs:
        if isinstance(inp, io.Int.Input):
            kind = INT
        elif isinstance(inp, io.Float.Input):
            kind = FLOAT
        elif isinstance(inp, io.String.Input):
            kind = STRING
        elif isinstance(inp, io.Combo.Input):
            kind = COMBO
        elif isinstance(inp, io.Boolean.Input):
            kind = BOOLEAN
        else:
            kind = str(inp.get_io_type())
        out.append(
            Widget(
                id=inp.id,
                kind=kind,
                optional=bool(getattr(inp, "optional", False)),
                default=getattr(inp, "default", None),
                min=getattr(inp, "min", None),
                max=getattr(inp, "max", None),
                options=tuple(getattr(inp, "options", None) or ()),
                display_name=getattr(inp, "display_name", None),
            )
        )
    return out


# ---------------------------------------------------------------- string flavours


def _numbers(text: str) -> list[float] | None:
    parts = [p.strip() for p in str(text).replace(";", ",").split(",")]
    try:
        return [float(p) for p in parts if p]
    except ValueError:
        return None


def is_list_string(w: Widget) -> bool:
    """A comma-separated number list ("1, 2", "0.5, 1.0"): its default parses as numbers."""
    if w.kind != STRING or not isinstance(w.default, str) or not w.default.strip():
        return False
    return bool(_numbers(w.default))


def is_prefix_string(w: Widget) -> bool:
    return w.kind == STRING and "prefix" in w.id


def is_prompt_string(w: Widget) -> bool:
    return w.kind == STRING and "prompt" in w.id


LIST_EDGES = (
    "nan",
    "inf",
    "-inf",
    "1e9",
    "",
    "1,,2",
    "a",
    "-1",
    "1000",
    "0",
    " ",
    "1, nan",
    "0.5, 1e9",
    "1.5",
    "-0",
    "1e-9",
    ", ".join(["1"] * 200),
    "1e400",
)
PREFIX_EDGES = ("../../etc/x", "", "a/b", "  ", ".", "..", "a" * 300, "/abs", "a b", "nul\x00x", "C:\\x", "ä-ok")
PROMPT_EDGES = ("", "   ", "\n\t", "ä漢字🙂", "x " * 1200, "nan", "a, (b:1.5), [c]")
TEXT_EDGES = ("", "   ", "../../etc/x", "x" * 500, "nan", "ä漢字")
COMBO_EDGES = ("no_such_option", "", "../../etc/x", None)
VALID_PROMPTS = ("a red circle left of a blue square", "a cat", "a red circle")


# ---------------------------------------------------------------- valid values


def valid_values(w: Widget) -> st.SearchStrategy:
    """Values ComfyUI's own validation passes (type converts, within min/max, in the combo list)."""
    if w.kind == INT:
        lo = w.min if w.min is not None else -(2**31)
        hi = w.max if w.max is not None else 2**31
        picks = [v for v in (w.default, lo, hi) if v is not None]
        return st.one_of(st.sampled_from(picks), st.integers(lo, hi))
    if w.kind == FLOAT:
        lo = w.min if w.min is not None else -1e6
        hi = w.max if w.max is not None else 1e6
        picks = [v for v in (w.default, lo, hi) if v is not None]
        return st.one_of(st.sampled_from(picks), st.floats(lo, hi, allow_nan=False, allow_infinity=False))
    if w.kind == BOOLEAN:
        return st.sampled_from([w.default if w.default is not None else False, True, False])
    if w.kind == COMBO:
        opts = list(w.options)
        if w.default in opts:
            opts.remove(w.default)
            opts.insert(0, w.default)
        return st.sampled_from(opts)
    if w.kind == STRING:
        if is_list_string(w):
            vals = [p.strip() for p in w.default.replace(";", ",").split(",") if p.strip()]
            return st.one_of(
                st.just(w.default),
                st.lists(st.sampled_from(vals), min_size=1, max_size=3).map(", ".join),
            )
        if is_prefix_string(w):
            return st.sampled_from([w.default or "tipai", "fuzz", "fuzz_log-1"])
        if is_prompt_string(w):
            return st.sampled_from(VALID_PROMPTS)
        return st.just(w.default if w.default is not None else "")
    raise ValueError(f"{w.id}: {w.kind} is a socket, not a widget")


# ---------------------------------------------------------------- edge values


def _number_edges(w: Widget) -> list:
    if w.kind == INT:
        out: list = [0, -1, 1, 10**9, -(10**9), 2**64, 2.5, "3", "abc", None]
        out += [] if w.min is None else [w.min, w.min - 1]
        out += [] if w.max is None else [w.max, w.max + 1]
        return out
    out = [math.nan, math.inf, -math.inf, 1e9, -1e9, 0.0, -0.0, -1.0, 1e-300, 1e308, "nan", "inf", "abc", None]
    out += [] if w.min is None else [w.min, w.min - 0.01, math.nextafter(w.min, -math.inf)]
    out += [] if w.max is None else [w.max, w.max + 0.01, math.nextafter(w.max, math.inf)]
    return out


def _string_edges(w: Widget) -> list:
    if is_list_string(w):
        return list(LIST_EDGES)
    if is_prefix_string(w):
        return list(PREFIX_EDGES)
    if is_prompt_string(w):
        return list(PROMPT_EDGES)
    return list(TEXT_EDGES)


def edge_values(w: Widget) -> list:
    """The edge values for one widget. Some are rejected by ComfyUI's validation, some are not
    (NaN passes its min/max check, "nan" converts to NaN, 2.5 converts to 2): the classifier runs
    ComfyUI's own per-node validation to tell which."""
    if w.kind in (INT, FLOAT):
        out = _number_edges(w)
    elif w.kind == BOOLEAN:
        out = ["false", 0, 1, None]
    elif w.kind == COMBO:
        out = list(COMBO_EDGES) + ([str(w.options[0]).upper() + "_"] if w.options else [])
    elif w.kind == STRING:
        out = _string_edges(w)
    else:
        out = []
    seen, uniq = set(), []
    for v in out:
        key = (type(v).__name__, repr(v))
        if key not in seen:
            seen.add(key)
            uniq.append(v)
    return uniq


# ---------------------------------------------------------------- tensors for sockets


def _blob(h: int, w: int) -> torch.Tensor:
    m = torch.zeros(1, h, w)
    m[:, h // 4 : max(h // 4 + 1, 3 * h // 4), w // 4 : max(w // 4 + 1, 3 * w // 4)] = 1.0
    return m


def _half_nan(h: int, w: int) -> torch.Tensor:
    m = _blob(h, w)
    m[:, : h // 2] = math.nan
    return m


_MASK_MAKERS = {
    "blob": _blob,
    "soft": lambda h, w: torch.rand(1, h, w, generator=torch.Generator().manual_seed(h * 31 + w)),
    "zeros": lambda h, w: torch.zeros(1, h, w),
    "ones": lambda h, w: torch.ones(1, h, w),
    "nan": lambda h, w: torch.full((1, h, w), math.nan),
    "half_nan": _half_nan,
    "inf": lambda h, w: torch.full((1, h, w), math.inf),
    "negative": lambda h, w: -_blob(h, w),
    "huge": lambda h, w: _blob(h, w) * 1e9,
    "bool": lambda h, w: _blob(h, w) > 0.5,
    "2d": lambda h, w: _blob(h, w)[0],
    "4d": lambda h, w: _blob(h, w)[:, None],
    "batch2": lambda h, w: torch.cat([_blob(h, w), _blob(h, w)]),
    "32x32": lambda h, w: _blob(32, 32),
    "1x1": lambda h, w: torch.ones(1, 1, 1),
    "63x65": lambda h, w: _blob(63, 65),
    "empty": lambda h, w: torch.zeros(1, 0, 0),
    "5d": lambda h, w: _blob(h, w)[:, None, None],
}


def make_mask(label: str, h: int = 64, w: int = 64) -> torch.Tensor | None:
    """A MASK [B, H, W] (or a wrong shape) for an image of h x w pixels, by label ("none": None)."""
    return None if label == "none" else _MASK_MAKERS[label](h, w)


MASKS = ("none", *_MASK_MAKERS)
VALID_MASKS = ("blob", "soft", "ones")


def _rand(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape) * 104729))


_IMAGE_MAKERS = {
    "rand64": lambda: _rand(1, 64, 64, 3),
    "rand128": lambda: _rand(1, 128, 128, 3),
    "zeros64": lambda: torch.zeros(1, 64, 64, 3),
    "rgba64": lambda: _rand(1, 64, 64, 4),
    "gray64": lambda: _rand(1, 64, 64, 1),
    "1x1": lambda: _rand(1, 1, 1, 3),
    "63x65": lambda: _rand(1, 63, 65, 3),
    "nan64": lambda: torch.full((1, 64, 64, 3), math.nan),
    "inf64": lambda: torch.full((1, 64, 64, 3), math.inf),
    "huge64": lambda: _rand(1, 64, 64, 3) * 1e9 - 5e8,
    "batch2": lambda: _rand(2, 64, 64, 3),
    "3d64": lambda: _rand(64, 64, 3),
    "chw64": lambda: _rand(1, 3, 64, 64),
}


def make_image(label: str) -> torch.Tensor:
    """An IMAGE [B, H, W, C] (or a wrong shape), by label; values in [0, 1] unless the label says not."""
    return _IMAGE_MAKERS[label]()


IMAGES = tuple(_IMAGE_MAKERS)
VALID_IMAGES = ("rand64", "rand128", "zeros64", "batch2")


def image_hw(label: str) -> tuple[int, int]:
    """The (H, W) a mask "at the image size" takes for an image label."""
    return {"rand128": (128, 128), "1x1": (1, 1), "63x65": (63, 65), "chw64": (3, 64)}.get(label, (64, 64))


# ---------------------------------------------------------------- one case


@dataclass
class Case:
    """One generated call of a node: the widget values (before ComfyUI's conversion), the socket
    labels and objects, and which inputs carry an edge value (empty: every input is valid)."""

    node_id: str
    widgets: dict[str, Any]
    sockets: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # socket id -> label for reports
    targets: tuple[str, ...] = ()

    def describe(self, limit: int = 400) -> str:
        parts = [f"{k}={_short(v)}" for k, v in self.widgets.items()]
        parts += [f"{k}=<{v}>" for k, v in self.labels.items()]
        text = ", ".join(parts)
        if len(text) > limit:
            # the edge inputs first, then the rest
            first = [p for p in parts if p.split("=", 1)[0] in self.targets]
            text = ", ".join(first) + " | " + ", ".join(p for p in parts if p not in first)
            text = text[:limit] + "..."
        return text


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:24] + f"...<{len(r)} chars>"


@st.composite
def widget_case(
    draw,
    ws: list[Widget],
    overrides: dict | None = None,
    edge_overrides: dict | None = None,
    keep: tuple = (),
    edge_share: int = 7,
):
    """(values, targets): widget values, each valid; in ``edge_share`` cases of 10 one input (in one
    of those, two) takes an edge value instead. Optional widgets are sometimes left out (the node's
    Python default then applies, as when a saved workflow predates the input), except those in ``keep``."""
    overrides = overrides or {}
    edge_overrides = edge_overrides or {}
    fuzzable = [w for w in ws if w.is_widget]
    mode = draw(st.integers(0, 9))  # below 10 - edge_share: all valid; 9: two edges; else one
    targets: list[str] = []
    if mode >= 10 - edge_share and fuzzable:
        n = 2 if mode == 9 and edge_share > 1 and len(fuzzable) > 1 else 1
        targets = draw(st.lists(st.sampled_from([w.id for w in fuzzable]), min_size=n, max_size=n, unique=True))
    values: dict[str, Any] = {}
    for w in fuzzable:
        if w.id in targets:
            edges = edge_overrides.get(w.id, edge_values(w))
            values[w.id] = draw(st.sampled_from(edges))
            continue
        if w.optional and w.id not in keep and draw(st.integers(0, 4)) == 0:
            continue  # left out
        values[w.id] = draw(overrides.get(w.id, valid_values(w)))
    return values, tuple(targets)


# ---------------------------------------------------------------- the systematic sweep


def base_value(w: Widget, base: dict | None = None) -> Any:
    """A valid value to hold an input at while another one is swept: ``base``, else the schema's default."""
    if base and w.id in base:
        return base[w.id]
    if w.kind == COMBO:
        return w.default if w.default in w.options else (w.options[0] if w.options else w.default)
    if w.kind == STRING and is_prompt_string(w) and not w.default:
        return VALID_PROMPTS[0]
    if w.default is not None:
        return w.default
    if w.kind in (INT, FLOAT):
        return w.min if w.min is not None else 0
    return False if w.kind == BOOLEAN else ""


def sweep(ws: list[Widget], base: dict | None = None, edge_overrides: dict | None = None) -> list[tuple[dict, tuple]]:
    """Every edge value of every widget once, the other widgets at their base value (plus the base
    itself): the explicit examples each stage runs before hypothesis generates its own, so a given
    edge is tried whatever the random draws are."""
    widgets_ = [w for w in ws if w.is_widget]
    start = {w.id: base_value(w, base) for w in widgets_}
    out: list[tuple[dict, tuple]] = [(dict(start), ())]
    for w in widgets_:
        for e in (edge_overrides or {}).get(w.id, edge_values(w)):
            out.append(({**start, w.id: e}, (w.id,)))
    return out
