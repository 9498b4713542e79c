"""The tournament report: what the TiPAI KSampler returns and TiPAI Save Tournament Log writes.

Schema ``tipai.report/1`` (a JSON-serialisable dict; bump the version on any incompatible change):

    schema          "tipai.report/1"
    n_steps         steps of the sampling schedule
    audited_steps   the steps where an audit ran (also those where the miner found no region)
    accepted_steps  the steps where at least one edit was accepted
    summary         {audited_steps   count of audited steps
                     regions         count of records (one per audited region)
                     candidates      Σ N over the records
                     accepted        count of accepted records
                     extra_model_calls  costs.denoiser_calls (the audits' extra denoiser calls)
                     extra_model_evals  costs.denoiser_evals (their batch rows)
                     decodes         costs.decode_calls
                     auditor_calls   costs.auditor_calls
                     editor_images   costs.editor_images (candidate rows through a learned editor's net)
                     base_model_calls  the sampler's own denoiser calls
                     extra_call_ratio  extra_model_calls / base_model_calls (None when base is 0)
                     seconds         wall time or None}
    steps           one entry per audited step, in step order:
                    {step, sigma (None when no record tells it), regions: [
                        {batch_index, index, bbox [y0,x0,y1,x1] (audit-view pixels, end exclusive),
                         area, view_factor, N, utilities u_0..u_N, winner, accepted,
                         scores {S: N+1, F: N+1, B: N+1, P: {class: N+1}}}]}
    records         every TournamentRecord.to_dict() (schema "tipai.tournament/1"), in order
    extra           the caller's extra dict ({} when none)

Index 0 of every N+1 list is the control C_0; u_i = (S_i - S_0 - δ)_+ · 1[P_i ≥ τ_P(t)] · 1[F_i ≥ τ_F(t)] · B_i.
Non-finite floats in ``steps`` and ``summary`` become None (what a UI reads is strict JSON); ``records``
keep theirs exactly, as ``TournamentRecord.to_json`` does, so that a log never fails to be written.

On disk (``write_log``): ``<stem>.report.json`` (the report) and ``<stem>.records.jsonl`` (one record
per line, what TSPO and calibration read with ``read_log``), each written atomically.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .costs import Costs
from .files import atomic_write
from .tournament_record import TournamentRecord

REPORT_SCHEMA = "tipai.report/1"
REPORT_SUFFIX = ".report.json"
RECORDS_SUFFIX = ".records.jsonl"


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _check_record(i: int, rec: TournamentRecord, n_steps: int) -> int:
    """N of record i, after the checks a mutated or hand-built record could fail."""
    if not isinstance(rec, TournamentRecord):
        raise ValueError(f"records[{i}] is a {type(rec).__name__}, not a TournamentRecord")
    n = len(rec.actions)
    if len(rec.utilities) != n + 1:
        raise ValueError(f"records[{i}]: utilities has {len(rec.utilities)} entries, expected N+1={n + 1}")
    for key in ("S", "F", "B", "P"):
        if len(rec.scores[key]) != n + 1:
            raise ValueError(f"records[{i}]: scores.{key} has {len(rec.scores[key])} entries, expected N+1={n + 1}")
    if not 0 <= rec.step < n_steps:
        raise ValueError(f"records[{i}]: step {rec.step} outside the schedule of n_steps={n_steps}")
    return n


def _region_entry(rec: TournamentRecord, n: int) -> dict:
    s = rec.scores
    n_classes = len(s["P"][0]) if s["P"] else 0
    classes = list(s.get("classes") or [f"c{c}" for c in range(n_classes)])
    return {
        "batch_index": rec.batch_index,
        "index": rec.region.get("index"),
        "bbox": list(rec.region["bbox"]),
        "area": rec.region.get("area"),
        "view_factor": rec.region.get("view_factor"),
        "N": n,
        "utilities": [_num(u) for u in rec.utilities],
        "winner": rec.winner,
        "accepted": rec.accepted,
        "scores": {
            "S": [_num(v) for v in s["S"]],
            "F": [_num(v) for v in s["F"]],
            "B": [_num(v) for v in s["B"]],
            "P": {c: [_num(row[j]) for row in s["P"]] for j, c in enumerate(classes)},
        },
    }


def build_report(
    records: list[TournamentRecord],
    costs: Costs,
    *,
    n_steps: int,
    base_model_calls: int,
    audited_steps: list[int],
    accepted_steps: list[int],
    seconds: float | None = None,
    extra: dict | None = None,
) -> dict:
    """The ``tipai.report/1`` dict (see the module docstring).

    Raises ValueError for a record whose utilities or scores do not have N+1 entries (naming its
    index), a record at a step that is not in ``audited_steps``, or an accepted step that was not audited.
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")  # 0: nothing was sampled (denoise 0)
    if base_model_calls < 0:
        raise ValueError(f"base_model_calls must be >= 0, got {base_model_calls}")
    audited = sorted({int(s) for s in audited_steps})
    accepted = sorted({int(s) for s in accepted_steps})
    if not set(accepted) <= set(audited):
        raise ValueError(f"accepted_steps {sorted(set(accepted) - set(audited))} were not audited")
    by_step: dict[int, dict] = {s: {"step": s, "sigma": None, "regions": []} for s in audited}
    candidates = n_accepted = 0
    for i, rec in enumerate(records):
        n = _check_record(i, rec, n_steps)
        if rec.step not in by_step:
            raise ValueError(f"records[{i}]: step {rec.step} is not in audited_steps")
        entry = by_step[rec.step]
        entry["sigma"] = _num(rec.sigma)
        entry["regions"].append(_region_entry(rec, n))
        candidates += n
        n_accepted += int(rec.accepted)
    extra_calls = int(costs.denoiser_calls)
    summary = {
        "audited_steps": len(audited),
        "regions": len(records),
        "candidates": candidates,
        "accepted": n_accepted,
        "extra_model_calls": extra_calls,
        "extra_model_evals": int(costs.denoiser_evals),
        "decodes": int(costs.decode_calls),
        "auditor_calls": int(costs.auditor_calls),
        "editor_images": int(costs.editor_images),  # candidate rows through a learned editor's network
        "base_model_calls": int(base_model_calls),
        # the overhead the audits add over the plain run; undefined without a base run
        "extra_call_ratio": extra_calls / base_model_calls if base_model_calls > 0 else None,
        "seconds": None if seconds is None else _num(seconds),
    }
    return {
        "schema": REPORT_SCHEMA,
        "n_steps": int(n_steps),
        "audited_steps": audited,
        "accepted_steps": accepted,
        "summary": summary,
        "steps": [by_step[s] for s in audited],
        "records": [rec.to_dict() for rec in records],
        "extra": dict(extra or {}),
    }


