"""How rows get into the feedback store, new content keys only: staged files copied in by SQLite itself, COPY into
PostgreSQL through psycopg 3, SQLAlchemy's executemany elsewhere; and the staging files a killed ingest left."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

from roleforge.storage.collisions import staged_collisions
from roleforge.storage.schema import (FEEDBACK_COLUMNS, INSERT_COLUMNS, METADATA_CELL, ROW_VALUES, STAGED_COLUMNS, copies,
                                      feedback)
# Staging files are written by ingest's parse workers too, which import that light module alone.
from roleforge.storage.staging import STAGING_PREFIX, Staging, copy_csv, json_text, stage_columns
from roleforge.storage.urls import sqlite_file
from roleforge.storage.wal import WalCheckpoints


# SQLite attaches at most 10 databases to a connection by default.
MAX_STAGED_PER_INSERT = 8


class Stored(NamedTuple):
    """What one insert did: how many rows were new, and the rows it could not store because another row with a
    different content hash holds their 64-bit key (about one in 10^7 at 10^6 stored rows; the caller quarantines
    them, with the stored row's id)."""

    inserted: int
    collided: list[tuple[dict[str, Any], int]]


def insert_new_feedback(engine: sa.Engine, rows: Sequence[dict[str, Any]]) -> Stored:
    """Insert rows whose content is not stored yet, in one transaction."""
    if not rows:
        return Stored(0, [])
    if engine.dialect.name == "sqlite":
        directory = _sqlite_directory(engine)
        if directory is not None:
            staged = stage_rows(rows, directory)
            if staged is not None:
                return insert_staged(engine, staged)
        # The DB-API's executemany with tuples: the same statement as below without SQLAlchemy's per-row work.
        sql = (f"INSERT INTO feedback ({INSERT_COLUMNS}) VALUES ({', '.join('?' * len(FEEDBACK_COLUMNS))}) "
               "ON CONFLICT (content_key) DO NOTHING")
        values = list(map(row_cells, rows))
        with engine.begin() as connection:
            inserted = connection.exec_driver_sql(sql, values).rowcount
            return Stored(inserted, _collided(connection, rows) if inserted < len(rows) else [])
    if copies(engine):
        text = copy_csv(columns_of(rows), STAGED_LAYOUT)
        return insert_copied(engine, [rows if text is None else text])
    with engine.begin() as connection:
        known = _stored_hashes(connection, rows)
        fresh, collided = [], []
        for row in rows:
            held = known.get(row["content_key"])
            if held is None:
                known[row["content_key"]] = (row["content_hash"], 0)
                fresh.append(row)
            elif held[0] != row["content_hash"]:
                collided.append((row, held[1]))
        if fresh:
            connection.execute(feedback.insert(), fresh)
        if collided:  # ids of rows stored by this same batch are known only now
            collided = [(row, _stored_hashes(connection, [row])[row["content_key"]][1]) for row, _ in collided]
        return Stored(len(fresh), collided)


def _stored_hashes(connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> dict[int, tuple[str, int]]:
    """content key -> (content hash, id) of the stored rows holding the rows' keys."""
    keys = sorted({row["content_key"] for row in rows})
    found: dict[int, tuple[str, int]] = {}
    for start in range(0, len(keys), 500):
        query = sa.select(feedback.c.content_key, feedback.c.content_hash, feedback.c.id).where(
            feedback.c.content_key.in_(keys[start:start + 500]))
        found.update((key, (hash_, id_)) for key, hash_, id_ in connection.execute(query))
    return found


def _collided(connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Rows not stored because a stored row with another content hash holds their key, each with that row's id."""
    known = _stored_hashes(connection, rows)
    return [(row, known[row["content_key"]][1]) for row in rows if known[row["content_key"]][0] != row["content_hash"]]


def staging_for(engine: sa.Engine) -> Staging | None:
    """How bulk inserts into this store stage their rows: a staging file in a sqlite store's directory (see
    insert_staged), the text of a COPY for PostgreSQL through psycopg 3 (see insert_copied); None for other stores."""
    if copies(engine):
        return Staging(None, STAGED_LAYOUT, "copy")
    directory = _sqlite_directory(engine) if engine.dialect.name == "sqlite" else None
    return None if directory is None else Staging(directory, STAGED_LAYOUT)


def _sqlite_directory(engine: sa.Engine) -> Path | None:
    """The directory of a sqlite store's file; None for an in-memory store."""
    path = sqlite_file(engine.url)
    return None if path is None else path.resolve().parent


def _staged_kind(column: sa.Column) -> str:
    if isinstance(column.type, sa.JSON):
        return "json"
    if isinstance(column.type, sa.Integer):
        return "integer"
    return "real" if isinstance(column.type, sa.Float) else "text"


# The staged table's columns: those of an insert, each with its kind (roleforge/storage/staging.py).
STAGED_LAYOUT = tuple((name, _staged_kind(feedback.c[name])) for name in FEEDBACK_COLUMNS)


def row_cells(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row's values in FEEDBACK_COLUMNS order as a driver binds them: its metadata as JSON text."""
    cells = ROW_VALUES(row)
    if row["metadata"] is None:
        return cells
    return cells[:METADATA_CELL] + (json_text(row["metadata"]),) + cells[METADATA_CELL + 1:]


def columns_of(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows as a list of values per inserted column: what staging takes."""
    return {name: [row[name] for row in rows] for name in FEEDBACK_COLUMNS}


def stage_rows(rows: Sequence[dict[str, Any]], directory: Path) -> Path | None:
    """stage_columns of rows, to insert into a sqlite store in `directory`."""
    return stage_columns(columns_of(rows), Staging(directory, STAGED_LAYOUT))


def insert_staged(engine: sa.Engine, staged: Path | Sequence[Path], checkpoints: WalCheckpoints | None = None) -> Stored:
    """Copy staging files' rows into the store inside SQLite, all in one transaction (one INSERT ... SELECT per file,
    new content keys only, file order kept for the ids), then remove the files. The store itself is only ever opened
    by Python's sqlite3: two SQLite libraries in one process must not share a database file (their POSIX locks would
    clobber each other), and a staging file is closed by ADBC before it is attached here. One transaction for
    several files costs less than one each: a commit writes every index page its rows touched, and random keys
    touch most of them (docs/perf-notes.md). With `checkpoints`, the commit leaves the write-ahead log to them instead
    of checkpointing it itself."""
    files = [staged] if isinstance(staged, Path) else list(staged)
    if len(files) > MAX_STAGED_PER_INSERT:
        raise ValueError(f"at most {MAX_STAGED_PER_INSERT} staging files per insert, not {len(files)}")
    raw = engine.raw_connection()
    attached: list[str] = []
    automatic = None
    try:
        connection = raw.driver_connection
        for path in files:  # ATTACH is refused inside a transaction
            schema = f"roleforge_staging_{len(attached)}"
            connection.execute(f"ATTACH DATABASE ? AS {schema}", (str(path),))
            attached.append(schema)
        if checkpoints is not None:  # the commit checkpoints when the log is past this many pages; 0: never
            automatic = connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            connection.execute("PRAGMA wal_autocheckpoint=0")
        with connection:  # commits, or rolls back on an error
            last_id = connection.execute("SELECT max(id) FROM feedback").fetchone()[0] or 0
            inserted = [connection.execute(
                f"INSERT INTO feedback ({INSERT_COLUMNS}) SELECT {INSERT_COLUMNS} FROM {schema}.staged "
                "WHERE true ORDER BY rowid ON CONFLICT (content_key) DO NOTHING").rowcount for schema in attached]
            # The new rows took the ids after the last one, in staged order (SQLite's rowid rule), unless the ids ran
            # out or another ingest stored rows between the first read of the last id (taken before this transaction
            # held the write lock) and the inserts; then skipped rows are found by a join of every staged row instead
            # (see _skipped_rows).
            last_now = connection.execute("SELECT max(id) FROM feedback").fetchone()[0] or 0
            in_order = last_now == last_id + sum(inserted)
            collided: list[tuple[dict[str, Any], int]] = []
            for schema, count in zip(attached, inserted):
                collided.extend(staged_collisions(connection, schema, last_id + 1 if in_order else None, count))
                last_id += count
        if checkpoints is not None:
            checkpoints.committed()
        return Stored(sum(inserted), collided)
    finally:
        try:
            if automatic is not None:
                raw.driver_connection.execute(f"PRAGMA wal_autocheckpoint={int(automatic)}")
            for schema in attached:
                raw.driver_connection.execute(f"DETACH DATABASE {schema}")
        finally:
            raw.close()
            for path in files:
                path.unlink(missing_ok=True)


# PostgreSQL takes rows by COPY into a temporary table of the insert's columns (and their order), dropped at commit.
COPIED = sa.Table("roleforge_copied", sa.MetaData(),
                  sa.Column("ordinal", sa.BigInteger, sa.Identity(always=True)),
                  *(sa.Column(name, feedback.c[name].type) for name in FEEDBACK_COLUMNS),
                  prefixes=["TEMPORARY"], postgresql_on_commit="DROP")
# A COPY transaction's memory for the sort of its copied rows into file order (see schema.POSTGRESQL_TEMP_BUFFERS).
COPY_WORK_MEM = "256MB"


def insert_copied(engine: sa.Engine, payloads: Sequence[bytes | Sequence[dict[str, Any]]]) -> Stored:
    """Insert rows into a PostgreSQL store in one transaction: each payload, the text of a CSV COPY (staging.copy_csv)
    or rows that have none (copied one by one), goes by COPY into a temporary table, and one INSERT ... SELECT in
    their order stores the new content keys, so ids follow the payloads' order. Rows not stored whose key another
    content holds are the collisions, found by one join of the copied rows with the store, only when some row was
    not stored. The server parses the CSV and fills the indexes; this process only sends bytes, where SQLAlchemy's
    executemany bound every row's values in Python (and counted the rows inserted wrong)."""
    import psycopg

    raw = engine.raw_connection()
    try:
        connection: psycopg.Connection = raw.driver_connection
        with connection.cursor() as cursor:
            try:
                cursor.execute(f"SET LOCAL work_mem = '{COPY_WORK_MEM}'")
                cursor.execute(str(sa.schema.CreateTable(COPIED).compile(engine)))
                copied = 0
                for payload in payloads:
                    if isinstance(payload, bytes):
                        with cursor.copy(f"COPY {COPIED.name} ({INSERT_COLUMNS}) FROM STDIN (FORMAT csv)") as copy:
                            copy.write(payload)
                    else:
                        with cursor.copy(f"COPY {COPIED.name} ({INSERT_COLUMNS}) FROM STDIN") as copy:
                            for row in payload:
                                copy.write_row(row_cells(row))
                    copied += cursor.rowcount
                cursor.execute(f"INSERT INTO feedback ({INSERT_COLUMNS}) SELECT {INSERT_COLUMNS} FROM {COPIED.name} "
                               "ORDER BY ordinal ON CONFLICT (content_key) DO NOTHING")
                inserted = cursor.rowcount
                collided: list[tuple[dict[str, Any], int]] = []
                if inserted < copied:
                    cursor.execute(f"SELECT {STAGED_COLUMNS}, f.id FROM {COPIED.name} s JOIN feedback f ON f.content_key = "
                                   "s.content_key WHERE f.content_hash <> s.content_hash ORDER BY s.ordinal")
                    collided = [(dict(zip(FEEDBACK_COLUMNS, cells[:-1], strict=True)), cells[-1]) for cells in cursor]
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
        return Stored(inserted, collided)
    finally:
        raw.close()


def remove_stale_staging(engine: sa.Engine) -> list[Path]:
    """Remove staging files left beside a sqlite store by a process that no longer runs (killed mid-insert);
    returns what was removed. A staging file never holds the only copy of a row: its source stays in the inbox
    until stored."""
    directory = _sqlite_directory(engine) if engine.dialect.name == "sqlite" else None
    if directory is None:
        return []
    removed = []
    for path in directory.glob(f"{STAGING_PREFIX}*.db"):
        pid = path.name.removeprefix(STAGING_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
