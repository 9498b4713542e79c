"""Tournament logs for training: stream records from many ``.records.jsonl`` files, append safely.

The on-disk format is one ``TournamentRecord`` JSON object per line (schema ``tipai.tournament/1``,
record.py). Readers here stream line by line, so millions of records never sit in memory at once
(the trainers keep only the few numbers they learn from). A torn last line or a corrupt record is
skipped and counted, never fatal; records of another schema version are counted apart, so that a
log written by another version gives one clear error instead of a pile of skipped lines. A record whose
numbers are of the wrong type (a string where the schema has a float, a P row of the wrong length) is
corrupt too. A trainer that cannot learn from a readable record (NaN scores, numbers out of range) drops
it with ``LogStats.drop``: dropped records are counted apart and named, never left out silently.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .tournament_record import SCHEMA_VERSION, TournamentRecord

RECORDS_GLOB = "*.records.jsonl"


@dataclass
class LogStats:
    files: list[str] = field(default_factory=list)
    read: int = 0
    skipped: int = 0
    foreign: dict[str, int] = field(default_factory=dict)  # schema -> count of records of another version
    errors: list[str] = field(default_factory=list)  # the first few "<file>:<line>: <why>"
    dropped: int = 0  # records read but left out by the trainer (``drop``): numbers it cannot learn from
    dropped_errors: list[str] = field(default_factory=list)  # the first few "<file>:<line>: <why>"
    dropped_candidates: int = 0  # candidates left out of records whose others were used (calibrate)
    where: str = ""  # "<file>:<line>" of the record ``iter_records`` yielded last

    def note(self, where: str, why: str) -> None:
        self.skipped += 1
        if len(self.errors) < 20:
            self.errors.append(f"{where}: {why}")

    def drop(self, why: str, where: str | None = None) -> None:
        """Count a readable record the trainer leaves out (default: the one yielded last) and say why."""
        self.dropped += 1
        if len(self.dropped_errors) < 20:
            self.dropped_errors.append(f"{self.where if where is None else where}: {why}")

    @property
    def used(self) -> int:
        """Records read and not dropped."""
        return self.read - self.dropped

    def summary(self) -> str:
        foreign = sum(self.foreign.values())
        text = f"{self.read} records read from {len(self.files)} file(s), {self.skipped} corrupt line(s) skipped"
        if foreign:
            text += f", {foreign} record(s) of another schema {sorted(self.foreign)} skipped"
        if self.dropped:
            text += f", {self.dropped} record(s) dropped (numbers the trainer cannot use)"
        if self.dropped_candidates:
            text += f" ({self.dropped_candidates} candidate(s))"
        return text


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_types(rec: TournamentRecord) -> None:
    """Raise ValueError when a field the trainers read holds the wrong type (NaN and inf are numbers here:
    each trainer decides what it can learn from)."""
    for name in ("t", "sigma", "alpha"):
        if not _is_real(getattr(rec, name)):
            raise ValueError(f"{name} must be a number, got {getattr(rec, name)!r}")
    for name in ("log_probs", "utilities"):
        values = getattr(rec, name)
        if not isinstance(values, list) or not all(_is_real(v) for v in values):
            raise ValueError(f"{name} must be a list of numbers")
    if not isinstance(rec.state, dict) or not all(isinstance(a, dict) for a in rec.actions):
        raise ValueError("state must be an object and actions a list of objects")
    scores = rec.scores
    for key in ("S", "S_R", "F", "B"):
        if not isinstance(scores[key], list) or not all(_is_real(v) for v in scores[key]):
            raise ValueError(f"scores.{key} must be a list of numbers")
    classes = scores.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise ValueError(f"scores.classes must be a list of names, got {classes!r}")
    rows = scores["P"]
    if not isinstance(rows, list) or not all(isinstance(r, list) and all(_is_real(v) for v in r) for r in rows):
        raise ValueError("scores.P must hold N+1 lists of numbers")
    widths = {len(r) for r in rows} | ({len(classes)} if classes else set())
    if len(widths) > 1:
        raise ValueError(f"scores.P rows and scores.classes differ in length ({sorted(widths)})")


def log_files(paths: Iterable[str | Path]) -> list[Path]:
    """The ``.records.jsonl`` files named, or found (recursively) in the folders named."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.rglob(RECORDS_GLOB))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"tournament log {p} does not exist")
    return out


def iter_records(paths: Iterable[str | Path], stats: LogStats | None = None) -> Iterator[TournamentRecord]:
    """Every readable record of the logs, streamed; ``stats`` counts what was read and skipped."""
    stats = LogStats() if stats is None else stats
    for path in log_files(paths):
        stats.files.append(str(path))
        with open(path, "rb") as fh:
            for no, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    d = json.loads(raw.decode("utf-8"))
                    if not isinstance(d, dict):
                        raise ValueError("a record line must hold a JSON object")
                    schema = d.get("schema")
                    if schema != SCHEMA_VERSION:
                        stats.foreign[str(schema)] = stats.foreign.get(str(schema), 0) + 1
                        continue
                    rec = TournamentRecord.from_dict(d)
                    check_types(rec)
                except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
                    stats.note(f"{path.name}:{no}", f"{type(exc).__name__}: {exc}")
                    continue
                stats.read += 1
                stats.where = f"{path.name}:{no}"
                yield rec


def require_records(stats: LogStats, what: str) -> None:
    """Raise a clear ValueError when the logs gave no usable record (empty, another version, all corrupt)."""
    if stats.read:
        return
    where = ", ".join(stats.files) or "(no .records.jsonl file found)"
    if stats.foreign:
        raise ValueError(
            f"{what}: the logs {where} hold only records of schema {sorted(stats.foreign)}; this "
            f"version reads {SCHEMA_VERSION!r}. Re-log with this version of the pack."
        )
    if stats.skipped:
        raise ValueError(
            f"{what}: every record in {where} is corrupt ({stats.skipped} skipped), e.g. {stats.errors[0]}"
        )
    raise ValueError(f"{what}: the logs {where} hold no tournament records (empty)")


def append_records(path: str | Path, records: Iterable[TournamentRecord]) -> int:
    """Append records as whole lines with one write, then fsync; returns how many.

    If the file ends in a torn line (a writer was killed), a newline is written first, so that the
    torn line stays one corrupt line that readers skip, and the new records stay readable.
    """
    path = Path(path)
    text = "".join(r.to_json() + "\n" for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        if fh.tell() > 0:
            with open(path, "rb") as check:
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":
                    text = "\n" + text
        fh.write(text.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
    return text.count("\n") - (1 if text.startswith("\n") else 0)
