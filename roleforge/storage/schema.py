"""The feedback store's schema: the feedback table, one engine per URL (SQLite's pragmas, PostgreSQL's session
settings), the migration of a store written before the dedupe key, and the reads of the stages."""

from __future__ import annotations

import functools
import operator
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from roleforge.storage.urls import ensure_sqlite_parent

metadata = sa.MetaData()

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    # The dedupe key: the content hash's first 64 bits. SQLite keeps a unique index on it at less than half the cost
    # of one on the 64-character hash (docs/perf-notes.md); rows whose keys collide are told apart by the full hash.
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

# A new store's page size. Bulk inserts take a third less CPU with 64 KiB pages than with SQLite's 4 KiB default
# (docs/perf-notes.md): fewer page splits and cells per row, and fewer index pages for a commit to rewrite. An existing
# store keeps the size it was created with (SQLite changes it only by rebuilding the file).
STORE_PAGE_SIZE = 65536

# The write-ahead log's file is kept at most this large once checkpointed: SQLite's automatic checkpoints (every
# 1,000 pages) keep it about this size anyway.
WAL_SIZE_LIMIT = 1000 * STORE_PAGE_SIZE

# How long a connection waits for a lock another process holds before "database is locked" is raised.
BUSY_TIMEOUT_S = 30


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside one writer; busy_timeout turns "database is locked" into a short wait; a page
    # cache of up to 64 MiB (allocated as used; a larger one was no faster).
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
    opening a new store together often failed. Once the file is WAL the pragma
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


def content_key(content_hash: str) -> int:
    """The store's dedupe key of a content hash: its first 64 bits as a signed integer."""
    key = int(content_hash[:16], 16)
    return key - ((key >> 63) << 64)  # two's complement: the first 8 bytes read as a signed big-endian integer


# A session's memory for temporary tables (8 MB by default) and a transaction's for the sort of its copied rows into
# file order (4 MB): a transaction's copied rows outgrow both, which then spill to files (docs/perf-notes.md).
# Allocated as used, up to this.
POSTGRESQL_TEMP_BUFFERS = "256MB"


def copies(engine: sa.Engine) -> bool:
    """Whether rows go into this store by COPY (insert_copied): PostgreSQL through psycopg 3 (postgresql+psycopg://).
    Other PostgreSQL drivers take the generic path, as other databases do."""
    return engine.dialect.name == "postgresql" and engine.driver == "psycopg"


def _postgresql_settings(dbapi_connection: Any, _record: Any) -> None:
    # temp_buffers takes effect only before a session's first use of a temporary table: set as it connects.
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET temp_buffers = '{POSTGRESQL_TEMP_BUFFERS}'")
    dbapi_connection.commit()


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
