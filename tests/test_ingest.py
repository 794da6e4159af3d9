"""Ingest: every line is stored once, quarantined with its reason, or skipped as blank; nothing is lost."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from roleforge.ingest.quarantine import Quarantined, quarantine_lines
from roleforge.ops.errors import RoleforgeError
from roleforge.storage.schema import engine_for, feedback_for_role
from roleforge.tasks.ingest import ingest_files

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


def test_exports_as_editors_and_spreadsheets_write_them(tmp_path):
    """A byte-order mark before a CSV's header or a JSONL's first row, and a JSON document holding an array of rows
    (pretty-printed), are read as the rows they hold; a bad item of the array is quarantined under its number."""
    bom = b"\xef\xbb\xbf"
    (tmp_path / "sheet.csv").write_bytes(bom + b"Agent Role,Prompt,Response , RATING\nceo,Expand?,Decision: yes.,5\n")
    (tmp_path / "notes.jsonl").write_bytes(bom + json.dumps(GOOD[1]).encode() + b"\r\n")
    (tmp_path / "export.json").write_text(json.dumps([GOOD[2], {**GOOD[0], "rating": 0}, [1, 2]], indent=2))
    report = ingest(tmp_path, tmp_path / "sheet.csv", tmp_path / "notes.jsonl", tmp_path / "export.json")
    assert (report["ingested"], report["duplicates"], report["quarantined"]) == (3, 0, 2)
    entries = [json.loads(line) for line in Path(report["quarantine_path"]).read_text().splitlines()]
    assert [(e["line"], e["reason"].split(":")[0]) for e in entries] == [(2, "rating"), (3, "not a JSON object but list")]
    assert json.loads(entries[0]["raw"]) == {**GOOD[0], "rating": 0}


def test_exports_of_other_tools_are_stored_with_their_own_fields_kept(tmp_path):
    """A chat platform's export (its own fields, a thumbs column, a transcript) and a preference dataset
    (prompt/chosen/rejected) are stored as rows, not quarantined for the fields the contract does not name."""
    (tmp_path / "platform.csv").write_text("Role,Question,Answer,Thumbs,Session ID\n"
                                           "ceo,Expand?,Decision: yes.,up,s-1\nCEO,Expand?,Maybe.,down,s-2\n"
                                           "ceo,Expand?,Decision: yes, now.,up,s-3\n")  # an unquoted comma: refused
    (tmp_path / "chats.jsonl").write_text(json.dumps({"agent": "cfo", "rating": 4, "conversation_id": 7, "messages": [
        {"role": "user", "content": "Cash?"}, {"role": "assistant", "content": "Figures: 1."}]}) + "\n")
    (tmp_path / "pairs.json").write_text(json.dumps([{"prompt": "Hire?", "chosen": "Decision: wait.", "rejected": "Hm.",
                                                      "role": "ceo"}]))
    report = ingest(tmp_path, tmp_path / "platform.csv", tmp_path / "chats.jsonl", tmp_path / "pairs.json")
    assert (report["ingested"], report["quarantined"]) == (4, 1)
    (entry,) = [json.loads(line) for line in Path(report["quarantine_path"]).read_text().splitlines()]
    assert (entry["line"], entry["reason"]) == (4, "1 more cell(s) than the CSV header has columns (a text with an "
                                                   "unquoted comma shifts the cells after it)")
    engine = engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    ceo = {(row["prompt"], row["response"] or row["response_a"]): row for row in feedback_for_role(engine, "ceo")}
    assert ceo["Expand?", "Decision: yes."]["rating"] == 5 and ceo["Expand?", "Maybe."]["rating"] == 1
    assert ceo["Expand?", "Maybe."]["metadata"] == {"Session ID": "s-2"}
    assert ceo["Hire?", "Decision: wait."]["preference"] == "a"
    (cfo,) = feedback_for_role(engine, "cfo")
    assert (cfo["prompt"], cfo["response"], cfo["rating"]) == ("Cash?", "Figures: 1.", 4)


def test_compressed_files_and_suffixes_in_capitals_are_read_by_their_format(tmp_path):
    import gzip

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.JSONL.gz").write_bytes(gzip.compress(json.dumps(GOOD[0]).encode() + b"\n"))
    (folder / "b.CSV").write_text("agent_role,prompt,response,rating\ncfo,Cash?,Figures: 1.,4\n")
    (folder / "c.json.gz").write_bytes(gzip.compress(json.dumps([GOOD[1]], indent=2).encode()))
    (folder / "notes.txt.gz").write_bytes(gzip.compress(b"not feedback"))
    report = ingest(tmp_path, folder)
    assert (report["files"], report["ingested"], report["quarantined"]) == (3, 3, 0)


def test_pretty_printed_objects_one_after_another_are_rows(tmp_path):
    (tmp_path / "jq.json").write_text("".join(json.dumps(row, indent=2) + "\n" for row in GOOD))
    report = ingest(tmp_path, tmp_path / "jq.json")
    assert (report["ingested"], report["quarantined"]) == (3, 0)


def test_a_json_array_that_does_not_parse_is_quarantined_line_by_line(tmp_path):
    (tmp_path / "cut.json").write_text(json.dumps([GOOD[0], GOOD[2]], indent=1)[:-3])
    report = ingest(tmp_path, tmp_path / "cut.json")
    lines = [line for line in (tmp_path / "cut.json").read_text().splitlines() if line.strip()]
    assert (report["ingested"], report["quarantined"]) == (0, len(lines))


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

    from roleforge.storage.schema import FEEDBACK_COLUMNS

    cells = ", ".join(f"{name}, typeof({name})" for name in FEEDBACK_COLUMNS)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        return connection.execute(f"SELECT {cells} FROM feedback ORDER BY id").fetchall()


def test_bulk_staged_insert_stores_what_the_row_by_row_insert_stores(tmp_path, monkeypatch):
    from roleforge.ingest.rows import to_stored_row
    from roleforge.storage import inserts, schema, staging

    base = {"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "response_a": None,
            "response_b": None, "preference": None, "event_id": None, "rater": None, "confidence": None, "metadata": None,
            "timestamp": None}
    rows = [to_stored_row(fields, "f.jsonl", line) for line, fields in enumerate([
        base, {**base, "prompt": "q", "confidence": 0.25, "rater": "u-1", "event_id": "e-9", "timestamp": None},
        {**base, "prompt": "caf\u00e9 \u2603 \U0001f600", "metadata": {"channel": "slack", "n": [1, 2.5, None]}},
        {**base, "prompt": "ab", "response": None, "rating": None, "response_a": "x", "response_b": "y",
         "preference": "b", "confidence": 1.0},
        base,  # a duplicate inside the batch: stored once, the first one
    ], start=1)]
    staged, plain = f"sqlite:///{tmp_path / 'staged.db'}", f"sqlite:///{tmp_path / 'plain.db'}"
    assert inserts.insert_new_feedback(schema.engine_for(staged), rows) == (4, [])
    assert inserts.insert_new_feedback(schema.engine_for(staged), rows[:2]) == (0, [])  # already stored
    with monkeypatch.context() as patched:
        patched.setattr(inserts, "stage_rows", lambda *_: None)  # the row-by-row fallback
        assert inserts.insert_new_feedback(schema.engine_for(plain), rows) == (4, [])
    assert stored_cells(staged) == stored_cells(plain)
    assert [row[-2] for row in stored_cells(staged)] == [1, 2, 3, 4]  # source_line: file order kept in the ids
    assert not list(tmp_path.glob(f"{staging.STAGING_PREFIX}*"))


def test_a_failed_bulk_insert_leaves_no_staging_file_and_nothing_stored(tmp_path):
    from roleforge.ingest.rows import to_stored_row
    from roleforge.storage import inserts, schema, staging

    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = schema.engine_for(url)
    with engine.begin() as connection:  # a trigger that fails every insert, after the staging file was written
        connection.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON feedback BEGIN SELECT RAISE(ABORT, 'refused'); END")
    fields = {"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "response_a": None, "response_b": None,
              "preference": None, "event_id": None, "rater": None, "confidence": None, "metadata": None, "timestamp": None}
    with pytest.raises(Exception, match="refused"):
        inserts.insert_new_feedback(engine, [to_stored_row(fields, "f.jsonl", 1)])
    assert not list(tmp_path.glob(f"{staging.STAGING_PREFIX}*"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM feedback").scalar() == 0


def test_staging_files_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    from roleforge.storage import inserts, schema, staging

    engine = schema.engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = tmp_path / f"{staging.STAGING_PREFIX}{finished.stdout.strip()}-abc.db"
    alive = tmp_path / f"{staging.STAGING_PREFIX}{os.getpid()}-def.db"
    other = tmp_path / "notes.db"
    for path in (dead, alive, other):
        path.write_bytes(b"x")
    assert inserts.remove_stale_staging(engine) == [dead]
    assert alive.exists() and other.exists() and not dead.exists()


@pytest.mark.parametrize("path", ["staged", "row_by_row", "generic"])
def test_rows_whose_store_keys_collide_are_quarantined_not_lost(tmp_path, monkeypatch, path):
    from roleforge.ingest import rows as feedback_rows
    from roleforge.storage import inserts

    # Four distinct keys for 24 distinct rows: most rows collide with a stored row or one earlier in their batch.
    monkeypatch.setattr(feedback_rows, "content_keys", lambda digests: [int(digest[0], 16) % 4 for digest in digests])
    if path != "staged":
        monkeypatch.setattr(inserts, "stage_rows", lambda *_: None)
    if path == "generic":
        monkeypatch.setattr(type(engine_for(f"sqlite:///{tmp_path / 'store.db'}").dialect), "name", "generic")
    source = tmp_path / "feedback.jsonl"
    rows = [{"agent_role": "ceo", "prompt": f"Question {n}?", "response": "Decision: yes.", "rating": 4} for n in range(24)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = ingest_files([str(source)], ROLES, f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "quarantine",
                          batch_rows=10)
    assert report.ingested == 4 and report.duplicates == 0 and report.quarantined == 20
    entries = [json.loads(line) for line in Path(report.quarantine_path).read_text().splitlines()]
    assert all("shares its 64-bit store key" in entry["reason"] for entry in entries)
    stored = {row["prompt"] for row in feedback_for_role(engine_for(f"sqlite:///{tmp_path / 'store.db'}"), "ceo")}
    quarantined = {json.loads(entry["raw"])["prompt"] for entry in entries}
    assert stored | quarantined == {row["prompt"] for row in rows} and not stored & quarantined
    assert sorted(entry["line"] for entry in entries) == sorted(
        n + 1 for n, row in enumerate(rows) if row["prompt"] in quarantined)
    again = ingest_files([str(source)], ROLES, f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "quarantine")
    assert (again.ingested, again.duplicates, again.quarantined) == (0, 4, 20)


def test_a_store_written_before_content_keys_is_migrated_once(tmp_path):
    import sqlite3

    from roleforge.ingest.hashing import content_hash
    from roleforge.storage.schema import content_key

    database = tmp_path / "store.db"
    with sqlite3.connect(database) as connection:  # the schema as it was, unique on content_hash
        connection.executescript("""
            CREATE TABLE feedback (id INTEGER NOT NULL, content_hash VARCHAR(64) NOT NULL, agent_role VARCHAR(128) NOT NULL,
              kind VARCHAR(8) NOT NULL, prompt TEXT NOT NULL, response TEXT, rating INTEGER, response_a TEXT,
              response_b TEXT, preference VARCHAR(1), event_id VARCHAR(256), rater VARCHAR(256), confidence FLOAT,
              metadata JSON, timestamp VARCHAR(64), source TEXT NOT NULL, source_line INTEGER NOT NULL,
              ingested_at DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL, PRIMARY KEY (id), UNIQUE (content_hash));
            CREATE INDEX ix_feedback_agent_role ON feedback (agent_role);""")
        old = {"agent_role": "ceo", "kind": "rating", "prompt": "Expand?", "response": "Decision: yes.", "rating": 5}
        connection.execute("INSERT INTO feedback (id, content_hash, agent_role, kind, prompt, response, rating, source, "
                           "source_line, ingested_at) VALUES (7, ?, 'ceo', 'rating', 'Expand?', 'Decision: yes.', 5, "
                           "'old.jsonl', 1, '2026-01-02 03:04:05')", (content_hash(old),))
    source = write_mixed(tmp_path / "feedback.jsonl")
    report = ingest(tmp_path, source)
    assert (report["ingested"], report["duplicates"]) == (2, 1)  # GOOD[0] was stored before the migration
    with sqlite3.connect(database) as connection:
        first = connection.execute("SELECT id, content_key, source, ingested_at FROM feedback ORDER BY id").fetchone()
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(feedback)")}
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert first == (7, content_key(content_hash(old)), "old.jsonl", "2026-01-02 03:04:05")
    assert "ix_feedback_agent_role" in indexes and tables == {"feedback"}
    assert len(indexes) == 2  # the role index and the content key's; the old unique index on content_hash is gone
    with sqlite3.connect(database) as connection:  # an existing store keeps its page size
        assert connection.execute("PRAGMA page_size").fetchone() == (4096,)


def test_a_new_store_has_large_pages_and_keeps_them(tmp_path):
    import sqlite3

    from roleforge.storage.schema import STORE_PAGE_SIZE

    ingest(tmp_path, write_mixed(tmp_path / "feedback.jsonl"))
    engine_for.cache_clear()
    again = ingest(tmp_path, write_mixed(tmp_path / "again.jsonl"))
    assert (again["ingested"], again["duplicates"]) == (0, 3)
    with sqlite3.connect(tmp_path / "store.db") as connection:
        assert connection.execute("PRAGMA page_size").fetchone() == (STORE_PAGE_SIZE,) == (65536,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _open_store_at_barrier(url: str, barrier) -> str:
    barrier.wait()
    try:
        with engine_for(url).connect() as connection:
            return connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    except Exception as error:  # returned, so that the test shows it
        return repr(error)


def test_processes_opening_a_new_store_at_once_all_get_it(tmp_path):
    # Four processes open the same new store at the same moment, forty times: the first to write marks the file WAL
    # while the others read its empty first page. Without a retry one round in five failed with "database is locked".
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no copy of this process's threads and their locks
    with context.Manager() as manager, context.Pool(4) as pool:
        for round_ in range(40):
            url = f"sqlite:///{tmp_path / f'store-{round_}.db'}"
            barrier = manager.Barrier(4)
            assert pool.starmap(_open_store_at_barrier, [(url, barrier)] * 4) == ["wal"] * 4


def test_parse_workers_store_and_quarantine_what_the_ingest_process_does(tmp_path):
    """The same file through two worker processes (chunks of 4 lines, staged beside the store) and in-process."""
    lines = [json.dumps({**GOOD[n % 3], "prompt": f"{GOOD[n % 3]['prompt']} #{n}"}).encode() for n in range(14)]
    lines[3:3] = BAD + [b"", b"  "]
    lines.append(lines[0])  # a duplicate
    lines[0] = b"\xef\xbb\xbf" + lines[0]  # a byte-order mark, in the first worker's first span
    lines.append(b'{"agent_role": "ceo"')  # a bad last line with no line end
    source = tmp_path / "feedback.jsonl"
    source.write_bytes(b"\n".join(lines))
    reports, entries = {}, {}
    for workers in (0, 2):
        url = f"sqlite:///{tmp_path / f'store-{workers}.db'}"
        report = ingest_files([str(source)], ROLES, url, tmp_path / f"quarantine-{workers}", batch_rows=4, workers=workers)
        reports[workers] = report.model_dump(exclude={"quarantine_path"})
        entries[workers] = Path(report.quarantine_path).read_text()
    assert reports[0] == reports[2]
    assert (reports[2]["ingested"], reports[2]["duplicates"], reports[2]["quarantined"], reports[2]["blank"]) == (14, 1, 7, 2)
    assert entries[0] == entries[2]
    assert stored_cells(f"sqlite:///{tmp_path / 'store-0.db'}") == stored_cells(f"sqlite:///{tmp_path / 'store-2.db'}")
    assert not list(tmp_path.glob(".roleforge-staging-*"))


def test_quarantine_lines_are_utf8_json_even_for_text_utf8_cannot_hold():
    """A lone surrogate (text from a decoder that let one through) is written escaped, not dropped or crashing."""
    entries = [Quarantined("a.csv", 3, "prompt: blank", "caf\udce9 \u00e9"),
               Quarantined("b.jsonl", 4, "not UTF-8", b"ok \xff"),
               Quarantined("b.jsonl", 5, "rating: too large", b'{"prompt": "caf\xc3\xa9"}')]
    lines = quarantine_lines(entries).decode("utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [entry.as_record() for entry in entries]
    assert "caf\u00e9" in lines[2] and "\\u00e9" not in lines[2]  # non-ASCII kept as is where UTF-8 holds it


def test_parse_workers_read_a_file_another_ingest_archives_meanwhile(tmp_path):
    """The workers read the file the ingest holds open, not its name: moved away mid-ingest (another ingest of the
    same inbox archived it), every chunk is still parsed."""
    from roleforge.ingest.parse_workers import PARSE_PARTS, ParseWorkers
    from roleforge.storage import inserts

    source = tmp_path / "feedback.jsonl"
    rows = [{**GOOD[0], "prompt": f"Question {n}?"} for n in range(12)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with ParseWorkers(1, inserts.staging_for(engine_for(f"sqlite:///{tmp_path / 'store.db'}"))) as workers:
        chunks = workers.chunks(str(source), ROLES, 2 * PARSE_PARTS)  # a worker parses chunks of two lines
        first = next(chunks)
        source.rename(tmp_path / "archived.jsonl")
        rest = list(chunks)
    assert [chunk.good for chunk in [first, *rest]] == [2] * 6
    assert all(chunk.staged.exists() for chunk in [first, *rest])


def test_a_parse_worker_s_failure_is_a_one_line_error_naming_it(tmp_path):
    from roleforge.ingest.parse_workers import ParseWorkers
    from roleforge.storage.inserts import STAGED_LAYOUT
    from roleforge.storage.staging import Staging

    source = tmp_path / "feedback.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in GOOD))
    # the worker cannot write its staging file
    with ParseWorkers(1, Staging(tmp_path / "no-such-directory", STAGED_LAYOUT)) as workers:
        with pytest.raises(RoleforgeError, match="an ingest parse worker failed: .*no-such-directory"):
            list(workers.chunks(str(source), ROLES, 2))


@pytest.mark.parametrize("digest", ["0" * 64, "7" + "f" * 63, "8" + "0" * 63, "f" * 64, "9e1f" * 16])
def test_the_content_key_is_the_hash_s_first_eight_bytes_as_a_signed_integer(digest):
    from roleforge.ingest.hashing import content_keys
    from roleforge.storage.schema import content_key

    assert content_key(digest) == int.from_bytes(bytes.fromhex(digest[:16]), "big", signed=True)
    assert content_keys([digest, "0" * 64, digest]) == [content_key(digest), 0, content_key(digest)]


def test_a_worker_s_staging_file_belongs_to_the_ingest_process(tmp_path):
    """Named for the process that inserts it, so that remove_stale_staging keeps it while that process runs."""
    from roleforge.ingest.parse_workers import ParseWorkers
    from roleforge.storage import inserts, staging

    source = tmp_path / "feedback.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in GOOD))
    with ParseWorkers(1, inserts.staging_for(engine_for(f"sqlite:///{tmp_path / 'store.db'}"))) as workers:
        (chunk,) = workers.chunks(str(source), ROLES, 10)
    assert chunk.staged.name.startswith(f"{staging.STAGING_PREFIX}{os.getpid()}-") and chunk.good == 3
    assert inserts.remove_stale_staging(engine_for(f"sqlite:///{tmp_path / 'store.db'}")) == []
    assert inserts.insert_staged(engine_for(f"sqlite:///{tmp_path / 'store.db'}"), chunk.staged).inserted == 3


def test_staging_files_stored_together_are_one_transaction_in_file_order(tmp_path):
    """Several staged chunks per insert: ids follow the files' order, a key held by another file's row is a
    collision, a repeat is a duplicate, and a failure stores none of them."""
    from roleforge.ingest.rows import to_stored_row
    from roleforge.storage import inserts

    def staged(*rows: tuple[dict, int]) -> Path:
        stored = []
        for fields, key in rows:
            row = to_stored_row({**dict.fromkeys(["rating", "response", "response_a", "response_b", "preference",
                                                  "event_id", "rater", "confidence", "metadata", "timestamp"]),
                                 **fields}, "feedback.jsonl", key)
            stored.append({**row, "content_key": key})
        return inserts.stage_rows(stored, tmp_path)

    first, second, third = ({"agent_role": "ceo", "prompt": f"Question {n}?", "response": "Yes.", "rating": 4}
                            for n in range(3))
    engine = engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    files = [staged((first, 1), (second, 2)), staged((third, 1), (second, 2), ({**third, "rating": 5}, 3))]
    result = inserts.insert_staged(engine, files)
    assert result.inserted == 3 and not any(path.exists() for path in files)
    assert [(row["prompt"], row["content_key"]) for row, _ in result.collided] == [("Question 2?", 1)]
    held = feedback_for_role(engine, "ceo")
    assert [(row["prompt"], row["rating"], row["content_key"]) for row in held] == [
        ("Question 0?", 4, 1), ("Question 1?", 4, 2), ("Question 2?", 5, 3)]
    assert result.collided[0][1] == held[0]["id"]

    broken = tmp_path / "broken.db"
    broken.write_bytes(b"")  # an empty database: no staged table
    files = [staged(({**first, "prompt": "New?"}, 7)), broken]
    with pytest.raises(Exception, match="no such table"):
        inserts.insert_staged(engine, files)
    assert len(feedback_for_role(engine, "ceo")) == 3 and not any(path.exists() for path in files)


def test_a_parse_worker_stages_rows_without_sqlalchemy_or_pandas(tmp_path):
    """A parse worker imports the light modules only (its start-up cost is paid once per worker and ingest), and
    a chunk it stages has every column an insert gives."""
    import subprocess
    import sys

    from roleforge.storage import inserts, schema

    source = tmp_path / "feedback.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in GOOD))
    script = (
        "import sys; from pathlib import Path; from roleforge.ingest.rows import parse_lines; "
        "from roleforge.ingest.worker import light_worker; "
        "light_worker(); "
        "from roleforge.storage.staging import Staging; "
        f"chunk = parse_lines('f', 1, Path({str(source)!r}).read_bytes(), {sorted(ROLES)!r}, "
        f"Staging(Path({str(tmp_path)!r}), {inserts.STAGED_LAYOUT!r})); "
        "print(chunk.staged, chunk.good, [m for m in ('sqlalchemy', 'pandas', 'prefect') if m in sys.modules])")
    staged, good, heavy = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                         check=True).stdout.split(maxsplit=2)
    assert (good, heavy.strip()) == ("3", "[]")
    import sqlite3

    with sqlite3.connect(staged) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(staged)")]
    assert columns == schema.FEEDBACK_COLUMNS
    assert inserts.insert_staged(engine_for(f"sqlite:///{tmp_path / 'store.db'}"), Path(staged)).inserted == 3


def _database_holds_every_page(database: Path) -> bool:
    """Whether the database file itself holds every committed page, none of them left in the write-ahead log only."""
    import sqlite3

    with sqlite3.connect(database) as connection:
        pages, size = (connection.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "page_size"))
    return database.stat().st_size == pages * size


def test_an_ingest_leaves_its_log_checkpointed_and_its_connections_as_they_were(tmp_path):
    """The writer's commits leave checkpoints to a thread of their own; by the time the ingest returns, the database
    file holds every row, and the store's connections checkpoint automatically again."""
    source = tmp_path / "feedback.jsonl"
    source.write_text("".join(json.dumps({**GOOD[0], "prompt": f"Question {n}?"}) + "\n" for n in range(500)))
    report = ingest_files([str(source)], ROLES, f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "quarantine",
                          batch_rows=100, workers=1)
    assert report.ingested == 500 and (tmp_path / "store.db-wal").exists()  # the store's engine is still open
    assert _database_holds_every_page(tmp_path / "store.db")
    engine = engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    connections = [engine.raw_connection() for _ in range(3)]  # the pool's, and more
    try:
        assert {c.driver_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] for c in connections} == {1000}
    finally:
        for connection in connections:
            connection.close()


