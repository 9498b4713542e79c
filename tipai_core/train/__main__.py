"""Dispatch ``python -m tipai_core.train <stage> [args]`` to a stage module.

Stages are imported lazily so that ``--help`` and a typo in the stage name never load a model.
"""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "scorer": "Stage A: train the auditor heads on DETONATE-format preference pairs",
    "editor": "Stage B1: train the learned local editor on DETONATE-format preference pairs",
    "tspo": "Stage B3: train the candidate policy from tournament logs",
    "calibrate": "Stage C: fit δ, τ_P(t), τ_F(t) on held-out tournaments",
}


def _usage() -> str:
    lines = ["usage: python -m tipai_core.train <stage> [--help]", "", "stages:"]
    lines += [f"  {name:<10} {text}" for name, text in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"unknown stage {stage!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f".{stage}", __package__)
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
