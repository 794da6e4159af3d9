"""Quarantine: every line ingest could not store, with its file, line and reason, appended and fsynced before
the good rows of the same file are stored; read back by `roleforge quarantine` and its replay."""

from __future__ import annotations

import base64
import collections
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from roleforge.ingest.hashing import HASHED_FIELDS


@dataclass
class Quarantined:
    source: str
    line: int
    reason: str
    raw: bytes | str

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"source": self.source, "line": self.line, "reason": self.reason}
        if isinstance(self.raw, str):
            record["raw"] = self.raw
            return record
        try:
            record["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            # Keep the exact bytes too: the readable form alone would lose them.
            record["raw"] = self.raw.decode("utf-8", errors="backslashreplace")
            record["raw_base64"] = base64.b64encode(self.raw).decode("ascii")
        return record


def quarantine_lines(entries: Iterable[Quarantined]) -> bytes:
    """The quarantine file's lines for these entries: one JSON object per line (a line end inside a text is escaped),
    UTF-8, non-ASCII text kept as is."""
    return b"".join(map(_quarantine_line, entries))


def _quarantine_line(entry: Quarantined) -> bytes:
    record = entry.as_record()
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # a lone surrogate, which orjson refuses: JSON escapes keep the line valid UTF-8
        return json.dumps(record).encode("ascii") + b"\n"


class QuarantineFile:
    """Quarantined rows of one ingest, appended and fsynced before the good rows of the same file are stored."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.count = 0

    def append(self, lines: bytes) -> None:
        """Append entries, given as the file's lines (quarantine_lines): one entry per line."""
        if not lines:
            return
        if self.path is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            self.path = self.directory / f"quarantine-{stamp}-{os.getpid()}-{time.monotonic_ns()}.jsonl"
        with locked_quarantine(self.path, "ab") as handle:
            assert handle is not None  # "ab" creates the file
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        self.count += lines.count(b"\n")


def collision_entry(row: dict[str, Any], holder: int) -> Quarantined:
    """A row the store could not take because stored row `holder`, with another content hash, holds its 64-bit key:
    quarantined as stored (scrubbed), with its source line."""
    reason = (f"content hash {row['content_hash']} shares its 64-bit store key {row['content_key']} with stored row "
              f"{holder}, whose content differs: not stored")
    raw = json.dumps({name: row[name] for name in HASHED_FIELDS + ("event_id", "confidence", "metadata", "timestamp")},
                     ensure_ascii=False)
    return Quarantined(row["source"], row["source_line"], reason, raw)


@contextlib.contextmanager
def locked_quarantine(path: Path, mode: str) -> Iterator[IO[bytes] | None]:
    """A quarantine file opened with `mode` ("ab" creates it, "rb" gives None when it is gone) and locked against
    every other writer: an ingest appending, a replay rewriting it. A replay replaces the file by renaming a new one
    over it, so once the lock is held the handle must still be the file the path names, else the path is opened
    again: no append ever goes to a file a replay has just replaced."""
    while True:
        try:
            handle = path.open(mode)
        except FileNotFoundError:
            if mode != "rb":
                raise
            yield None
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                current = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
            except FileNotFoundError:
                current = False
            if current:
                yield handle
                return


def quarantine_files(directory: Path) -> list[Path]:
    """The quarantine files under `directory`, oldest first (their names start with the time they were made)."""
    return sorted(directory.glob("quarantine-*.jsonl")) if directory.is_dir() else []


def quarantine_entries(data: bytes) -> list[tuple[bytes, dict[str, Any] | None]]:
    """Each line of a quarantine file with its entry; None for a line that is no entry (a hand edit, a torn write),
    which is kept as it is."""
    entries: list[tuple[bytes, dict[str, Any] | None]] = []
    for line in data.splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        valid = isinstance(record, dict) and all(isinstance(record.get(key), str) for key in ("source", "reason", "raw"))
        entries.append((line, record if valid else None))
    return entries


def entry_bytes(record: dict[str, Any]) -> bytes:
    """The quarantined line or record exactly as ingest read it (JSON text for a CSV or Parquet record)."""
    if "raw_base64" in record:
        return base64.b64decode(record["raw_base64"])
    return record["raw"].encode("utf-8", "surrogatepass")


UNREADABLE = "not a quarantine entry (kept as it is)"


def quarantine_summary(directory: Path) -> dict[str, Any]:
    """Quarantined lines under `directory`: the total, and counts by reason and by the feedback file they came from,
    largest first."""
    by_reason: collections.Counter[str] = collections.Counter()
    by_file: collections.Counter[str] = collections.Counter()
    for path in quarantine_files(directory):
        for line, record in quarantine_entries(path.read_bytes()):
            if line.strip():
                by_reason[record["reason"] if record else UNREADABLE] += 1
                by_file[record["source"] if record else str(path)] += 1
    return {"total": sum(by_reason.values()), "by_reason": dict(by_reason.most_common()),
            "by_file": dict(by_file.most_common())}