def _staged_rows(directory: Path, first: int, count: int) -> Path:
    from roleforge.ingest.rows import to_stored_row
    from roleforge.storage import inserts

    empty = dict.fromkeys(["response_a", "response_b", "preference", "event_id", "rater", "confidence", "metadata",
                           "timestamp"])
    return inserts.stage_rows([to_stored_row({**empty, **GOOD[0], "prompt": f"Question {n}?"}, "feedback.jsonl", n)
                             for n in range(first, first + count)], directory)


def test_a_commit_never_waits_for_a_running_checkpoint_and_close_checkpoints_what_came_after(tmp_path):
    import threading

    from roleforge.storage import inserts, wal

    engine = engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    release, started = threading.Event(), []
    with wal.WalCheckpoints(engine) as checkpoints:
        passive = checkpoints.checkpoint

        def slow_checkpoint() -> tuple[int, int, int]:
            started.append(threading.current_thread().name)
            release.wait(30)
            return passive()

        checkpoints.checkpoint = slow_checkpoint
        assert inserts.insert_staged(engine, _staged_rows(tmp_path, 0, 50), checkpoints).inserted == 50
        second = threading.Thread(target=inserts.insert_staged, args=(engine, _staged_rows(tmp_path, 50, 50), checkpoints))
        second.start()
        second.join(10)
        assert not second.is_alive(), "a commit waited for the checkpoint that was running"
        release.set()
    assert len(started) == 2 and started[0].startswith("roleforge-checkpoint")  # the first, then one for the second
    assert _database_holds_every_page(tmp_path / "store.db")
    assert len(feedback_for_role(engine, "ceo")) == 100


def test_a_log_past_its_bound_is_checkpointed_by_the_commit_and_a_failed_checkpoint_is_raised(tmp_path):
    from roleforge.storage import inserts, wal

    engine = engine_for(f"sqlite:///{tmp_path / 'store.db'}")
    with wal.WalCheckpoints(engine, max_wal_bytes=0) as checkpoints:
        inserts.insert_staged(engine, _staged_rows(tmp_path, 0, 50), checkpoints)
        assert checkpoints.running is None and _database_holds_every_page(tmp_path / "store.db")

    def failing() -> tuple[int, int, int]:
        raise OSError("disk I/O error")

    checkpoints = wal.WalCheckpoints(engine)
    checkpoints.checkpoint = failing
    inserts.insert_staged(engine, _staged_rows(tmp_path, 50, 50), checkpoints)  # starts the checkpoint
    with pytest.raises(OSError, match="disk I/O error"):
        checkpoints.close()
