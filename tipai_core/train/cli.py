"""What every stage's command line shares: parse, run the library function, report errors plainly."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def run_command(
    tag: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Any], argv: list[str] | None
) -> int:
    """Parse ``argv``, call ``run`` on it; a bad input (ValueError, FileNotFoundError) prints
    ``[tag] error: ...`` and exits with status 2 instead of a traceback. Returns 0."""
    args = parser.parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"[{tag}] error: {exc}")
        raise SystemExit(2) from None
    return 0
