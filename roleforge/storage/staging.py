"""Staging: a chunk's rows written, column by column, as the table `staged` of a scratch sqlite file beside the
store, for inserts.insert_staged to copy in, or as the CSV text of a PostgreSQL COPY, for inserts.insert_copied.
Light to import (pyarrow and ADBC's driver manager; no SQLAlchemy, no DB-API layer, which pulls in pyarrow.dataset and
pandas): ingest's parse workers stage their chunks, and each one starts in a fraction of a second."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, NamedTuple

# A staging file's name: the prefix, then the id of the process that will insert it (see inserts.remove_stale_staging).
STAGING_PREFIX = ".roleforge-staging-"
# The file is scratch, read once and removed (a crash leaves its rows in the inbox): no journal, no fsync, and large
# pages (a fifth less CPU per chunk than SQLite's defaults).
STAGING_PRAGMAS = ("PRAGMA page_size=65536", "PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF")


def json_text(value: Any) -> str:
    """A JSON column's stored text, as SQLAlchemy's JSON type writes it: what every insert path writes."""
    return json.dumps(value)


class Staging(NamedTuple):
    """Where and how rows are staged: the store's directory (None for a COPY), the staged table's columns in order,
    each with its kind (integer, real, text, or json: a Python value written as its json_text), and the target: a
    sqlite staging file beside the store ("sqlite", stage_columns), or the text of a PostgreSQL COPY ("copy",
    copy_csv)."""

    directory: Path | None
    layout: tuple[tuple[str, str], ...]
    target: str = "sqlite"


ARROW_KINDS = ("integer", "real", "text", "json")


def arrow_table(columns: dict[str, list[Any]], layout: tuple[tuple[str, str], ...]) -> Any:
    """The rows, given as a list of values per column name, as an Arrow table of the layout's columns; None when a
    value has no Arrow form of its kind (a lone surrogate, an integer past 64 bits)."""
    import pyarrow as pa

    types = dict(zip(ARROW_KINDS, (pa.int64(), pa.float64(), pa.string(), pa.string())))
    try:
        return pa.table({name: pa.array([None if value is None else json_text(value) for value in columns[name]]
                                        if kind == "json" else columns[name], type=types[kind])
                         for name, kind in layout})
    except (pa.ArrowException, UnicodeError, OverflowError):
        return None


def copy_csv(columns: dict[str, list[Any]], layout: tuple[tuple[str, str], ...]) -> bytes | None:
    """The rows as the text of `COPY ... (FORMAT csv)` of the layout's columns, written by Arrow's CSV writer in C++:
    every text quoted (an empty text is "", a NULL nothing at all, as PostgreSQL's CSV format reads them), no header.
    None when a value has no Arrow form (the caller then copies row by row)."""
    import pyarrow as pa
    import pyarrow.csv

    table = arrow_table(columns, layout)
    if table is None:
        return None
    sink = pa.BufferOutputStream()
    pyarrow.csv.write_csv(table, sink, pyarrow.csv.WriteOptions(include_header=False, quoting_style="needed"))
    return sink.getvalue().to_pybytes()


def stage_columns(columns: dict[str, list[Any]], staging: Staging, owner: int | None = None) -> Path | None:
    """Write rows, given as a list of values per column name, as the table `staged` of a new sqlite file in the
    staging directory, in order, by ADBC's bulk ingest: Arrow columns bound in C, outside the GIL, at about a quarter
    of what Python's sqlite3 module spends binding the same rows one by one. None when a value has no Arrow form of
    its kind (the caller then inserts row by row). The file's name carries the id of the process that will insert it
    (`owner`, this one by default)."""
    import adbc_driver_manager
    import adbc_driver_sqlite

    table = arrow_table(columns, staging.layout)
    if table is None:
        return None
    path = staging.directory / f"{STAGING_PREFIX}{owner or os.getpid()}-{uuid.uuid4().hex}.db"
    try:
        # ADBC's own connections start in autocommit mode: the bulk ingest is the file's one transaction.
        with adbc_driver_sqlite.connect(str(path)) as database, \
                adbc_driver_manager.AdbcConnection(database) as connection, \
                adbc_driver_manager.AdbcStatement(connection) as statement:
            for pragma in STAGING_PRAGMAS:
                statement.set_sql_query(pragma)
                statement.execute_update()
            statement.set_options(**{adbc_driver_manager.INGEST_OPTION_TARGET_TABLE: "staged",
                                     adbc_driver_manager.INGEST_OPTION_MODE: adbc_driver_manager.INGEST_OPTION_MODE_CREATE})
            statement.bind_stream(table)
            statement.execute_update()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
