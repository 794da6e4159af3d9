"""Ingest: feedback files -> row contract -> PII scrub -> content-hash dedupe -> store; bad rows -> quarantine."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prefect import get_run_logger, task
from pydantic import BaseModel, ValidationError

from roleforge.data_contracts.feedback import FeedbackRow, describe_error, fast_fields
from roleforge.tasks import pii
from roleforge.tasks.errors import RoleforgeError, retry_transient, storage_error
from roleforge.tasks.settings import INGEST_BATCH_ROWS, load_settings
from roleforge.tasks.timing import STAGES

FEEDBACK_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
HASHED_FIELDS = ("agent_role", "prompt", "response", "rating", "response_a", "response_b", "preference", "rater")


class IngestReport(BaseModel):
    """What one ingest did: every line is counted in exactly one of stored, duplicate, quarantined or blank."""

    files: int
    archived: int = 0
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
            # A dot-name is a file still being written (producers write it so, then rename it into place).
            names = sorted(n for n in filesystem.ls(resolved, detail=False)
                           if n.endswith(FEEDBACK_SUFFIXES) and not n.rsplit("/", 1)[-1].startswith("."))
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


def canonical_json(values: list[Any]) -> bytes:
    """The hashed form: compact JSON, non-ASCII kept as UTF-8 (orjson writes exactly what json.dumps would)."""
    try:
        return orjson.dumps(values)
    except TypeError:  # e.g. a lone surrogate, which orjson refuses
        return json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def content_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json([row.get(name) for name in HASHED_FIELDS])).hexdigest()


def _scrubbed(text: str | None) -> str | None:
    return pii.scrub(text) if text else text


def to_stored_row(fields: dict[str, Any], source: str, line: int) -> dict[str, Any]:
    """The store's row from a contract-checked row's fields: every text scrubbed of PII before it is hashed or
    written."""
    metadata, timestamp = fields["metadata"], fields["timestamp"]
    stored = {
        "agent_role": fields["agent_role"], "kind": "rating" if fields["rating"] is not None else "ab",
        "prompt": _scrubbed(fields["prompt"]), "response": _scrubbed(fields["response"]), "rating": fields["rating"],
        "response_a": _scrubbed(fields["response_a"]), "response_b": _scrubbed(fields["response_b"]),
        "preference": fields["preference"], "event_id": fields["event_id"], "rater": _scrubbed(fields["rater"]),
        "confidence": fields["confidence"],
        "metadata": json.loads(pii.scrub(json.dumps(metadata))) if metadata else None,
        "timestamp": timestamp.isoformat() if timestamp else None, "source": source, "source_line": line,
    }
    stored["content_hash"] = content_hash(stored)
    return stored


def parse_records(source: str, records: Iterable[tuple[int, bytes | dict[str, Any]]], roles: set[str]) -> ParsedBatch:
    """Check each record against the row contract; a bad one is quarantined with its reason, never dropped."""
    batch = ParsedBatch()
    roles = frozenset(roles)
    context = {"roles": roles}
    for line, raw in records:
        if isinstance(raw, bytes):
            if not raw.strip():
                batch.blank += 1
                continue
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                batch.quarantined.append(Quarantined(source, line, _undecodable(raw, error), raw))
                continue
        else:
            value = raw
        if not isinstance(value, dict):
            batch.quarantined.append(Quarantined(source, line, f"not a JSON object but {type(value).__name__}", raw))
            continue
        fields = fast_fields(value, roles)
        if fields is None:
            try:
                fields = FeedbackRow.model_validate(value, context=context).__dict__
            except ValidationError as error:
                text = raw if isinstance(raw, bytes) else json.dumps(raw, ensure_ascii=False, default=str)
                batch.quarantined.append(Quarantined(source, line, describe_error(error), text))
                continue
        batch.rows.append(to_stored_row(fields, source, line))
    return batch


def _undecodable(raw: bytes, error: orjson.JSONDecodeError) -> str:
    """Why a line is not a JSON document, in the words of Python's own decoder where it agrees."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8: {bad.reason} at byte {bad.start}"
    try:
        json.loads(text)
    except json.JSONDecodeError as decoded:
        return f"malformed JSON: {decoded.msg} (column {decoded.colno})"
    return f"malformed JSON: {error}"  # valid to Python but not to RFC 8259 (NaN, lone surrogates, huge numbers)


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


def inbox_file(path: str, inbox: Path | None) -> Path | None:
    """The local file behind path when it lies in the inbox (and so moves to the archive once stored), else None."""
    if inbox is None or "://" in path:
        return None
    resolved = Path(path).resolve()
    return resolved if resolved.is_relative_to(inbox.resolve()) else None


