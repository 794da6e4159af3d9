"""Ingest under faults: kill -9 at random points, four ingesters at once, a full disk, an unwritable home.

Each test checks the store against what the input files hold: every good line stored exactly once, every bad line
in quarantine, every inbox file archived only once all its rows are stored."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roleforge.bench.ingest import write_feedback_file
from roleforge.config.settings import DEFAULT_ROLES
from roleforge.ingest.rows import parse_records


def feedback_files(folder: Path, work: Path, rows: int = 48_000) -> list[Path]:
    """Four files cut from one generated pool with overlaps (rows in two files are the same rows), 2% of lines bad."""
    pool = work / "pool.jsonl"
    write_feedback_file(pool, rows, bad_share=0.02, seed=11)
    lines = pool.read_bytes().splitlines(keepends=True)
    quarter = rows // 4
    cuts = [(0, quarter + 2_000), (quarter - 2_000, 2 * quarter), (2 * quarter, 3 * quarter + 3_000), (3 * quarter, rows)]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index, (start, end) in enumerate(cuts):
        files.append(folder / f"feedback-{index}.jsonl")
        files[-1].write_bytes(b"".join(lines[start:end]))
    return files


def expected(files: list[Path]) -> tuple[dict[str, set[str]], set[tuple[str, int]]]:
    """Per file name, the content hashes of its good lines; and the (file name, line) of every bad line."""
    good: dict[str, set[str]] = {}
    bad: set[tuple[str, int]] = set()
    for path in files:
        records = enumerate(path.read_bytes().splitlines(keepends=True), start=1)
        batch = parse_records(str(path), records, set(DEFAULT_ROLES))
        good[path.name] = {row["content_hash"] for row in batch.rows}
        bad |= {(path.name, entry.line) for entry in batch.quarantined}
    return good, bad


def stored(home: Path) -> tuple[set[str], int]:
    """The content hashes in the store, and its row count (the two differ if a row was stored twice)."""
    database = home / "store.db"
    if not database.exists():
        return set(), 0
    with sqlite3.connect(database) as connection:
        hashes = [h for (h,) in connection.execute("SELECT content_hash FROM feedback")]
    return set(hashes), len(hashes)


def quarantined(home: Path) -> set[tuple[str, int]]:
    entries = set()
    for path in (home / "quarantine").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            entries.add((Path(record["source"]).name, record["line"]))
    return entries


def archived(home: Path) -> dict[str, Path]:
    return {path.name: path for path in (home / "archive").rglob("*.jsonl")}


def ingest_command(*paths: Path) -> list[str]:
    return [sys.executable, "-m", "roleforge.cli", "ingest", *map(str, paths), "--json"]


@pytest.fixture()
def ingest_env(home: Path) -> dict[str, str]:
    return {**os.environ, "ROLEFORGE_HOME": str(home)}


def stored_count(home: Path) -> int:
    try:
        with sqlite3.connect(f"{(home / 'store.db').as_uri()}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT count(*) FROM feedback").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_sigkill_at_random_points_loses_and_doubles_nothing(home, tmp_path, ingest_env, workers):
    # Several commits per file (chunks of 2,000 of its 12,000-15,000 rows), so kills land between commits inside a
    # file too; parsed in the ingest process, or by two parse workers writing staging files.
    ingest_env = {**ingest_env, "ROLEFORGE_INGEST_BATCH_ROWS": "2000", "ROLEFORGE_INGEST_WORKERS": workers}
    files = feedback_files(home / "inbox", tmp_path)
    originals = {path.name: path.read_bytes() for path in files}
    good, bad = expected(files)
    rng = random.Random(2026)
    kills = 0
    while kills < 12 and any((home / "inbox").glob("*.jsonl")):
        before = stored_count(home)
        process = subprocess.Popen(ingest_command(), env=ingest_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Kill at a random point of the work itself, not of the interpreter's start: once this run has stored
        # something, after a further random wait (a commit takes about a tenth of a second here).
        deadline = time.monotonic() + 120
        while process.poll() is None and stored_count(home) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        assert process.returncode in (0, -signal.SIGKILL), process.stderr.read().decode()[-2000:]
        hashes, count = stored(home)
        assert count == len(hashes), "a row was stored twice"
        for name in archived(home):
            assert good[name] <= hashes, \
                f"{name} was archived before all its rows were stored"
    assert kills >= 3, "the ingest finished before it could be killed often enough to test anything"

    final = subprocess.run(ingest_command(), env=ingest_env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    hashes, count = stored(home)
    assert hashes == set().union(*good.values()) and count == len(hashes)
    assert bad <= quarantined(home), "a bad line is missing from quarantine"
    assert not list((home / "inbox").glob("*.jsonl"))
    assert {name: path.read_bytes() for name, path in archived(home).items()} == originals


@pytest.mark.slow
@pytest.mark.parametrize("source", ["paths", "inbox"])
def test_four_ingesters_at_once_store_each_row_once(home, tmp_path, ingest_env, source):
    folder = home / "inbox" if source == "inbox" else tmp_path / "feedback"
    files = feedback_files(folder, tmp_path, rows=24_000)
    good, _ = expected(files)
    # Each process gets every file, in a different order, so that they overlap all the time.
    orders = [files, files[::-1], files[1:] + files[:1], files[2:] + files[:2]]
    commands = [ingest_command() if source == "inbox" else ingest_command(*order) for order in orders]
    processes = [subprocess.Popen(c, env=ingest_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for c in commands]
    results = [process.communicate(timeout=600) for process in processes]
    for process, (out, err) in zip(processes, results):
        assert process.returncode == 0, err[-2000:]
        assert "locked" not in err
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    hashes, count = stored(home)
    assert hashes == set().union(*good.values()) and count == len(hashes)
    assert sum(r["ingested"] for r in reports) == len(hashes), "two processes both counted a row as theirs"
    if source == "inbox":
        assert not list(folder.glob("*.jsonl"))
        assert sorted(archived(home)) == sorted(p.name for p in files)
        assert sum(r["archived"] for r in reports) == len(files)


def limit_file_size(megabytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (megabytes * 2**20, megabytes * 2**20))
    return apply


@pytest.mark.slow
def test_full_disk_is_one_line_naming_the_store_and_a_rerun_completes(home, tmp_path, ingest_env):
    files = feedback_files(home / "inbox", tmp_path, rows=24_000)
    good, _ = expected(files)
    full = subprocess.run(ingest_command(), env=ingest_env, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size(4))
    assert full.returncode == 2, full.stderr[-2000:]
    message = full.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("roleforge: error: cannot write"), full.stderr[-2000:]
    assert str(home) in message[0]
    hashes, _ = stored(home)
    unfinished = [p.name for p in files if not good[p.name] <= hashes]
    assert unfinished and all((home / "inbox" / name).exists() for name in unfinished), \
        "a file whose rows were not all stored left the inbox"

    again = subprocess.run(ingest_command(), env=ingest_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    hashes, count = stored(home)
    assert hashes == set().union(*good.values()) and count == len(hashes)


def test_home_under_a_file_is_one_line_naming_it(tmp_path, ingest_env):
    (tmp_path / "a-file").write_text("")
    home = tmp_path / "a-file" / "home"
    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "status"], env={**ingest_env, "ROLEFORGE_HOME": str(home)},
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr.strip()) == (2, f"roleforge: error: ROLEFORGE_HOME {home} is not writable: Not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_unwritable_home_is_one_line_naming_it(tmp_path, ingest_env):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        env = {**ingest_env, "ROLEFORGE_HOME": str(locked / "home")}
        result = subprocess.run([sys.executable, "-m", "roleforge.cli", "ingest"], env=env, capture_output=True, text=True,
                                timeout=120)
    finally:
        locked.chmod(0o700)
    assert (result.returncode, result.stderr.strip()) == (
        2, f"roleforge: error: ROLEFORGE_HOME {locked / 'home'} is not writable: Permission denied")
