"""PostgreSQL, on a real (throwaway) server: the feedback store takes the same file into the same rows as SQLite, by
COPY, deduplicated, with collisions and bad rows quarantined; the pipeline runs with its store and its MLflow
registry there."""

import json
import re
from pathlib import Path

import pytest

from roleforge.storage.schema import FEEDBACK_COLUMNS, engine_for, feedback_counts, feedback_for_role
from roleforge.tasks.ingest import ingest_files

pytestmark = pytest.mark.slow  # needs a real server

ROLES = {"ceo", "cfo", "coo", "tool-agent"}


def feedback_file(path: Path) -> Path:
    """Rows of every shape the store keeps, and lines it must refuse, repeated so that the file makes many chunks."""
    lines = []
    for n in range(120):
        lines += [
            json.dumps({"agent_role": "ceo", "prompt": f"Expand to Lisbon, case {n}?", "response": "Decision: yes.",
                        "rating": 1 + n % 5, "event_id": "" if n % 7 == 0 else f"e{n}", "rater": "u1",
                        "confidence": n / 119, "timestamp": "2026-11-01T10:00:00+02:00"}),
            json.dumps({"agent_role": "cfo", "prompt": f"Budget {n}, \"quoted\", with, commas\nand a line end",
                        "response_a": "Cut costs; mail cfo@example.com", "response_b": "Grow — café, 東京, 🙂",
                        "preference": "b", "metadata": {"k": [n, None, "\u0000", 1.5]}, "confidence": "high"},
                       ensure_ascii=n % 2 == 0),
            json.dumps({"agent_role": "tool-agent", "prompt": f"Weather {n}", "response": "a backslash \\u0000, no NUL",
                        "rating": 3}),
            json.dumps({"agent_role": "coo", "prompt": f"Ship {n}", "response": "Call +49 30 1234 5678 today\r\n",
                        "rating": 2, "metadata": None}),
            json.dumps({"agent_role": "coo", "prompt": f"Bad {n}", "response": "a NUL \u0000 inside", "rating": 2}),
            '{"agent_role": "ceo", "prompt": "cut off',
            json.dumps({"agent_role": "cmo", "prompt": "p", "response": "r", "rating": 3}),
            "",
        ]
    lines += lines[:40]  # resent events: duplicates
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored(url: str) -> dict[str, list[dict]]:
    """Every stored row by role, in id order, without the store's own id and time of ingest."""
    engine = engine_for(url)
    return {role: [{name: row[name] for name in FEEDBACK_COLUMNS} for row in feedback_for_role(engine, role)]
            for role in sorted(ROLES)}