def summary_text(report: dict, written: list[str] | None = None) -> str:
    """What a person reads in the UI: the run's summary as Markdown, one line per audited step.

    Every number comes from the report itself (``summary`` and ``steps``); ``written`` lists files
    the caller saved (the Save Tournament Log node), shown at the end.
    """
    if report.get("schema") != REPORT_SCHEMA:
        raise ValueError(f"report schema {report.get('schema')!r} is not {REPORT_SCHEMA!r}")
    s = report["summary"]
    ratio = s["extra_call_ratio"]
    extra = f"{s['extra_model_calls']} extra model calls" + (
        f" ({ratio:.2f}× the {s['base_model_calls']} of plain sampling)" if ratio is not None else ""
    )
    secs = "" if s["seconds"] is None else f", {s['seconds']:.1f} s in audits"
    lines = [
        "**TiPAI run**",
        "",
        f"- steps: {report['n_steps']}, audited at {report['audited_steps'] or 'none'}",
        f"- regions: {s['regions']}, candidates: {s['candidates']}, accepted edits: {s['accepted']}"
        + (f" (at steps {report['accepted_steps']})" if report["accepted_steps"] else ""),
        f"- compute: {extra}{secs}",
    ]
    if s["accepted"] == 0 and report["n_steps"] > 0:
        lines.append("- nothing accepted: the image is bit-for-bit the plain sampler's")
    if report["steps"]:
        lines += ["", "| step | region | bbox | N | best u_i | accepted |", "|---|---|---|---|---|---|"]
        for st in report["steps"]:
            if not st["regions"]:
                lines.append(f"| {st['step']} | none found | | | | |")
            for r in st["regions"]:
                us = [u for u in r["utilities"][1:] if u is not None]
                best = f"{max(us):.3f}" if us else "-"
                acc = f"yes (candidate {r['winner']})" if r["accepted"] else "no"
                lines.append(f"| {st['step']} | {r['index']} | {r['bbox']} | {r['N']} | {best} | {acc} |")
    for w in report.get("extra", {}).get("warnings", []) or []:
        lines += ["", f"⚠ {w}"]
    if written:
        lines += ["", "Written:"] + [f"- `{p}`" for p in written]
    return "\n".join(lines)


