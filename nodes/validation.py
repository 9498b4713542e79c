"""Input checks of the TiPAI nodes: each node checks what it owns, before anything samples.

ComfyUI checks a widget against its min/max, but NaN and inf pass that check, and a comma list
is only text to it. So each settings node runs ``check_widgets`` (finite, within the schema's own
min/max) and parses its lists with ``number_list`` (each value finite and inside the library's
range for that knob), both in ``validate_inputs``, which ComfyUI runs while it validates the whole
graph (before any node executes), and again at ``execute`` for direct calls and linked values.
Every message names the node, the input and the allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

MAX_LIST = 32  # values in one comma list: more is a typo, and every value is a candidate branch


def _schema_inputs(cls) -> dict[str, Any]:
    return {inp.id: inp for inp in cls.define_schema().inputs}


def _node_name(cls) -> str:
    return cls.define_schema().display_name or cls.define_schema().node_id


def check_number(
    node: str, name: str, value: Any, lo: float | None = None, hi: float | None = None, integer: bool = False
) -> None:
    """A finite number (an int where ``integer``) in [lo, hi]."""
    kind = "a whole number" if integer else "a finite number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        ok = False
    if not ok:
        span = f" in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        raise ValueError(f"{node}: {name} must be {kind}{span}, got {value!r}")


def check_widgets(cls, values: Mapping[str, Any], required: bool = False) -> None:
    """Each given widget value is valid for the schema: INT/FLOAT finite and within min/max, a combo one of
    its options, a boolean a bool (None: linked or left out, skipped)."""
    node = _node_name(cls)
    inputs = _schema_inputs(cls)
    for name, value in values.items():
        inp = inputs.get(name)
        if inp is None:
            continue
        kind = inp.get_io_type()
        if value is None:
            # in validate_inputs None means "linked"; at execute every widget has a value (an optional one
            # left out gets execute's own default, never None), so None there is a bad value
            if required and kind in ("INT", "FLOAT", "COMBO", "BOOLEAN", "STRING"):
                raise ValueError(f"{node}: {name} is missing")
            continue
        if kind in ("INT", "FLOAT"):
            check_number(node, name, value, getattr(inp, "min", None), getattr(inp, "max", None), integer=kind == "INT")
        elif kind == "COMBO":
            options = list(getattr(inp, "options", None) or [])
            if options and value not in options:
                shown = options if len(options) <= 12 else [*options[:12], "..."]
                raise ValueError(f"{node}: {name} must be one of {shown}, got {value!r}")
        elif kind == "BOOLEAN" and not isinstance(value, bool):
            raise ValueError(f"{node}: {name} must be true or false, got {value!r}")


def number_list(node: str, name: str, text: Any, cast: type, lo: float, hi: float) -> tuple:
    """A comma list widget ("0.5, 1.0") as a tuple of ``cast`` values, each finite and in [lo, hi]."""
    if not isinstance(text, str):
        raise ValueError(f"{node}: {name} must be a comma-separated list, got {text!r}")
    parts = [v.strip() for v in text.replace(";", ",").split(",")]
    if not any(parts):
        raise ValueError(f"{node}: {name} is empty; give at least one value in [{lo}, {hi}]")
    if len(parts) > MAX_LIST:
        raise ValueError(f"{node}: {name} holds {len(parts)} values; at most {MAX_LIST}")
    values = []
    for p in parts:
        if not p:
            raise ValueError(f"{node}: {name} has an empty entry in {text!r}; write values like '1, 2'")
        try:
            v = float(p)
        except ValueError:
            raise ValueError(f"{node}: {name} must be a comma-separated list of numbers, got {p!r}") from None
        check_number(node, name, v, lo, hi, integer=cast is int)
        values.append(cast(v))
    return tuple(values)


def as_validation(check: Callable[[], Any]) -> bool | str:
    """``validate_inputs``' answer: True, or the check's message (ComfyUI shows it on the node)."""
    try:
        check()
    except ValueError as exc:
        return str(exc)
    return True


def check_image(node: str, name: str, pixels: Any, multiple_of: int | None = None) -> None:
    """Pixels ``[B, 3, H, W]`` (finite already: ``types.image_to_core`` refuses NaN and inf before its clamp);
    with ``multiple_of``, H and W whole multiples of it (at least one)."""
    h, w = int(pixels.shape[-2]), int(pixels.shape[-1])
    if multiple_of and (h < multiple_of or w < multiple_of or h % multiple_of or w % multiple_of):
        raise ValueError(
            f"{node}: {name} is {w}x{h} pixels (width x height); both must be multiples of the VAE "
            f"factor {multiple_of}, at least {multiple_of}: resize or crop it"
        )


def check_mask(node: str, name: str, mask: Any, size: tuple[int, int], nonempty: bool = False) -> None:
    """A finite mask ``[B, 1, H, W]`` of the image's ``size = (H, W)``; with ``nonempty``, some pixel set."""
    if not bool(mask.isfinite().all()):
        raise ValueError(f"{node}: {name} contains NaN or inf values")
    if tuple(mask.shape[-2:]) != tuple(size):
        raise ValueError(
            f"{node}: {name} is {mask.shape[-1]}x{mask.shape[-2]} (width x height) but the image is "
            f"{size[1]}x{size[0]}; resize the mask to the image"
        )
    if nonempty and not bool((mask > 0).any()):
        raise ValueError(f"{node}: {name} is empty; paint the region to repair")