@pytest.mark.parametrize("workers", [2, 0], ids=["parse-workers", "in-process"])
def test_a_postgresql_store_holds_exactly_what_a_sqlite_store_holds(tmp_path, monkeypatch, postgres_url, workers):
    from roleforge.storage import inserts

    copies = []  # what each PostgreSQL transaction was given: the text of a COPY, for every chunk
    insert_copied = inserts.insert_copied
    monkeypatch.setattr(inserts, "insert_copied", lambda engine, payloads: copies.append(
        [type(payload) for payload in payloads]) or insert_copied(engine, payloads))
    source = feedback_file(tmp_path / "feedback.jsonl")
    reports = {}
    for name, url in (("sqlite", f"sqlite:///{tmp_path / 'store.db'}"), ("postgresql", postgres_url)):
        reports[name] = ingest_files([str(source)], ROLES, url, tmp_path / f"quarantine-{name}", batch_rows=200,
                                     workers=workers).model_dump(exclude={"quarantine_path"})
    assert reports["postgresql"] == reports["sqlite"]
    assert len(copies) > 1 and all(kinds == [bytes] * len(kinds) for kinds in copies)
    assert reports["postgresql"]["ingested"] == 480 and reports["postgresql"]["duplicates"] == 20
    assert reports["postgresql"]["quarantined"] == 375 and reports["postgresql"]["blank"] == 125
    rows = stored(postgres_url)
    assert rows == stored(f"sqlite:///{tmp_path / 'store.db'}")
    ceo, cfo = rows["ceo"], rows["cfo"]
    assert [row["source_line"] for row in ceo] == sorted(row["source_line"] for row in ceo)  # ids in file order
    assert ceo[0]["event_id"] == "" and ceo[1]["event_id"] == "e1" and ceo[0]["response_a"] is None
    assert cfo[0]["metadata"] == {"k": [0, None, "\u0000", 1.5]} and cfo[0]["confidence"] == 1.0
    assert cfo[0]["response_a"] == "Cut costs; mail [EMAIL]" and "\n" in cfo[0]["prompt"]
    assert rows["tool-agent"][0]["response"] == "a backslash \\u0000, no NUL"
    nul = [json.loads(line) for line in (tmp_path / "quarantine-postgresql").glob("*.jsonl").__next__().read_text()
           .splitlines() if "NUL" in line]
    assert len(nul) == 125 and all(entry["reason"] == "response: must not contain a NUL character (\\u0000)"
                                   for entry in nul)
    assert feedback_counts(engine_for(postgres_url)) == {"ceo": 120, "cfo": 120, "coo": 120, "tool-agent": 120}

    again = ingest_files([str(source)], ROLES, postgres_url, tmp_path / "quarantine-again", batch_rows=200,
                         workers=workers)
    assert (again.ingested, again.duplicates) == (0, 500)
    assert stored(postgres_url) == rows


