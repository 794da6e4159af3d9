"""Ingest: feedback files -> row contract -> PII scrub -> content-hash dedupe -> store; bad rows -> quarantine."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel, ValidationError

from roleforge.data_contracts.feedback import FeedbackRow, describe_error
from roleforge.tasks import pii
from roleforge.tasks.errors import RoleforgeError, retry_transient
from roleforge.tasks.settings import load_settings

FEEDBACK_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
HASHED_FIELDS = ("agent_role", "prompt", "response", "rating", "response_a", "response_b", "preference", "rater")
BATCH_ROWS = 5_000


class IngestReport(BaseModel):
    """What one ingest did: every line is counted in exactly one of stored, duplicate, quarantined or blank."""

    files: int
    ingested: int
    duplicates: int
    quarantined: int
    blank: int
    quarantine_path: str | None
    by_role: dict[str, int]


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


@dataclass
class ParsedBatch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    blank: int = 0


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files to read: each path as given, a directory's feedback files in name order; a missing path is an error."""
    import fsspec

    found: list[str] = []
    for path in paths:
        filesystem, _, (resolved,) = fsspec.get_fs_token_paths(path)
        if not filesystem.exists(resolved):
            raise RoleforgeError(f"no such feedback file or directory: {path}")
        if filesystem.isdir(resolved):
            names = sorted(n for n in filesystem.ls(resolved, detail=False) if n.endswith(FEEDBACK_SUFFIXES))
            found.extend(filesystem.unstrip_protocol(n) if "://" in path else n for n in names)
        else:
            found.append(path)
    return found


def read_records(path: str) -> Iterator[tuple[int, bytes | dict[str, Any]]]:
    """(line number, raw line or record) for each row of a JSONL, CSV or Parquet file, local or fsspec URL."""
    import fsspec

    with fsspec.open(path, "rb") as handle:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            for index, record in enumerate(pq.read_table(handle).to_pylist(), start=1):
                yield index, {k: v for k, v in record.items() if v is not None}
        elif path.endswith(".csv"):
            reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
            for record in reader:
                yield reader.line_num, {k: v for k, v in record.items() if v not in ("", None)}
        else:
            for index, line in enumerate(handle, start=1):
                yield index, line


def content_hash(row: FeedbackRow | dict[str, Any]) -> str:
    values = row if isinstance(row, dict) else row.__dict__
    canonical = json.dumps([values.get(name) for name in HASHED_FIELDS], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def to_stored_row(row: FeedbackRow, source: str, line: int) -> dict[str, Any]:
    """The store's row: every text field scrubbed of PII before it is hashed or written."""
    scrubbed = {
        name: pii.scrub(getattr(row, name)) if getattr(row, name) is not None else None
        for name in ("prompt", "response", "response_a", "response_b")
    }
    stored = {
        "agent_role": row.agent_role, "kind": row.kind, **scrubbed, "rating": row.rating, "preference": row.preference,
        "event_id": row.event_id, "rater": pii.scrub(row.rater) if row.rater else None, "confidence": row.confidence,
        "metadata": json.loads(pii.scrub(json.dumps(row.metadata))) if row.metadata else None,
        "timestamp": row.timestamp.isoformat() if row.timestamp else None, "source": source, "source_line": line,
    }
    stored["content_hash"] = content_hash(stored)
    return stored


def parse_records(source: str, records: Iterable[tuple[int, bytes | dict[str, Any]]], roles: set[str]) -> ParsedBatch:
    """Check each record against the row contract; a bad one is quarantined with its reason, never dropped."""
    batch = ParsedBatch()
    context = {"roles": roles}
    for line, raw in records:
        if isinstance(raw, bytes):
            if not raw.strip():
                batch.blank += 1
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as error:
                batch.quarantined.append(Quarantined(source, line, f"not UTF-8: {error.reason} at byte {error.start}", raw))
                continue
            except json.JSONDecodeError as error:
                batch.quarantined.append(Quarantined(source, line, f"malformed JSON: {error.msg} (column {error.colno})", raw))
                continue
        else:
            value = raw
        if not isinstance(value, dict):
            batch.quarantined.append(Quarantined(source, line, f"not a JSON object but {type(value).__name__}", raw))
            continue
        try:
            row = FeedbackRow.model_validate(value, context=context)
        except ValidationError as error:
            text = raw if isinstance(raw, bytes) else json.dumps(raw, ensure_ascii=False, default=str)
            batch.quarantined.append(Quarantined(source, line, describe_error(error), text))
            continue
        batch.rows.append(to_stored_row(row, source, line))
    return batch


class QuarantineFile:
    """Quarantined rows of one ingest, appended and fsynced before the good rows of the same file are stored."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.count = 0

    def append(self, entries: list[Quarantined]) -> None:
        if not entries:
            return
        if self.path is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            self.path = self.directory / f"quarantine-{stamp}-{os.getpid()}-{time.monotonic_ns()}.jsonl"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(entry.as_record(), ensure_ascii=False) + "\n" for entry in entries)
            handle.flush()
            os.fsync(handle.fileno())
        self.count += len(entries)


def ingest_files(paths: Iterable[str], roles: set[str], store_url: str, quarantine_dir: Path) -> IngestReport:
    """Ingest feedback files into the store; re-ingesting the same data stores nothing twice."""
    from roleforge.tasks.store import engine_for, insert_new_feedback

    engine = engine_for(store_url)
    files = expand_paths(paths)
    quarantine = QuarantineFile(quarantine_dir)
    ingested = duplicates = blank = 0
    by_role: dict[str, int] = {}
    for path in files:
        batch = parse_records(path, read_records(path), roles)
        blank += batch.blank
        quarantine.append(batch.quarantined)
        for start in range(0, len(batch.rows), BATCH_ROWS):
            chunk = batch.rows[start:start + BATCH_ROWS]
            stored = insert_new_feedback(engine, chunk)
            ingested += stored
            duplicates += len(chunk) - stored
        for row in batch.rows:
            by_role[row["agent_role"]] = by_role.get(row["agent_role"], 0) + 1
    return IngestReport(
        files=len(files), ingested=ingested, duplicates=duplicates, quarantined=quarantine.count, blank=blank,
        quarantine_path=str(quarantine.path) if quarantine.path else None, by_role=dict(sorted(by_role.items())),
    )


@task(name="ingest-feedback", retries=3, retry_delay_seconds=[1, 5, 20], retry_condition_fn=retry_transient)
def ingest_feedback(paths: list[str]) -> IngestReport:
    """Ingest feedback files into the configured store."""
    settings = load_settings()
    report = ingest_files(paths, set(settings.roles), settings.resolved_store_url, settings.path("quarantine"))
    get_run_logger().info("ingested %d, duplicates %d, quarantined %d (%s)", report.ingested, report.duplicates,
                          report.quarantined, report.quarantine_path or "no quarantine file")
    return report