def archive_file(path: Path, inbox: Path, archive: Path) -> Path | None:
    """Move a stored inbox file to archive/<date>/ under its inbox-relative name; returns where it went, or None when
    another ingest of the same inbox archived it first. An archived file is never replaced, and two ingests racing
    over one file leave exactly one copy."""
    target = archive / time.strftime("%Y-%m-%d") / path.relative_to(inbox.resolve())
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in itertools.count(1):
        try:
            os.link(path, target)  # fails if target exists: nothing in the archive is ever overwritten
            break
        except FileExistsError:
            target = target.with_name(f"{path.stem}-{attempt}{path.suffix}")
        except FileNotFoundError:
            return None
    try:
        path.unlink()
    except FileNotFoundError:  # the other ingest linked its copy and removed the inbox name first: keep only its copy
        target.unlink()
        return None
    return target


def ingest_files(paths: Iterable[str], roles: set[str], store_url: str, quarantine_dir: Path,
                 inbox: Path | None = None, archive: Path | None = None, batch_rows: int = INGEST_BATCH_ROWS) -> IngestReport:
    """Ingest feedback files into the store; re-ingesting the same data stores nothing twice.

    Files are read in chunks of `batch_rows` lines. While one writer thread stores a chunk (SQLite works outside
    the GIL), the next one is parsed, checked and scrubbed. A chunk's quarantined lines are on disk before its
    good rows are stored. A file from the inbox moves to the archive only after all its rows are stored, so a
    crash at any point leaves it in the inbox, and the next ingest stores what is missing and nothing twice.
    A full disk or an unwritable store is a one-line RoleforgeError naming the path."""
    from roleforge.tasks.store import describe_url

    try:
        return _ingest_files(paths, roles, store_url, quarantine_dir, inbox, archive, batch_rows)
    except Exception as error:
        problem = storage_error(error, describe_url(store_url))
        if problem is None:
            raise
        raise problem from error


def _ingest_files(paths: Iterable[str], roles: set[str], store_url: str, quarantine_dir: Path, inbox: Path | None,
                  archive: Path | None, batch_rows: int) -> IngestReport:
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    from roleforge.tasks.store import engine_for, insert_new_feedback, remove_stale_staging

    engine = engine_for(store_url)
    remove_stale_staging(engine)
    files = expand_paths(paths)
    quarantine = QuarantineFile(quarantine_dir)
    ingested = parsed = blank = archived = 0
    by_role: dict[str, int] = {}
    pending: deque[tuple[Future[int], int]] = deque()

    def settle(limit: int) -> None:
        """Wait for stored chunks until at most `limit` are still queued (the writer finishes them in order)."""
        nonlocal ingested, parsed
        while len(pending) > limit:
            future, rows = pending.popleft()
            ingested += future.result()
            parsed += rows

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="roleforge-store") as writer:
        for path in files:
            local = inbox_file(path, inbox)
            records = read_records(path)
            try:
                chunk = list(itertools.islice(records, batch_rows))
            except FileNotFoundError:
                if local is None:
                    raise
                continue  # another ingest stored and archived it after we listed the inbox
            while chunk:
                batch = parse_records(path, chunk, roles)
                blank += batch.blank
                quarantine.append(batch.quarantined)
                for row in batch.rows:
                    by_role[row["agent_role"]] = by_role.get(row["agent_role"], 0) + 1
                settle(1)
                if batch.rows:
                    pending.append((writer.submit(insert_new_feedback, engine, batch.rows), len(batch.rows)))
                chunk = list(itertools.islice(records, batch_rows))
            if local is not None and archive is not None:
                settle(0)
                archived += archive_file(local, inbox, archive) is not None
        settle(0)
    return IngestReport(
        files=len(files), archived=archived, ingested=ingested, duplicates=parsed - ingested,
        quarantined=quarantine.count, blank=blank, quarantine_path=str(quarantine.path) if quarantine.path else None,
        by_role=dict(sorted(by_role.items())),
    )


def ingest_configured(settings: Any, paths: list[str] | None) -> IngestReport:
    """Ingest paths (the inbox when none) with the settings' roles, store, quarantine and archive."""
    inbox = settings.path("inbox")
    paths = paths or [str(inbox)]
    report = ingest_files(paths, set(settings.roles), settings.resolved_store_url, settings.path("quarantine"), inbox,
                          settings.path("archive"), settings.ingest_batch_rows)
    audit_ingest(settings.home, paths, report)
    return report


def audit_ingest(home: Path, paths: list[str], report: IngestReport) -> None:
    from roleforge.tasks import audit

    audit.record(home, "ingest", paths=paths, **report.model_dump(exclude={"quarantine_path"}),
                 quarantine_path=report.quarantine_path)


@task(name="ingest-feedback", retries=3, retry_delay_seconds=[1, 5, 20], retry_condition_fn=retry_transient)
@STAGES.timed("ingest")
def ingest_feedback(paths: list[str]) -> IngestReport:
    """Ingest feedback files into the configured store."""
    report = ingest_configured(load_settings(), paths)
    get_run_logger().info("ingested %d, duplicates %d, quarantined %d (%s)", report.ingested, report.duplicates,
                          report.quarantined, report.quarantine_path or "no quarantine file")
    return report