@pytest.mark.parametrize("copy", ["csv", "row_by_row", "other_driver"])
def test_postgresql_rows_whose_store_keys_collide_are_quarantined_not_lost(tmp_path, monkeypatch, postgres_url, copy):
    import sqlalchemy as sa

    from roleforge.ingest import rows as feedback_rows
    from roleforge.storage import inserts

    # Four distinct keys for 24 distinct rows: most rows collide with a stored row or one earlier in their batch.
    monkeypatch.setattr(feedback_rows, "content_keys", lambda digests: [int(digest[0], 16) % 4 for digest in digests])
    if copy == "row_by_row":  # rows that Arrow cannot hold are copied one by one
        monkeypatch.setattr(inserts, "copy_csv", lambda *_: None)
    if copy == "other_driver":  # a PostgreSQL driver other than psycopg 3: the generic path, no COPY
        monkeypatch.setattr(type(sa.create_engine(postgres_url).dialect), "driver", "psycopg2")
        monkeypatch.setattr(inserts, "insert_copied", None)
    source = tmp_path / "feedback.jsonl"
    rows = [{"agent_role": "ceo", "prompt": f"Question {n}?", "response": "Decision: yes.", "rating": 4,
             "metadata": {"n": n}} for n in range(24)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = ingest_files([str(source)], ROLES, postgres_url, tmp_path / "quarantine", batch_rows=10)
    assert report.ingested == 4 and report.duplicates == 0 and report.quarantined == 20
    entries = [json.loads(line) for line in Path(report.quarantine_path).read_text().splitlines()]
    assert all("shares its 64-bit store key" in entry["reason"] for entry in entries)
    held = feedback_for_role(engine_for(postgres_url), "ceo")
    quarantined = {json.loads(entry["raw"])["prompt"] for entry in entries}
    assert {row["prompt"] for row in held} | quarantined == {row["prompt"] for row in rows}
    assert not {row["prompt"] for row in held} & quarantined
    assert all(json.loads(entry["raw"])["metadata"] == {"n": entry["line"] - 1} for entry in entries)
    holders = {row["content_key"]: row["id"] for row in held}
    for entry in entries:  # "... shares its 64-bit store key K with stored row H, whose content differs ..."
        key, holder = re.search(r"store key (-?\d+) with stored row (\d+)", entry["reason"]).groups()
        assert holders[int(key)] == int(holder)
    again = ingest_files([str(source)], ROLES, postgres_url, tmp_path / "quarantine")
    assert (again.ingested, again.duplicates, again.quarantined) == (0, 4, 20)


def test_a_failed_copy_stores_nothing_of_its_transaction(postgres_url):
    from roleforge.ingest.rows import to_stored_row
    from roleforge.storage import inserts

    empty = dict.fromkeys(["response_a", "response_b", "preference", "event_id", "rater", "confidence", "metadata",
                           "timestamp"])
    good = to_stored_row({**empty, "agent_role": "ceo", "prompt": "p", "response": "r", "rating": 4}, "f.jsonl", 1)
    engine = engine_for(postgres_url)
    text = inserts.copy_csv({name: [good[name]] for name in FEEDBACK_COLUMNS}, inserts.STAGED_LAYOUT)
    with pytest.raises(Exception, match="invalid input syntax"):
        inserts.insert_copied(engine, [text, b"not,a,row\n"])
    assert feedback_counts(engine) == {}
    assert inserts.insert_copied(engine, [text, text]) == inserts.Stored(1, [])


def test_the_ingest_benchmark_runs_against_a_postgresql_server_and_leaves_nothing_there(tmp_path, postgres_server):
    import sqlalchemy as sa

    from roleforge.bench.ingest import ingest_benchmark

    report = ingest_benchmark(2000, 0.02, tmp_path, repeats=2, server_url=postgres_server)
    assert report["store"] == "postgresql" and report["all_rows_accounted"]
    assert report["bad_rows"] == report["quarantined"] > 0 and report["ingested"] + report["duplicates"] == 2000 - report["bad_rows"]
    assert len(report["runs"]["roleforge"]) == len(report["runs"]["pandas"]) == 2
    with sa.create_engine(postgres_server).connect() as connection:
        left = connection.exec_driver_sql("SELECT datname FROM pg_database WHERE starts_with(datname, 'roleforge_scratch_')")
        assert left.all() == []


def test_a_postgresql_store_written_before_content_keys_is_migrated_once(tmp_path, postgres_url):
    import sqlalchemy as sa

    from roleforge.ingest.hashing import content_hash
    from roleforge.storage.schema import content_key

    old = {"agent_role": "ceo", "kind": "rating", "prompt": "Expand?", "response": "Decision: yes.", "rating": 5}
    with sa.create_engine(postgres_url).begin() as connection:  # the schema as it was, unique on content_hash
        connection.exec_driver_sql("""
            CREATE TABLE feedback (id SERIAL NOT NULL, content_hash VARCHAR(64) NOT NULL, agent_role VARCHAR(128) NOT NULL,
              kind VARCHAR(8) NOT NULL, prompt TEXT NOT NULL, response TEXT, rating INTEGER, response_a TEXT,
              response_b TEXT, preference VARCHAR(1), event_id VARCHAR(256), rater VARCHAR(256), confidence FLOAT,
              metadata JSON, timestamp VARCHAR(64), source TEXT NOT NULL, source_line INTEGER NOT NULL,
              ingested_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, PRIMARY KEY (id), UNIQUE (content_hash));
            CREATE INDEX ix_feedback_agent_role ON feedback (agent_role);""")
        connection.exec_driver_sql(
            "INSERT INTO feedback (content_hash, agent_role, kind, prompt, response, rating, source, source_line) "
            "VALUES (%s, 'ceo', 'rating', 'Expand?', 'Decision: yes.', 5, 'old.jsonl', 1)", (content_hash(old),))
    source = tmp_path / "feedback.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in [
        {"agent_role": "ceo", "prompt": "Expand?", "response": "Decision: yes.", "rating": 5},
        {"agent_role": "ceo", "prompt": "Hire?", "response": "Decision: no.", "rating": 2}]))
    report = ingest_files([str(source)], ROLES, postgres_url, tmp_path / "quarantine")
    assert (report.ingested, report.duplicates) == (1, 1)  # the first row was stored before the migration
    rows = feedback_for_role(engine_for(postgres_url), "ceo")
    # (PostgreSQL draws an id for a row that then conflicts too: ids keep the file's order, not every number.)
    assert [(row["content_key"], row["source"]) for row in rows] == [
        (content_key(content_hash(old)), "old.jsonl"), (rows[1]["content_key"], str(source))]
    assert rows[0]["id"] == 1 < rows[1]["id"]
    with sa.create_engine(postgres_url).connect() as connection:
        unique = connection.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE tablename = 'feedback' AND "
                                            "indexdef LIKE %s", ("%UNIQUE%content_key%",)).all()
    assert len(unique) == 1


