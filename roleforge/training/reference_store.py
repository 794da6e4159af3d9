"""Reference log-probs kept from one training to the next.

DPO needs each pair's log-probs under the reference (the base model, or the role's SFT adapter), computed once per
training before its first step: on the sample data about a third of roleforge's training time. A nightly training
sees mostly the pairs of the nights before, under the same reference, so their values are kept here, in a SQLite
file beside the checkpoints, by a key that names everything they depend on: the base model's files (each one's name,
size and modification time), the adapter's contents, the dtype and device kind the model computes in, and the pair's
token ids with the shared prefix. Only the pairs not found are computed. A value not used for `keep_days` (retention.reference_unused_days)
is dropped, by the next training's write or by `roleforge gc`. The store is a cache: when it cannot be read or
written, the training computes what it needs and says so in its log.

The replayed answers' distillation targets (the reference's top-k next tokens and their weights at every token of a
replayed answer, fast_dpo.set_chosen_soft_targets) are kept the same way: the replayed answers are the same every
night, and their targets took about as long as the reference log-probs of every pair. Evaluation keeps the held-out
log-probs of every model it scores here too (tasks/evaluate.py): a candidate's are found again when it is champion."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEEP_DAYS = 30
KEPT_REFERENCES = "reference_logps.db"  # the store's file, in the checkpoints directory
SCHEMA = ("CREATE TABLE IF NOT EXISTS reference (key TEXT PRIMARY KEY, chosen REAL NOT NULL, rejected REAL NOT NULL, "
          "used INTEGER NOT NULL) WITHOUT ROWID",
          # A rowid table: a row holds a few kilobytes (SQLite advises WITHOUT ROWID for small rows only).
          "CREATE TABLE IF NOT EXISTS soft_targets (key TEXT PRIMARY KEY, ids BLOB NOT NULL, weights BLOB NOT NULL, "
          "used INTEGER NOT NULL)")
TABLES = {"reference": "reference log-probs", "soft_targets": "distillation targets"}  # and what each holds, for logs
BUSY_TIMEOUT_S = 60  # roles training side by side in one process each write their own values
SQLITE_VARIABLES = 500  # keys looked up per statement, under SQLite's limit on bound variables

LogpPairs = list[tuple[float, float]]


def files_identity(directory: Path | None) -> list[list[Any]]:
    """Each file under `directory` (a model or an adapter) as [relative name, size, modification time in ns], in name
    order: a file rewritten in place changes it. [] for None."""
    if directory is None:
        return []
    directory = Path(directory)
    return [[str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns]
            for path in sorted(directory.rglob("*")) if path.is_file() for stat in [path.stat()]]


def contents_identity(directory: Path | None) -> list[list[Any]]:
    """Each file under `directory` (an adapter) as [relative name, size, SHA-256 of its bytes], in name order: a copy
    of the same adapter (the registry's download of a candidate that became champion) is the same adapter. [] for None."""
    if directory is None:
        return []
    directory = Path(directory)
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with path.open("rb") as stream:
                found.append([str(path.relative_to(directory)), path.stat().st_size,
                              hashlib.file_digest(stream, "sha256").hexdigest()])
    return found


def reference_identity(base_model: Path, adapter: Path | None, dtype: str, device: str) -> str:
    """What a model's log-prob depends on besides the pair: the base model's files (by name, size and modification
    time: reading 0.5 GB or more for a hash would cost each training a second or more), the adapter's contents (a
    few megabytes, whose copies must match), the dtype and the device kind."""
    return json.dumps([files_identity(base_model), contents_identity(adapter), dtype, device])


def pair_keys(identity: str, prefix: list[int], examples: list[dict[str, Any]]) -> list[str]:
    """Each pair's key: the reference's identity, the shared prefix and the pair's token ids."""
    head = hashlib.sha256(json.dumps([identity, prefix]).encode())
    keys = []
    for example in examples:
        digest = head.copy()
        ids = [example["prompt_ids"], example["chosen_ids"], example["rejected_ids"]]
        # A chosen answer trained on as the reference's own distribution has another reference value (its weights
        # follow from the reference, which the identity names, and the number of candidates).
        soft = [len(example["chosen_soft_ids"][0])] if example.get("chosen_soft_ids") else []
        digest.update(json.dumps(ids + soft).encode())
        keys.append(digest.hexdigest())
    return keys


def soft_target_keys(identity: str, prefix: list[int], examples: list[dict[str, Any]], top_k: int) -> list[str]:
    """Each replayed answer's key for its distillation targets: the reference, the prefix, k and the answer's tokens."""
    head = hashlib.sha256(json.dumps([identity, prefix, top_k]).encode())
    keys = []
    for example in examples:
        digest = head.copy()
        digest.update(json.dumps([example["prompt_ids"], example["chosen_ids"]]).encode())
        keys.append(digest.hexdigest())
    return keys


class ReferenceStore:
    """The log-probs and distillation targets of earlier trainings and evaluations, in the SQLite file at `path`."""

    def __init__(self, path: Path, keep_days: int = KEEP_DAYS) -> None:
        self.path = Path(path)
        self.keep_days = keep_days

    def reference(self, identity: str, prefix: list[int], examples: list[dict[str, Any]],
                  compute: Callable[[list[dict[str, Any]]], LogpPairs]) -> LogpPairs:
        """(chosen, rejected) reference log-probs of every example: those kept from earlier trainings under the same
        identity, and `compute(missing examples)` for the rest, which are kept for the next."""
        keys = pair_keys(identity, prefix, examples)
        known = self._read("reference", ("chosen", "rejected"), keys)
        missing = [index for index, key in enumerate(keys) if key not in known]
        if missing:
            values = compute([examples[index] for index in missing])
            known.update(zip((keys[index] for index in missing), values))
        computed = {keys[index] for index in missing}
        log.info("reference log-probs: %d of %d pairs kept from earlier trainings, %d computed",
                 len(keys) - len(missing), len(keys), len(missing))
        self._write("reference", keys, [(key, *known[key]) for key in keys if key in computed])
        return [known[key] for key in keys]

    def soft_targets(self, identity: str, prefix: list[int], examples: list[dict[str, Any]], top_k: int,
                     compute: Callable[[list[dict[str, Any]]], None]) -> None:
        """Give every example its distillation targets (`chosen_soft_ids`, `chosen_soft_weights`): those kept from
        earlier trainings under the same identity, and for the rest `compute(missing examples)`, which sets them in
        place and whose results are kept for the next."""
        import numpy as np

        keys = soft_target_keys(identity, prefix, examples, top_k)
        known = self._read("soft_targets", ("ids", "weights"), keys)
        missing = [example for key, example in zip(keys, examples) if key not in known]
        for key, example in zip(keys, examples):
            if key in known:
                ids, weights = known[key]
                # int32 and float32: the dtypes the targets are computed in, so a kept value is the computed one.
                example["chosen_soft_ids"] = np.frombuffer(ids, dtype=np.int32).reshape(-1, top_k).tolist()
                example["chosen_soft_weights"] = np.frombuffer(weights, dtype=np.float32).reshape(-1, top_k).tolist()
        if missing:
            compute(missing)
        log.info("distillation targets: %d of %d replayed answers kept from earlier trainings, %d computed",
                 len(keys) - len(missing), len(keys), len(missing))
        self._write("soft_targets", keys, [
            (key, np.asarray(example["chosen_soft_ids"], dtype=np.int32).tobytes(),
             np.asarray(example["chosen_soft_weights"], dtype=np.float32).tobytes())
            for key, example in zip(keys, examples) if key not in known])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (committed when the block ends without an error), closed after."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)) as connection, connection:
            for schema in SCHEMA:
                connection.execute(schema)
            yield connection

    def _read(self, table: str, columns: tuple[str, ...], keys: list[str]) -> dict[str, tuple[Any, ...]]:
        """The kept values of `keys` in `table`, as tuples of `columns`; {} when the store cannot be read."""
        try:
            with self._transaction() as connection:
                found: dict[str, tuple[Any, ...]] = {}
                for start in range(0, len(keys), SQLITE_VARIABLES):
                    part = keys[start:start + SQLITE_VARIABLES]
                    found.update((key, tuple(values)) for key, *values in connection.execute(
                        f"SELECT key, {', '.join(columns)} FROM {table} WHERE key IN ({','.join('?' * len(part))})", part))
                return found
        except (sqlite3.Error, OSError) as error:
            log.warning("kept %s could not be read (%s: %s): computing them all", TABLES[table], self.path, error)
            return {}

    def _write(self, table: str, used: list[str], rows: list[tuple[Any, ...]]) -> None:
        """`rows` (key first) added to `table`, every key in `used` marked with today, and what is unused for
        keep_days days dropped."""
        today = int(time.time() // 86400)
        try:
            with self._transaction() as connection:
                if rows:
                    connection.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({','.join('?' * (len(rows[0]) + 1))})",
                                           [(*row, today) for row in rows])
                connection.executemany(f"UPDATE {table} SET used = ? WHERE key = ?", [(today, key) for key in used])
                for name in TABLES:
                    connection.execute(f"DELETE FROM {name} WHERE used < ?", (today - self.keep_days,))
        except (sqlite3.Error, OSError) as error:
            log.warning("%s could not be kept for the next training (%s: %s)", TABLES[table], self.path, error)

    def prune(self, now: float, dry_run: bool = False) -> tuple[int, int]:
        """Drop the values unused for keep_days days before `now` (a timestamp) and give the file's space back;
        returns (dropped, kept). A dry run only counts. Errors are the caller's (gc reports them)."""
        if not self.path.exists():
            return 0, 0
        oldest = int(now // 86400) - self.keep_days
        stale = total = 0
        with self._transaction() as connection:
            for table in TABLES:
                old, rows = connection.execute(
                    f"SELECT count(*) FILTER (WHERE used < ?), count(*) FROM {table}", (oldest,)).fetchone()
                stale, total = stale + old, total + rows
                if old and not dry_run:
                    connection.execute(f"DELETE FROM {table} WHERE used < ?", (oldest,))
        if stale and not dry_run:
            with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)) as connection:
                connection.execute("VACUUM")  # deleted rows leave free pages: the file shrinks only when rewritten
        return stale, total - stale
