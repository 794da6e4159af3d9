"""The feedback store: SQLAlchemy Core, sqlite under ROLEFORGE_HOME by default, any SQLAlchemy URL for teams."""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa

# Staging files are written by ingest's parse workers too, which import that light module alone.
from roleforge.storage.staging import (STAGING_PREFIX, Staging, copy_csv, json_text,  # noqa: F401  (STAGING_PREFIX: API)
                                     stage_columns)

metadata = sa.MetaData()

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    # The dedupe key: the content hash's first 64 bits. SQLite keeps a unique index on it at less than half the cost
    # of one on the 64-character hash (1M rows: 5.5 s vs 12.0 s); rows whose keys collide are told apart by the full
    # hash (see collided in insert_new_feedback).
    sa.Column("content_key", sa.BigInteger, nullable=False, unique=True),
    sa.Column("agent_role", sa.String(128), nullable=False, index=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("response", sa.Text),
    sa.Column("rating", sa.Integer),
    sa.Column("response_a", sa.Text),
    sa.Column("response_b", sa.Text),
    sa.Column("preference", sa.String(1)),
    sa.Column("event_id", sa.String(256)),
    sa.Column("rater", sa.String(256)),
    sa.Column("confidence", sa.Float),
    sa.Column("metadata", sa.JSON),
    sa.Column("timestamp", sa.String(64)),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("source_line", sa.Integer, nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

FEEDBACK_COLUMNS = [c.name for c in feedback.columns if c.name not in ("id", "ingested_at")]
ROW_VALUES = operator.itemgetter(*FEEDBACK_COLUMNS)
METADATA_CELL = FEEDBACK_COLUMNS.index("metadata")
INSERT_COLUMNS = ", ".join(FEEDBACK_COLUMNS)
# The same columns of a staged or copied table joined with the store as `s`.
STAGED_COLUMNS = ", ".join("s." + name for name in FEEDBACK_COLUMNS)
# SQLite attaches at most 10 databases to a connection by default.
MAX_STAGED_PER_INSERT = 8


# A new store's page size. Bulk inserts write a third less CPU with 64 KiB pages than with SQLite's 4 KiB default
# (800,000 rows into a fresh store: 3.4-4.2 s against 5.3-5.8 s): fewer page splits and cells per row, and fewer index
# pages for a commit to rewrite. An existing store keeps the size it was created with (SQLite changes it only by
# rebuilding the file).
STORE_PAGE_SIZE = 65536
# The write-ahead log's file is kept at most this large once checkpointed: SQLite's automatic checkpoints (every
# 1,000 pages) keep it about this size anyway.
WAL_SIZE_LIMIT = 1000 * STORE_PAGE_SIZE


# How long a connection waits for a lock another process holds before "database is locked" is raised.
BUSY_TIMEOUT_S = 30


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer; busy_timeout turns "database is locked" into a short wait; a page
    # cache of up to 64 MiB (allocated as used; 256 MiB measured no faster on a 1M-row ingest).
    # busy_timeout comes first: switching to WAL takes a lock that another process may hold for a moment. The page
    # size comes before WAL, which writes the first page of a new file.
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cursor.execute(f"PRAGMA page_size={STORE_PAGE_SIZE}")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-65536")
    # A log that grew past this (see WalCheckpoints) is cut back to it once it is written from its start again.
    cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """PRAGMA journal_mode=WAL, retried while another process holds the store's write lock.

    On a store file no connection has written yet, the switch reads the empty first page and then upgrades to a
    write lock to mark the file WAL. If another process is doing the same, SQLite answers "database is locked" at
    once instead of calling the busy handler (waiting with a read lock held could deadlock), so several processes
    opening a new store together failed one time in six (4 processes, 300 tries). Once the file is WAL the pragma
    reads its header and writes nothing, and this loop runs once."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def ensure_sqlite_parent(url: str) -> None:
    """sqlite creates its file but not the directory it lives in."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


@functools.cache
def engine_for(url: str) -> sa.Engine:
    """One engine per URL and process, with the schema created on first use."""
    ensure_sqlite_parent(url)
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    elif copies(engine):
        sa.event.listen(engine, "connect", _postgresql_settings)
    try:
        metadata.create_all(engine)
    except sa.exc.DatabaseError as error:
        if "already exists" not in str(error):
            raise
        metadata.create_all(engine)  # another process created the schema between our check and our CREATE
    if "content_key" not in {column["name"] for column in sa.inspect(engine).get_columns("feedback")}:
        _add_content_keys(engine)
    return engine


def _add_content_keys(engine: sa.Engine) -> None:
    """Bring a store written before the content_key column (deduped by a unique content_hash) to the current schema,
    once, in one transaction; another process doing the same at the same time waits and then finds it done. SQLite
    rebuilds the table (its inline unique index on content_hash cannot be dropped otherwise); other databases get the
    column, filled in, and a unique index on it."""
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            connection = raw.driver_connection
            connection.create_function("roleforge_content_key", 1, content_key, deterministic=True)
            connection.execute("BEGIN IMMEDIATE")
            try:
                if "content_key" not in {row[1] for row in connection.execute("PRAGMA table_info(feedback)")}:
                    connection.execute("ALTER TABLE feedback RENAME TO feedback_before_content_key")
                    for index in feedback.indexes:
                        connection.execute(f"DROP INDEX IF EXISTS {index.name}")
                    connection.execute(str(sa.schema.CreateTable(feedback).compile(engine)))
                    for index in feedback.indexes:
                        connection.execute(str(sa.schema.CreateIndex(index).compile(engine)))
                    columns = ", ".join(name for name in ["id", *FEEDBACK_COLUMNS, "ingested_at"] if name != "content_key")
                    connection.execute(
                        f"INSERT INTO feedback ({columns}, content_key) SELECT {columns}, "
                        "roleforge_content_key(content_hash) FROM feedback_before_content_key ORDER BY id")
                    connection.execute("DROP TABLE feedback_before_content_key")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        finally:
            raw.close()
        return
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE feedback ADD COLUMN content_key BIGINT")
        stored = connection.execute(sa.text("SELECT id, content_hash FROM feedback")).all()
        for start in range(0, len(stored), 10_000):
            connection.execute(sa.text("UPDATE feedback SET content_key = :key WHERE id = :id"),
                               [{"key": content_key(hash_), "id": id_} for id_, hash_ in stored[start:start + 10_000]])
        connection.exec_driver_sql("CREATE UNIQUE INDEX uq_feedback_content_key ON feedback (content_key)")


def describe_url(url: str) -> str:
    """The store's file for sqlite, else the URL without its password: what an error message names."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return parsed.database
    return parsed.render_as_string(hide_password=True)


def content_key(content_hash: str) -> int:
    """The store's dedupe key of a content hash: its first 64 bits as a signed integer."""
    key = int(content_hash[:16], 16)
    return key - ((key >> 63) << 64)  # two's complement: the first 8 bytes read as a signed big-endian integer


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
    database = engine.url.database
    if database in (None, "", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).resolve().parent


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
    touch most of them (800,000 rows in eight files: 5.9-6.6 s of CPU one file per transaction, 5.3-5.5 s two per
    transaction, 5.0-5.3 s four). With `checkpoints`, the commit leaves the write-ahead log to them instead of
    checkpointing it itself."""
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
                collided.extend(_staged_collisions(connection, schema, last_id + 1 if in_order else None, count))
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
# A session's memory for temporary tables (8 MB by default) and a transaction's for the sort of its copied rows into
# file order (4 MB): 200,000 copied rows are about 85 MB, and past these both spill to files (200,000 rows, fresh
# store: COPY 1.56 -> 0.96 s, INSERT ... SELECT 3.42 -> 2.00 s). Allocated as used, up to this.
POSTGRESQL_TEMP_BUFFERS = "256MB"
COPY_WORK_MEM = "256MB"


def copies(engine: sa.Engine) -> bool:
    """Whether rows go into this store by COPY (insert_copied): PostgreSQL through psycopg 3 (postgresql+psycopg://).
    Other PostgreSQL drivers take the generic path, as other databases do."""
    return engine.dialect.name == "postgresql" and engine.driver == "psycopg"


def _postgresql_settings(dbapi_connection: Any, _record: Any) -> None:
    # temp_buffers takes effect only before a session's first use of a temporary table: set as it connects.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET temp_buffers = '{POSTGRESQL_TEMP_BUFFERS}'")
    dbapi_connection.commit()


def insert_copied(engine: sa.Engine, payloads: Sequence[bytes | Sequence[dict[str, Any]]]) -> Stored:
    """Insert rows into a PostgreSQL store in one transaction: each payload, the text of a CSV COPY (staging.copy_csv)
    or rows that have none (copied one by one), goes by COPY into a temporary table, and one INSERT ... SELECT in
    their order stores the new content keys, so ids follow the payloads' order. Rows not stored whose key another
    content holds are the collisions, found by one join of the copied rows with the store, only when some row was
    not stored. The server parses the CSV and fills the indexes; this process only sends bytes, where SQLAlchemy's
    executemany bound every row's values in Python (100,000 rows: 7.6 s; and it counted the rows inserted wrong)."""
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


# How large a bulk writer lets the write-ahead log grow while WalCheckpoints catch up; past it, a commit checkpoints
# the log itself, and the next transaction writes it from its start again.
MAX_DEFERRED_WAL_BYTES = 2**30


class WalCheckpoints:
    """Checkpoints of a sqlite store's write-ahead log on a thread of their own, for a bulk writer (insert_staged
    with `checkpoints`). SQLite checkpoints in the committing connection by default: it copies the committed pages
    into the database file and syncs both files, and meanwhile the writer, the serial stage of an ingest, waits (on a
    1M-row ingest: 0.4-1.3 s of its CPU and 1.4-2.6 s in all). Here each commit only starts a passive checkpoint, which
    copies what is committed without blocking the writer, whose next transaction runs meanwhile. The log then grows
    (SQLite writes it from its start again only when a checkpoint caught up before a transaction began), up to
    MAX_DEFERRED_WAL_BYTES, past which the commit checkpoints it itself; `close` waits for a last checkpoint, and
    leaves the store as an inline checkpoint would."""

    def __init__(self, engine: sa.Engine, max_wal_bytes: int = MAX_DEFERRED_WAL_BYTES) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.engine = engine
        self.wal = Path(f"{engine.url.database}-wal")
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


# SQLite's largest rowid; once a table holds it, new rows get random ids.
MAX_ROWID = 2**63 - 1
# A staged file's skipped rows are searched for one by one (_skipped_rows) while they are at most this share of it;
# past it, one join of every staged row with the store costs less.
SKIPPED_SEARCH_SHARE = 1 / 256


def _staged_collisions(connection: Any, schema: str, first_id: int | None,
                       inserted: int) -> list[tuple[dict[str, Any], int]]:
    """The staged rows of `schema` that its INSERT ... SELECT did not store because a row with another content hash
    holds their key, each with that row's id. Rows not stored are duplicates almost always, and there are few of
    them: where the inserted rows are known to hold the ids from `first_id` on, in staged order, they are found by
    bisection; else (`first_id` None, or many rows skipped), by joining every staged row with the store."""
    rows, last_rowid = connection.execute(f"SELECT count(*), max(rowid) FROM {schema}.staged").fetchone()
    if inserted == rows:
        return []
    query = (f"SELECT {STAGED_COLUMNS}, f.id, f.content_hash <> s.content_hash FROM {schema}.staged s "
             "JOIN feedback f ON f.content_key = s.content_key")
    found = None
    if first_id is not None and last_rowid == rows and rows - inserted <= rows * SKIPPED_SEARCH_SHARE:
        skipped = _skipped_rows(connection, schema, first_id, rows, inserted)
        found = connection.execute(
            f"{query} WHERE s.rowid IN ({', '.join(map(str, skipped))}) ORDER BY s.rowid").fetchall()
        if not len(found) == len(skipped) == rows - inserted:  # each skipped row's key is held, or the search erred
            found = None
    if found is None:
        found = connection.execute(f"{query} ORDER BY s.rowid")
    return [(_staged_row(cells[:-2]), cells[-2]) for cells in found if cells[-1]]


def _skipped_rows(connection: Any, schema: str, first_id: int, rows: int, inserted: int) -> list[int]:
    """The rowids of the `rows - inserted` staged rows (rowids 1..rows) that an INSERT ... SELECT in rowid order did
    not store, given that the rows it stored took the ids first_id, first_id + 1, ... A staged row r with t rows
    skipped before it was stored at id first_id + r - 1 - t exactly when that row holds r's content key: true up to
    the next skipped row, false from it on (a row stored later never shares the key of one stored or skipped before
    it). So each skipped row costs a bisection: 17 steps of two point lookups in 100,000 staged rows, where the join of
    every staged row with the store's key index took 0.1-0.2 s of the writer's CPU per 100,000 rows (it ran for most
    chunks of real feedback, where a few duplicates are the rule)."""
    staged_key = f"SELECT content_key FROM {schema}.staged WHERE rowid = ?"

    def stored_in_place(row: int, skipped_before: int) -> bool:
        # Past this file's stored rows lie another file's (never with r's key, as above) or none.
        at = first_id + row - 1 - skipped_before
        if at > MAX_ROWID:  # no such id (and none SQLite could bind)
            return False
        held = connection.execute("SELECT content_key FROM feedback WHERE id = ?", (at,)).fetchone()
        return held is not None and held[0] == connection.execute(staged_key, (row,)).fetchone()[0]

    skipped: list[int] = []
    low = 1
    while len(skipped) < rows - inserted and low <= rows:
        high = rows  # the first row from `low` on not stored in place
        while low < high:
            middle = (low + high) // 2
            if stored_in_place(middle, len(skipped)):
                low = middle + 1
            else:
                high = middle
        skipped.append(low)
        low += 1
    return skipped


def _staged_row(cells: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(FEEDBACK_COLUMNS, cells, strict=True))
    row["metadata"] = None if row["metadata"] is None else json.loads(row["metadata"])
    return row


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


def feedback_for_role(engine: sa.Engine, role: str) -> list[dict[str, Any]]:
    """Every stored feedback row of one role, oldest first."""
    query = sa.select(*[feedback.c[name] for name in ["id", *FEEDBACK_COLUMNS]]).where(
        feedback.c.agent_role == role).order_by(feedback.c.id)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def feedback_counts(engine: sa.Engine, roles: Iterable[str] | None = None) -> dict[str, int]:
    """Stored feedback rows per role."""
    query = sa.select(feedback.c.agent_role, sa.func.count()).group_by(feedback.c.agent_role)
    if roles is not None:
        query = query.where(feedback.c.agent_role.in_(list(roles)))
    with engine.connect() as connection:
        return {role: count for role, count in connection.execute(query)}
