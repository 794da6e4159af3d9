"""Quarantine: every line ingest could not store, with its file, line and reason, appended and fsynced before
the good rows of the same file are stored."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        with self.path.open("ab") as handle:
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
