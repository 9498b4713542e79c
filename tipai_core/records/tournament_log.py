"""Tournament logs for training: stream records from many ``.records.jsonl`` files, append safely.

The on-disk format is one ``TournamentRecord`` JSON object per line (schema ``tipai.tournament/1``,
record.py). Readers here stream line by line, so millions of records never sit in memory at once
(the trainers keep only the few numbers they learn from). A torn last line or a corrupt record is
skipped and counted, never fatal; records of another schema version are counted apart, so that a
log written by another version gives one clear error instead of a pile of skipped lines.
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

    def note(self, where: str, why: str) -> None:
        self.skipped += 1
        if len(self.errors) < 20:
            self.errors.append(f"{where}: {why}")

    def summary(self) -> str:
        foreign = sum(self.foreign.values())
        text = f"{self.read} records read from {len(self.files)} file(s), {self.skipped} corrupt line(s) skipped"
        if foreign:
            text += f", {foreign} record(s) of another schema {sorted(self.foreign)} skipped"
        return text


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
                except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
                    stats.note(f"{path.name}:{no}", f"{type(exc).__name__}: {exc}")
                    continue
                stats.read += 1
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
