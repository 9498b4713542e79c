"""What every stage's command line shares: parse, run the library function, report errors plainly.

Every numeric option of every stage is parsed by ``bounded`` (one home for the rule): finite (NaN and
inf refused) and inside a documented range; a value outside it is refused at parse time, before any
work starts, with ``[stage] error: argument --opt: ...`` naming the option and the range. Parse errors
and bad inputs (ValueError, OSError) print that one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

SEED_MAX = 2**63 - 1  # seeds: 0 .. 2^63 - 1 (torch generators take 64 bits)


class StageParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``[tag] error: ...`` line (stdout) and exit status 2."""

    def __init__(self, *args: Any, tag: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tag = tag

    def error(self, message: str) -> NoReturn:
        fail(self.tag, f"{message} (see --help)")


def fail(tag: str, message: str) -> NoReturn:
    """Print ``[tag] error: message`` as one line and exit with status 2."""
    print(f"[{tag}] error: " + " ".join(str(message).split()))
    raise SystemExit(2)


def _fmt(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def range_text(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    """``[lo, hi]``, ``(lo, hi]``, ``>= lo``... as the help and the errors say it."""
    if lo is not None and hi is not None:
        return f"{'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_fmt(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_fmt(hi)}"
    return "any finite value"


def bounded(
    kind: type,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Callable[[str], Any]:
    """An argparse ``type=``: ``kind`` (int or float) parsed from the text, finite, inside [lo, hi]
    (``lo_open``/``hi_open``: that end excluded). The error names the allowed range."""
    if kind not in (int, float):
        raise TypeError(f"bounded() takes int or float, not {kind!r}")
    where = range_text(lo, hi, lo_open, hi_open)
    noun = "an integer" if kind is int else "a finite number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {noun} in {where}, got {text!r}") from None
        ok = math.isfinite(value)
        ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
        ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {noun} in {where}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    # what the help, check_ranges and the tests read: the range as text and as numbers
    for name, value in dict(range=where, kind=kind, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open).items():
        setattr(parse, name, value)
    return parse


def number(
    group: Any,
    flag: str,
    kind: type,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    help: str = "",
    **kwargs: Any,
) -> argparse.Action:
    """``group.add_argument(flag, type=bounded(...))`` with the range (and default) appended to the help."""
    parse = bounded(kind, lo, hi, lo_open=lo_open, hi_open=hi_open)
    text = f"{help}; " if help else ""
    text += f"range {parse.range}"  # type: ignore[attr-defined]
    if kwargs.get("default") is not None:
        text += ", default %(default)s"
    return group.add_argument(flag, type=parse, help=text, **kwargs)


def seed_option(group: Any, default: int = 0) -> argparse.Action:
    return number(group, "--seed", int, 0, SEED_MAX, default=default, help="random seed")


def check_ranges(parser: argparse.ArgumentParser, values: Mapping[str, Any]) -> None:
    """The command's bounds for library calls: raise ValueError, naming the option and its range, when a
    value of ``values`` (option dest -> value, e.g. a settings dataclass as a dict) is one its option's
    ``bounded`` type refuses. None (an option left out) passes."""
    for action in parser._actions:
        parse, value = action.type, values.get(action.dest)
        if value is None or getattr(parse, "range", None) is None:
            continue
        try:
            parse(repr(value) if isinstance(value, float) else str(value))  # type: ignore[misc, operator]
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"argument {action.option_strings[0]}: {exc}") from None


def run_command(
    tag: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Any], argv: list[str] | None
) -> int:
    """Parse ``argv``, call ``run`` on it; a bad argument or input (ValueError, OSError such as
    FileNotFoundError) prints ``[tag] error: ...`` and exits with status 2 instead of a traceback.
    Returns 0."""
    if not isinstance(parser, StageParser):
        parser.error = lambda message: fail(tag, f"{message} (see --help)")  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    try:
        run(args)
    except (ValueError, OSError) as exc:
        fail(tag, str(exc) or type(exc).__name__)
    return 0
