"""The staged rows an INSERT ... SELECT did not store because another row holds their 64-bit key: found by
bisection over the ids the stored rows took, or by a join when that cannot apply."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from roleforge.storage.schema import FEEDBACK_COLUMNS, STAGED_COLUMNS

# SQLite's largest rowid; once a table holds it, new rows get random ids.
MAX_ROWID = 2**63 - 1

# A staged file's skipped rows are searched for one by one (_skipped_rows) while they are at most this share of it;
# past it, one join of every staged row with the store costs less.
SKIPPED_SEARCH_SHARE = 1 / 256


def staged_collisions(connection: Any, schema: str, first_id: int | None,
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
    it). So each skipped row costs a bisection, about 17 steps of two point lookups in 100,000 staged rows, where a
    join of every staged row with the store's key index cost the writer far more, and ran for most chunks of real
    feedback, where a few duplicates are the rule (docs/perf-notes.md)."""
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