def test_the_cli_labels_a_postgresql_store_as_it_labels_a_sqlite_one(home, postgres_url):
    """ingest, label and status through the command line, with ROLEFORGE_STORE_URL naming the server: the same
    pairs (labels, splits, contracts) as from the default SQLite store."""
    from tests.conftest import SAMPLE
    from tests.test_cli import last_json, roleforge

    results = {}
    for name, env in (("sqlite", {}), ("postgresql", {"ROLEFORGE_STORE_URL": postgres_url})):
        ingested = roleforge("ingest", str(SAMPLE), "--json", env=env)
        assert ingested.returncode == 0, ingested.stderr
        labeled = roleforge("label", "--json", env=env)
        assert labeled.returncode == 0, labeled.stderr
        status = last_json(roleforge("status", "--json", env=env))
        results[name] = (last_json(ingested), last_json(labeled), {role: row["feedback"] for role, row in status.items()})
    (sqlite_ingest, sqlite_labels, sqlite_counts), (ingest, labels, counts) = results["sqlite"], results["postgresql"]
    assert {**ingest, "quarantine_path": None} == {**sqlite_ingest, "quarantine_path": None}
    assert ingest["ingested"] == 1991 and labels == sqlite_labels and counts == sqlite_counts
    assert labels["ceo"]["pairs"] > 0 and labels["ceo"]["pair_contract"] == "passed" and counts["ceo"] == 330


def test_a_role_trains_and_is_promoted_with_its_store_and_registry_on_postgresql(home, prefect_harness, tmp_path,
                                                                               monkeypatch, postgres_url,
                                                                               postgres_server):
    """The self-learning flow with the feedback store and MLflow's tracking store and model registry both on the
    server (MLflow through SQLAlchemy, its own tables in a database of their own): the champion is registered there,
    and `status` finds it there."""
    from roleforge.bench.ingest import scratch_database
    from roleforge.config.settings import load_settings
    from roleforge.flows.params import SelfLearningRun
    from roleforge.flows.self_learning import self_learning
    from roleforge.ops.status import role_status
    from roleforge.registry.tracking import CHAMPION, alias_version, mlflow_client
    from tests.conftest import SAMPLE
    from tests.test_flow import GATES

    (tmp_path / "roleforge.toml").write_text((tmp_path / "roleforge.toml").read_text() + GATES)
    with scratch_database(postgres_server, tmp_path / "unused.db") as tracking:
        monkeypatch.setenv("ROLEFORGE_STORE_URL", postgres_url)
        monkeypatch.setenv("ROLEFORGE_MLFLOW_TRACKING_URI", tracking)
        settings = load_settings()
        assert (settings.resolved_store_url, settings.resolved_tracking_uri) == (postgres_url, tracking)
        ceo = self_learning(SelfLearningRun(feedback=[str(SAMPLE / "ceo.jsonl")], roles=["ceo"], profile="quick"))["ceo"]
        assert ceo.trained and ceo.promoted and ceo.pairs > 0
        assert feedback_counts(engine_for(postgres_url)) == {"ceo": 330}
        client = mlflow_client(tracking)
        assert alias_version(client, "roleforge-ceo", CHAMPION).version == int(ceo.version)
        status = role_status(settings)["ceo"]
        assert status["feedback"] == 330 and status["champion_version"] == ceo.version
        assert not (home / "mlflow.db").exists() and not (home / "store.db").exists()