def report_to_jsonl_records(report: dict) -> str:
    """The report's records, one JSON object per line (the same text as ``record.records_to_jsonl``)."""
    if report.get("schema") != REPORT_SCHEMA:
        raise ValueError(f"report schema {report.get('schema')!r} is not {REPORT_SCHEMA!r}")
    return "".join(json.dumps(d, sort_keys=True) + "\n" for d in report["records"])


def check_stem(stem: str) -> str:
    """A file-name stem from a user string: no path separators, no '..', nothing empty."""
    if not isinstance(stem, str) or not stem.strip():
        raise ValueError("the log name (stem) must be a non-empty string")
    bad = [c for c in ("/", "\\", "\x00", ":") if c in stem]
    if bad or ".." in stem or (os.altsep and os.altsep in stem):
        # the node passes a user string: it must not escape the log folder
        raise ValueError(f"the log name {stem!r} must not contain path separators, ':' or '..'")
    if stem != stem.strip() or stem.startswith("."):
        raise ValueError(f"the log name {stem!r} must not start with '.' or have surrounding spaces")
    return stem


def write_log(report: dict, folder: Path, stem: str) -> list[Path]:
    """Write ``<stem>.records.jsonl`` then ``<stem>.report.json`` into ``folder``; returns [report, records].

    Both texts are serialised before anything touches the disk, and each file is replaced
    atomically, so a failure leaves either the previous file or none, never a partial one.
    """
    stem = check_stem(stem)
    folder = Path(folder)
    report_text = json.dumps(report, sort_keys=True, indent=1) + "\n"
    records_text = report_to_jsonl_records(report)
    folder.mkdir(parents=True, exist_ok=True)
    report_path, records_path = folder / (stem + REPORT_SUFFIX), folder / (stem + RECORDS_SUFFIX)
    # the records first: a report on disk means its records are complete
    atomic_write(records_path, records_text)
    atomic_write(report_path, report_text)
    return [report_path, records_path]


@dataclass
class LogRead:
    records: list[TournamentRecord]
    skipped: int = 0
    errors: list[str] = field(default_factory=list)  # "line <n>: <why>", 1-based line numbers


def read_log(path: Path | str) -> LogRead:
    """The records of a ``.records.jsonl``; a corrupt line is skipped, counted and named in ``errors``.

    Blank lines are ignored. A missing file raises FileNotFoundError (that is no corrupt line).
    """
    data = Path(path).read_bytes()
    out = LogRead(records=[])
    for no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            out.records.append(TournamentRecord.from_dict(json.loads(raw.decode("utf-8"))))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            # one torn or foreign line must not cost the whole log (json and unicode errors are ValueErrors)
            out.skipped += 1
            out.errors.append(f"line {no}: {type(exc).__name__}: {exc}")
    return out
