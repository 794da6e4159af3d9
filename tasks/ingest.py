"""Ingest: feedback files -> row contract -> PII scrub -> content-hash dedupe -> store; bad rows -> quarantine."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel

from roleforge.ops.errors import RoleforgeError, retry_transient, storage_error
# The row logic lives in a light module of its own (parse workers import it); these names are ingest's API too.
from roleforge.ingest.rows import (HASHED_FIELDS, ParsedBatch, ParsedChunk, Quarantined,  # noqa: F401
                                           canonical_json, content_hash, decode_chunk, encode_request, line_spans,
                                           parse_chunk, parse_records, quarantine_lines, read_frame, read_records,
                                           shared_path, tapered_spans, to_stored_row)
from roleforge.config.settings import INGEST_BATCH_ROWS, load_settings
from roleforge.storage.staging import Staging
from roleforge.ops.timing import STAGES

FEEDBACK_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


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


class QuarantineFile:
    """Quarantined rows of one ingest, appended and fsynced before the good rows of the same file are stored."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self.count = 0

    def append(self, lines: bytes) -> None:
        """Append entries, given as the file's lines (feedback_rows.quarantine_lines): one entry per line."""
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


# A parse worker's chunk is this share of `batch_rows` lines. Smaller chunks cost a worker less per row: a chunk's
# millions of small objects fill fresh memory that is given back when the chunk is done, and each page of it faults
# in again for the next (1M rows: 258,000 page faults in the workers with chunks of 100,000 lines, 100,000 with
# 25,000), and less of it stays in the caches (docs/perf-notes.md).
PARSE_PARTS = 4
# Staged chunks stored per transaction (see store.insert_staged): twice `batch_rows` rows. Fewer commits, each
# rewriting fewer index pages per row, while the writer still keeps pace with the parse workers.
STORE_GROUP_CHUNKS = 2 * PARSE_PARTS

# Parse workers pay off only past a few chunks: below this, a JSONL file is parsed in the ingest process itself.
PARALLEL_MIN_BYTES = 16 * 2**20


def ingest_files(paths: Iterable[str], roles: set[str], store_url: str, quarantine_dir: Path,
                 inbox: Path | None = None, archive: Path | None = None, batch_rows: int = INGEST_BATCH_ROWS,
                 workers: int | None = None) -> IngestReport:
    """Ingest feedback files into the store; re-ingesting the same data stores nothing twice.

    Files are read in chunks of `batch_rows` lines, each stored in one transaction. JSON-lines files are parsed,
    checked, scrubbed and hashed by `workers` processes instead (None: one per CPU, for files of 16 MiB or more; 0:
    in this process) in chunks of a quarter of that, each writing its chunk's rows to a staging file beside a sqlite
    store, or as the text of a PostgreSQL COPY; one writer thread stores them in file order, eight per transaction,
    twice `batch_rows` rows (SQLite, and the wait on the server, run outside the GIL). A chunk's quarantined lines
    are on disk before its good rows are stored. A file from the inbox moves to the archive only after all its rows
    are stored, so a crash at any point leaves it in the inbox, and the next ingest stores what is missing and
    nothing twice. A full disk or an unwritable store is a one-line
    RoleforgeError naming the path."""
    from roleforge.storage.store import describe_url

    try:
        return _ingest_files(paths, roles, store_url, quarantine_dir, inbox, archive, batch_rows, workers)
    except Exception as error:
        problem = storage_error(error, describe_url(store_url))
        if problem is None:
            raise
        raise problem from error


def _ingest_files(paths: Iterable[str], roles: set[str], store_url: str, quarantine_dir: Path, inbox: Path | None,
                  archive: Path | None, batch_rows: int, workers: int | None) -> IngestReport:
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    from roleforge.storage.store import Stored, WalCheckpoints, engine_for, remove_stale_staging, staging_for

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
                chunks = parsers.chunks(path, roles, batch_rows)
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
    from roleforge.storage.store import insert_copied, insert_new_feedback, insert_staged

    if len(chunks) == 1 and not chunks[0].bulk:
        return insert_new_feedback(engine, chunks[0].rows)
    if chunks[0].copy is not None:
        return insert_copied(engine, [chunk.copy for chunk in chunks])
    return insert_staged(engine, [chunk.staged for chunk in chunks], checkpoints)


# glibc's allocator settings for a parse worker. By default it gives the buffers a chunk frees back to the system
# (a chunk's lines, texts and columns, tens of MB), and the next chunk's first touch of each page faults anew: half
# a worker's system time. Kept instead, to be reused: a worker's freed memory stays its own until it exits (six
# chunks: 98,000 page faults instead of 258,000, 0.5-0.6 s of system CPU instead of 0.9-1.2). Other C libraries
# ignore these variables.
WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(2**32), "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}


