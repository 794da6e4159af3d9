"""Checkpoints of a SQLite store's write-ahead log on a thread of their own, for a bulk writer."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from roleforge.storage.urls import sqlite_file


# How large a bulk writer lets the write-ahead log grow while WalCheckpoints catch up; past it, a commit checkpoints
# the log itself, and the next transaction writes it from its start again.
MAX_DEFERRED_WAL_BYTES = 2**30


class WalCheckpoints:
    """Checkpoints of a sqlite store's write-ahead log on a thread of their own, for a bulk writer (insert_staged
    with `checkpoints`). SQLite checkpoints in the committing connection by default: it copies the committed pages
    into the database file and syncs both files, and meanwhile the writer, the serial stage of an ingest, waits
    (docs/perf-notes.md). Here each commit only starts a passive checkpoint, which
    copies what is committed without blocking the writer, whose next transaction runs meanwhile. The log then grows
    (SQLite writes it from its start again only when a checkpoint caught up before a transaction began), up to
    MAX_DEFERRED_WAL_BYTES, past which the commit checkpoints it itself; `close` waits for a last checkpoint, and
    leaves the store as an inline checkpoint would."""

    def __init__(self, engine: sa.Engine, max_wal_bytes: int = MAX_DEFERRED_WAL_BYTES) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.engine = engine
        self.wal = Path(f"{sqlite_file(engine.url)}-wal")
        self.max_wal_bytes = max_wal_bytes
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roleforge-checkpoint")
        self.running: Any = None  # the last checkpoint started
        self.pending = False  # a commit since it started

    def __enter__(self) -> WalCheckpoints:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        # After an error, that error is the one to see, not a checkpoint's after it.
        with contextlib.suppress(Exception) if kind is not None else contextlib.nullcontext():
            self.close()

    def committed(self) -> None:
        """Called by the writer after each commit: start a checkpoint unless one is running, or checkpoint here and
        now when the log is past its bound."""
        self.pending = True
        beyond = self._wal_bytes() > self.max_wal_bytes
        if self.running is not None:
            if not self.running.done() and not beyond:
                return  # the next commit, or close, checkpoints what this one wrote
            self.running.result()  # waits; a failed checkpoint raises here, in the writer
        self.pending = False
        if beyond:
            self.checkpoint()
        else:
            self.running = self.thread.submit(self.checkpoint)

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint: (busy, frames in the log, frames checkpointed), as SQLite reports them."""
        raw = self.engine.raw_connection()
        try:
            return tuple(raw.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
        finally:
            raw.close()

    def close(self) -> None:
        """Wait for the running checkpoint, then checkpoint what was committed after it started."""
        try:
            if self.running is not None:
                self.running.result()
            if self.pending:
                self.pending = False
                self.checkpoint()
        finally:
            self.thread.shutdown()

    def _wal_bytes(self) -> int:
        try:
            return self.wal.stat().st_size
        except FileNotFoundError:
            return 0
