"""Ingest: every line is stored once, quarantined with its reason, or skipped as blank; nothing is lost."""

import json
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