class ParseWorkers:
    """Processes that parse JSON-lines chunks (python -m roleforge.ingest.rows, fed framed chunks on stdin),
    started on the first file that needs them and stopped on exit. Chunk k goes to worker k mod n, and each worker
    answers in order, so results come back in file order. They are plain subprocesses, not multiprocessing's: the
    ingest process runs threads, which fork does not carry, and spawn would re-run the caller's main script."""

    def __init__(self, workers: int | None, staging: Staging | None) -> None:
        self.requested = workers
        self.count = workers if workers is not None else (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        self.staging = staging
        self.processes: list[Any] = []
        self.feeds: list[Any] = []
        self.sent = self.received = 0

    def __enter__(self) -> ParseWorkers:
        return self

    def __exit__(self, *_: object) -> None:
        for feed in self.feeds:
            feed.put(None)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except Exception:
                process.kill()
                process.wait()

    def wanted(self, path: str) -> bool:
        if self.count < 1 or path.endswith((".csv", ".parquet")):
            return False
        if self.requested is not None:
            return True
        if self.count < 2:
            return False
        import fsspec

        filesystem, _, (resolved,) = fsspec.get_fs_token_paths(path)
        return filesystem.size(resolved) >= PARALLEL_MIN_BYTES

    def chunks(self, path: str, roles: set[str], batch_rows: int) -> Iterator[ParsedChunk]:
        """The file's chunks, parsed, in file order."""
        if not self.wanted(path):
            records = read_records(path)
            while chunk := list(itertools.islice(records, batch_rows)):
                yield parse_chunk(path, chunk, roles)
            return
        if not self.processes:
            self._start()
        yield from self._parallel_chunks(path, roles, -(-batch_rows // PARSE_PARTS))

    def _start(self) -> None:
        import queue
        import subprocess
        import sys
        import threading

        environment = {**WORKER_MALLOC, **os.environ}  # the caller's own settings win
        for _ in range(self.count):
            process = subprocess.Popen([sys.executable, "-m", "roleforge.ingest.rows"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment)
            feed: queue.Queue[bytes | None] = queue.Queue()
            # A thread per worker writes its requests, so that a worker writing a large answer never waits on us
            # while we wait on it to read.
            threading.Thread(target=self._feed, args=(process, feed), daemon=True, name="roleforge-parse-feed").start()
            self.processes.append(process)
            self.feeds.append(feed)

    @staticmethod
    def _feed(process: Any, feed: Any) -> None:
        try:
            while (request := feed.get()) is not None:
                process.stdin.write(request)
                process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the worker died: reading its answer says so
        finally:
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass

    def _submit(self, *arguments: Any) -> None:
        self.feeds[self.sent % self.count].put(encode_request(*arguments))
        self.sent += 1

    def _next_result(self) -> ParsedChunk:
        process = self.processes[self.received % self.count]
        self.received += 1
        try:
            answer = read_frame(process.stdout)
        except EOFError:
            answer = None
        if answer is None:
            raise RoleforgeError(f"an ingest parse worker exited with code {process.wait()}")
        try:
            return decode_chunk(answer, lambda: read_frame(process.stdout))
        except (RuntimeError, EOFError) as error:
            raise RoleforgeError(str(error)) from None

    def _parallel_chunks(self, path: str, roles: set[str], batch_rows: int) -> Iterator[ParsedChunk]:
        try:
            line = 1
            for lines, data in self._requests(path, batch_rows, self.count):
                if lines:
                    self._submit(path, line, lines, data, roles, self.staging)
                    line += lines
                while self.received < self.sent and (not lines or self.sent - self.received > self.count):
                    yield self._next_result()
        finally:  # stopped early (an error): collect what is in flight, and no staging file outlives its chunk
            while self.received < self.sent:
                try:
                    chunk = self._next_result()
                except RoleforgeError:
                    continue
                if chunk.staged is not None:
                    chunk.staged.unlink(missing_ok=True)

    @staticmethod
    def _requests(path: str, batch_rows: int, workers: int) -> Iterator[tuple[int, bytes | tuple[str, int, int]]]:
        """(line count, lines) of each chunk of the file, then (0, b"") at its end, the file held open until the
        caller has collected every chunk. A local file's chunks are given as (path, offset, length) spans, which the
        workers read themselves: the ingest process only counts line ends (a tenth of a second per million lines,
        where reading the lines to pass them on cost a second and more). The workers open the file this process
        holds open, not its name, which another ingest may archive meanwhile; where the system gives no path to an
        open file, the lines are passed on. The file's last `workers` spans go out in quarters (tapered_spans)."""
        import fsspec

        local = "://" not in path
        with (open(path, "rb") if local else fsspec.open(path, "rb")) as handle:
            shared = shared_path(handle) if local else None
            if shared is not None:
                descriptor = handle.fileno()
                for offset, length, lines in tapered_spans(
                        line_spans(handle, batch_rows), lambda at, length: os.pread(descriptor, length, at),
                        os.fstat(descriptor).st_size, workers):
                    yield lines, (shared, offset, length)
            else:
                while lines := list(itertools.islice(handle, batch_rows)):
                    yield len(lines), b"".join(lines)
            yield 0, b""


def collision_entry(row: dict[str, Any], holder: int) -> Quarantined:
    """A row the store could not take because stored row `holder`, with another content hash, holds its 64-bit key:
    quarantined as stored (scrubbed), with its source line."""
    reason = (f"content hash {row['content_hash']} shares its 64-bit store key {row['content_key']} with stored row "
              f"{holder}, whose content differs: not stored")
    raw = json.dumps({name: row[name] for name in HASHED_FIELDS + ("event_id", "confidence", "metadata", "timestamp")},
                     ensure_ascii=False)
    return Quarantined(row["source"], row["source_line"], reason, raw)


def ingest_configured(settings: Any, paths: list[str] | None) -> IngestReport:
    """Ingest paths (the inbox when none) with the settings' roles, store, quarantine and archive."""
    inbox = settings.path("inbox")
    paths = paths or [str(inbox)]
    report = ingest_files(paths, set(settings.roles), settings.resolved_store_url, settings.path("quarantine"), inbox,
                          settings.path("archive"), settings.ingest_batch_rows, settings.ingest_workers)
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
