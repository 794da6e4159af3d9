"""Ingest: feedback files -> row contract -> PII scrub -> content-hash dedupe -> store; bad rows -> quarantine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel

from roleforge.config.settings import INGEST_BATCH_ROWS, load_settings
from roleforge.data_contracts.feedback import role_spellings
from roleforge.ingest.inbox import archive_file, inbox_file
from roleforge.ingest.parse_workers import PARSE_PARTS, ParseWorkers
from roleforge.ingest.quarantine import QuarantineFile, collision_entry, quarantine_lines
from roleforge.ingest.readers import expand_paths
from roleforge.ingest.rows import ParsedChunk, Roles
from roleforge.ops.errors import storage_error
from roleforge.ops.retries import retry_transient
from roleforge.ops.timing import STAGES


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


# Staged chunks stored per transaction (see inserts.insert_staged): twice `batch_rows` rows. Fewer commits, each
# rewriting fewer index pages per row, while the writer still keeps pace with the parse workers.
STORE_GROUP_CHUNKS = 2 * PARSE_PARTS


def ingest_files(paths: Iterable[str], roles: Roles, store_url: str, quarantine_dir: Path,
                 inbox: Path | None = None, archive: Path | None = None, batch_rows: int = INGEST_BATCH_ROWS,
                 workers: int | None = None) -> IngestReport:
    """Ingest feedback files into the store; re-ingesting the same data stores nothing twice.

    `roles` are the roles a row may name: their names, or each spelling -> its role's name (`Settings.
    role_spellings`); a row is stored under its role's name. Files are read in chunks of `batch_rows` lines, each
    stored in one transaction. JSON-lines files are parsed, checked, scrubbed and hashed by `workers` processes
    instead (None: one per CPU, for files of 16 MiB or more; 0: in this process) in chunks of a quarter of that, each
    writing its chunk's rows to a staging file beside a sqlite store, or as the text of a PostgreSQL COPY; one writer
    thread stores them in file order, eight per transaction, twice `batch_rows` rows (SQLite, and the wait on the
    server, run outside the GIL). A chunk's quarantined lines are on disk before its good rows are stored. A file
    from the inbox moves to the archive only after all its rows are stored, so a crash at any point leaves it in the
    inbox, and the next ingest stores what is missing and nothing twice. A full disk or an unwritable store is a
    one-line RoleforgeError naming the path."""
    from roleforge.storage.urls import describe_url

    try:
        return _ingest_files(paths, roles, store_url, quarantine_dir, inbox, archive, batch_rows, workers)
    except Exception as error:
        problem = storage_error(error, describe_url(store_url))
        if problem is None:
            raise
        raise problem from error


def _ingest_files(paths: Iterable[str], roles: Roles, store_url: str, quarantine_dir: Path, inbox: Path | None,
                  archive: Path | None, batch_rows: int, workers: int | None) -> IngestReport:
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    from roleforge.storage.inserts import Stored, remove_stale_staging, staging_for
    from roleforge.storage.schema import engine_for
    from roleforge.storage.wal import WalCheckpoints

    spellings = role_spellings(roles)  # built once, handed to every chunk and parse worker
    engine = engine_for(store_url)
    remove_stale_staging(engine)
    files = expand_paths(paths)
    quarantine = QuarantineFile(quarantine_dir)
    ingested = parsed = blank = archived = 0
    by_role: dict[str, int] = {}
    pending: deque[tuple[Future[Stored], int]] = deque()

    group: list[ParsedChunk] = []  # staged chunks not yet handed to the writer

    def hand_over() -> None:
        """Give the writer the chunks of `group`, to store in one transaction (once at most one is queued)."""
        if group:
            settle(1)
            pending.append((writer.submit(store_chunks, engine, list(group), checkpoints),
                            sum(chunk.good for chunk in group)))
            group.clear()

    def settle(limit: int) -> None:
        """Wait for stored chunks until at most `limit` are still queued (the writer finishes them in order)."""
        nonlocal ingested, parsed
        while len(pending) > limit:
            future, rows = pending.popleft()
            stored = future.result()
            ingested += stored.inserted
            parsed += rows - len(stored.collided)
            quarantine.append(quarantine_lines(collision_entry(row, holder) for row, holder in stored.collided))

    staging = staging_for(engine)
    try:
        with (WalCheckpoints(engine) if staging is not None and staging.target == "sqlite"
              else contextlib.nullcontext()) as checkpoints, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="roleforge-store") as writer, \
                ParseWorkers(workers, staging) as parsers:
            for path in files:
                local = inbox_file(path, inbox)
                chunks = parsers.chunks(path, spellings, batch_rows)
                try:
                    chunk = next(chunks, None)
                except FileNotFoundError:
                    if local is None:
                        raise
                    continue  # another ingest stored and archived it after we listed the inbox
                while chunk is not None:
                    blank += chunk.blank
                    quarantine.append(chunk.quarantine)
                    for role, count in chunk.by_role.items():
                        by_role[role] = by_role.get(role, 0) + count
                    if chunk.good:
                        if not chunk.bulk:  # rows in memory: stored alone, after the chunks before them
                            hand_over()
                        group.append(chunk)
                        if not chunk.bulk or len(group) >= STORE_GROUP_CHUNKS:
                            hand_over()
                    chunk = next(chunks, None)
                if local is not None and archive is not None:
                    hand_over()
                    settle(0)
                    archived += archive_file(local, inbox, archive) is not None
            hand_over()
            settle(0)
    finally:
        for chunk in group:  # never handed to the writer (an error stopped the ingest): no staging file outlives it
            if chunk.staged is not None:
                chunk.staged.unlink(missing_ok=True)
    return IngestReport(
        files=len(files), archived=archived, ingested=ingested, duplicates=parsed - ingested,
        quarantined=quarantine.count, blank=blank, quarantine_path=str(quarantine.path) if quarantine.path else None,
        by_role=dict(sorted(by_role.items())),
    )


def store_chunks(engine: Any, chunks: list[ParsedChunk], checkpoints: Any = None) -> Any:
    """Store chunks in one transaction: staged chunks together (their log checkpointed by `checkpoints`, when
    given), COPY texts together, or one chunk of rows."""
    from roleforge.storage.inserts import insert_copied, insert_new_feedback, insert_staged

    if len(chunks) == 1 and not chunks[0].bulk:
        return insert_new_feedback(engine, chunks[0].rows)
    if chunks[0].copy is not None:
        return insert_copied(engine, [chunk.copy for chunk in chunks])
    return insert_staged(engine, [chunk.staged for chunk in chunks], checkpoints)


def ingest_configured(settings: Any, paths: list[str] | None) -> IngestReport:
    """Ingest paths (the inbox when none) with the settings' roles, store, quarantine and archive."""
    inbox = settings.path("inbox")
    paths = paths or [str(inbox)]
    report = ingest_files(paths, settings.role_spellings(), settings.resolved_store_url, settings.path("quarantine"),
                          inbox, settings.path("archive"), settings.ingest_batch_rows, settings.ingest_workers)
    audit_ingest(settings.home, paths, report)
    return report


def audit_ingest(home: Path, paths: list[str], report: IngestReport) -> None:
    from roleforge.ops import audit

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
