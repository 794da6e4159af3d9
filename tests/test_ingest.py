"""Ingest: every line is stored once, quarantined with its reason, or skipped as blank; nothing is lost."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from roleforge.tasks.errors import RoleforgeError
from roleforge.tasks.ingest import ingest_files
from roleforge.tasks.store import engine_for, feedback_for_role

ROLES = {"ceo", "cfo", "coo", "tool-agent"}
GOOD = [
    {"agent_role": "ceo", "prompt": "Expand?", "response": "Decision: yes.", "rating": 5},
    {"agent_role": "ceo", "prompt": "Expand?", "response_a": "Yes.", "response_b": "Maybe.", "preference": "a"},
    {"agent_role": "cfo", "prompt": "Mail me at a.b@example.com", "response": "Card 4111 1111 1111 1111", "rating": 2},
]
BAD = [b'{"agent_role": "ceo", "prompt": "x"', b'[1, 2]', b'{"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 0}',
       b'{"agent_role": "ceo", "prompt": "caf\xe9", "response": "r", "rating": 3}', b'"just a string"', b'null']


def write_mixed(path: Path) -> Path:
    lines = [json.dumps(r).encode() for r in GOOD] + BAD + [b"", b"   "]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def ingest(tmp_path: Path, *paths: Path) -> dict:
    return ingest_files([str(p) for p in paths], ROLES, f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "quarantine").model_dump()


def test_counts_quarantine_and_idempotence(tmp_path):
    source = write_mixed(tmp_path / "feedback.jsonl")
    first = ingest(tmp_path, source)
    assert (first["ingested"], first["duplicates"], first["quarantined"], first["blank"]) == (3, 0, 6, 2)
    entries = [json.loads(line) for line in Path(first["quarantine_path"]).read_text().splitlines()]
    assert [e["line"] for e in entries] == [4, 5, 6, 7, 8, 9]
    assert all(e["source"] == str(source) and e["reason"] and "raw" in e for e in entries)
    assert "not UTF-8" in entries[3]["reason"] and entries[3]["raw_base64"]
    assert "not a JSON object" in entries[1]["reason"]
    again = ingest(tmp_path, source)
    assert (again["ingested"], again["duplicates"]) == (0, 3)


def test_pii_is_scrubbed_before_storage(tmp_path):
    ingest(tmp_path, write_mixed(tmp_path / "feedback.jsonl"))
    (row,) = feedback_for_role(engine_for(f"sqlite:///{tmp_path / 'store.db'}"), "cfo")
    assert row["prompt"] == "Mail me at [EMAIL]" and row["response"] == "Card [CARD]"


def test_csv_and_parquet_and_directories(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pd.DataFrame([GOOD[0], {**GOOD[0], "rating": 9}]).to_csv(folder / "a.csv", index=False)
    pd.DataFrame([GOOD[1]]).to_parquet(folder / "b.parquet")
    (folder / "notes.txt").write_text("ignored: not a feedback file")
    report = ingest(tmp_path, folder)
    assert (report["files"], report["ingested"], report["quarantined"]) == (2, 2, 1)
    entry = json.loads(Path(report["quarantine_path"]).read_text())
    assert entry["line"] == 3 and "rating" in entry["reason"]


def test_duplicates_inside_one_batch_are_stored_once(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text((json.dumps(GOOD[0]) + "\n") * 3)
    report = ingest(tmp_path, path)
    assert (report["ingested"], report["duplicates"]) == (1, 2)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(RoleforgeError, match="no such feedback file"):
        ingest(tmp_path, tmp_path / "absent.jsonl")


def stored_cells(url: str) -> list[tuple]:
    """Every stored row with each cell's SQLite storage class, ids and ingest times left out."""
    import sqlite3

    from roleforge.tasks.store import FEEDBACK_COLUMNS

    cells = ", ".join(f"{name}, typeof({name})" for name in FEEDBACK_COLUMNS)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        return connection.execute(f"SELECT {cells} FROM feedback ORDER BY id").fetchall()


def test_bulk_staged_insert_stores_what_the_row_by_row_insert_stores(tmp_path, monkeypatch):
    from roleforge.tasks import store
    from roleforge.tasks.ingest import to_stored_row

    base = {"agent_role": "ceo", "kind": "rating", "prompt": "p", "response": "r", "rating": 3, "response_a": None,
            "response_b": None, "preference": None, "event_id": None, "rater": None, "confidence": None, "metadata": None,
            "timestamp": None}
    rows = [to_stored_row(fields, "f.jsonl", line) for line, fields in enumerate([
        base, {**base, "prompt": "q", "confidence": 0.25, "rater": "u-1", "event_id": "e-9", "timestamp": None},
        {**base, "prompt": "caf\u00e9 \u2603 \U0001f600", "metadata": {"channel": "slack", "n": [1, 2.5, None]}},
        {**base, "kind": "ab", "prompt": "ab", "response": None, "rating": None, "response_a": "x", "response_b": "y",
         "preference": "b", "confidence": 1.0},
        base,  # a duplicate inside the batch: stored once, the first one
    ], start=1)]
    staged, plain = f"sqlite:///{tmp_path / 'staged.db'}", f"sqlite:///{tmp_path / 'plain.db'}"
    assert store.insert_new_feedback(store.engine_for(staged), rows) == 4
    assert store.insert_new_feedback(store.engine_for(staged), rows[:2]) == 0  # already stored
    with monkeypatch.context() as patched:
        patched.setattr(store, "_stage_rows", lambda *_: None)  # the row-by-row fallback
        assert store.insert_new_feedback(store.engine_for(plain), rows) == 4
    assert stored_cells(staged) == stored_cells(plain)
    assert [row[-2] for row in stored_cells(staged)] == [1, 2, 3, 4]  # source_line: file order kept in the ids
    assert not list(tmp_path.glob(f"{store.STAGING_PREFIX}*"))


def test_a_failed_bulk_insert_leaves_no_staging_file_and_nothing_stored(tmp_path):
    from roleforge.tasks import store
    from roleforge.tasks.ingest import to_stored_row

    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = store.engine_for(url)
    with engine.begin() as connection:  # a trigger that fails every insert, after the staging file was written
        connection.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON feedback BEGIN SELECT RAISE(ABORT, 'refused'); END")
    fields = {"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "response_a": None, "response_b": None,
              "preference": None, "event_id": None, "rater": None, "confidence": None, "metadata": None, "timestamp": None}
    with pytest.raises(Exception, match="refused"):
        store.insert_new_feedback(engine, [to_stored_row(fields, "f.jsonl", 1)])
    assert not list(tmp_path.glob(f"{store.STAGING_PREFIX}*"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM feedback").scalar() == 0


def test_staging_files_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    from roleforge.tasks import store

    engine = store.engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = tmp_path / f"{store.STAGING_PREFIX}{finished.stdout.strip()}-abc.db"
    alive = tmp_path / f"{store.STAGING_PREFIX}{os.getpid()}-def.db"
    other = tmp_path / "notes.db"
    for path in (dead, alive, other):
        path.write_bytes(b"x")
    assert store.remove_stale_staging(engine) == [dead]
    assert alive.exists() and other.exists() and not dead.exists()
