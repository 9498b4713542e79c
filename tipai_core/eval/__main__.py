"""``python -m tipai_core.eval <world> [options]``; worlds: shapes."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m tipai_core.eval shapes [--help]")
        return 0 if argv else 2
    world, rest = argv[0], argv[1:]
    if world == "shapes":
        from .shapes.cli import main as shapes_main

        return shapes_main(rest)
    print(f"unknown world {world!r}; worlds: shapes", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
