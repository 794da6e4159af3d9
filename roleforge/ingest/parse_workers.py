"""The ingest side of the parse workers: processes started on the first file that needs them, fed chunks of it,
answering in file order."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

from roleforge.data_contracts.feedback import RoleSpellings, role_spellings
from roleforge.ingest.frames import decode_chunk, encode_request, read_frame
from roleforge.ingest.readers import (compressed, file_format, line_spans, read_records, shared_path, tapered_spans,
                                      whole_json_document)
from roleforge.ingest.rows import ParsedChunk, Roles, parse_chunk
from roleforge.ops.errors import RoleforgeError
from roleforge.storage.staging import Staging


# A parse worker's chunk is this share of `batch_rows` lines. Smaller chunks cost a worker less per row: fewer pages
# of fresh memory to fault in per chunk, and more of it stays in the caches (docs/perf-notes.md).
PARSE_PARTS = 4

# Parse workers pay off only past a few chunks: below this, a JSONL file is parsed in the ingest process itself.
PARALLEL_MIN_BYTES = 16 * 2**20


class ParseWorkers:
    """Processes that parse JSON-lines chunks (python -m roleforge.ingest.worker, fed framed chunks on stdin),
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
        # Spans of lines are cut from the file's own bytes: JSON lines, uncompressed, not one JSON document.
        if self.count < 1 or file_format(path) not in ("jsonl", "json") or compressed(path) or whole_json_document(path):
            return False
        if self.requested is not None:
            return True
        if self.count < 2:
            return False
        import fsspec

        filesystem, _, (resolved,) = fsspec.get_fs_token_paths(path)
        return filesystem.size(resolved) >= PARALLEL_MIN_BYTES

    def chunks(self, path: str, roles: Roles, batch_rows: int) -> Iterator[ParsedChunk]:
        """The file's chunks, parsed, in file order."""
        roles = role_spellings(roles)
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

        from roleforge.ops.memory import HEAP_KEPT_ENVIRONMENT

        environment = {**HEAP_KEPT_ENVIRONMENT, **os.environ}  # the caller's own settings win
        for _ in range(self.count):
            process = subprocess.Popen([sys.executable, "-m", "roleforge.ingest.worker"],
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

    def _parallel_chunks(self, path: str, roles: RoleSpellings, batch_rows: int) -> Iterator[ParsedChunk]:
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
        workers read themselves: the ingest process only counts line ends, where reading the lines to pass them on
        cost ten times as much (docs/perf-notes.md). The workers open the file this process
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
