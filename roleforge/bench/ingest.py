"""`roleforge bench ingest`: roleforge's ingest against a plain pandas read_json + to_sql of the same file, each run
in a process of its own and into a new database (SQLite, or one made for the run on a PostgreSQL server)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from roleforge.bench.common import PeakRss
from roleforge.sample.generate import EXEC_ROLES, exec_rows, tool_agent_rows

# Contract violations mixed into the generated file (valid JSON, so the plain pandas baseline reads the same file).
BAD_ROWS = (
    lambda row: {**row, "agent_role": "cmo"},
    lambda row: {**row, "rating": 9} if "rating" in row else {**row, "preference": "c"},
    lambda row: {**row, "prompt": "   "},
    lambda row: {**row, "confidence": "very"},
)


def write_feedback_file(path: Path, rows: int, bad_share: float, seed: int = 0) -> int:
    """`rows` raw feedback lines drawn from the sample generators (prompts made unique), every 1/bad_share-th one
    broken in one of four ways; returns how many are bad."""
    import orjson

    every = round(1 / bad_share) if bad_share > 0 else 0
    bad = written = batch = 0
    with path.open("wb") as out:
        while written < rows:
            rng = random.Random(seed + batch)
            generated = tool_agent_rows(rng) if batch % 4 == 3 else exec_rows(rng, *list(EXEC_ROLES.items())[batch % 3])
            lines = []
            for row in generated[: rows - written]:
                row = {**row, "prompt": f"{row['prompt']} (#{batch})"}
                if every and written % every == every - 1:
                    row, bad = BAD_ROWS[bad % len(BAD_ROWS)](row), bad + 1
                lines.append(orjson.dumps(row))
                written += 1
            out.write(b"\n".join(lines) + b"\n")
            batch += 1
        out.flush()
        os.fsync(out.fileno())  # on disk before anything is timed: no writeback of it competes with the runs
    return bad


def ingest_benchmark(rows: int, bad_share: float, work_dir: Path, repeats: int = 1,
                     server_url: str | None = None) -> dict[str, Any]:
    """`roleforge ingest` (contract, PII scrub, content hash, dedupe, quarantine, store) against a plain pandas
    read_json + to_sql of the same file: `repeats` runs of each, alternating which goes first (roleforge in the first
    run), each in a process of its own and into a new database: a SQLite file, or with `server_url` (a PostgreSQL
    server, by the URL of any database on it) a database created on that server for the run and dropped after it.
    The throughputs and the ratio are the runs' medians, every run's figures are in `runs`, and a peak is the largest
    of any run (of this machine's processes: a server's memory is not counted)."""
    import shutil
    import statistics

    source = work_dir / "feedback.jsonl"
    bad = write_feedback_file(source, rows, bad_share)
    runs: dict[str, list[dict[str, Any]]] = {"roleforge": [], "pandas": []}
    for index in range(repeats):
        run_dir = work_dir / f"run-{index}"
        run_dir.mkdir()
        for name in ("roleforge", "pandas") if index % 2 == 0 else ("pandas", "roleforge"):
            with scratch_database(server_url, run_dir / f"{name}.db") as store_url:
                runs[name].append(_timed_ingest(name, source, run_dir, rows, store_url))
        shutil.rmtree(run_dir)  # a 1M-row store and pandas' copy of it take about a gigabyte
    counts = runs["roleforge"][-1]
    median = {name: statistics.median(run["seconds"] for run in runs[name]) for name in runs}
    ratios = [theirs["seconds"] / ours["seconds"] for ours, theirs in zip(runs["roleforge"], runs["pandas"])]
    return {
        "rows": rows, "bad_rows": bad, "file_mb": round(source.stat().st_size / 2**20, 1), "repeats": repeats,
        "store": "sqlite" if server_url is None else make_url(server_url).get_backend_name(),
        "ingested": counts["ingested"], "duplicates": counts["duplicates"], "quarantined": counts["quarantined"],
        "all_rows_accounted": all(run["accounted"] == rows for run in runs["roleforge"]),
        "events_per_s": round(rows / median["roleforge"], 1), "seconds": round(median["roleforge"], 2),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs["roleforge"]),
        "pandas_events_per_s": round(rows / median["pandas"], 1), "pandas_seconds": round(median["pandas"], 2),
        "pandas_peak_rss_mb": max(run["peak_rss_mb"] for run in runs["pandas"]),
        "speedup_vs_pandas": round(statistics.median(ratios), 2), "min_speedup_vs_pandas": round(min(ratios), 2),
        "runs": {name: [{**run, "seconds": round(run["seconds"], 3)} for run in runs[name]] for name in runs},
    }


@contextmanager
def scratch_database(server_url: str | None, path: Path) -> Iterator[str]:
    """The URL of a new, empty database: a SQLite file at `path`, or with `server_url` a database created on that
    server (connected to by that URL) and dropped, with whatever it holds, when the block ends."""
    if server_url is None:
        yield f"sqlite:///{path}"
        return
    import uuid

    import sqlalchemy as sa

    name = f"roleforge_scratch_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        engine.dispose()


def make_url(url: str) -> Any:
    import sqlalchemy as sa

    return sa.engine.make_url(url)


def _timed_ingest(name: str, source: Path, run_dir: Path, rows: int, store_url: str) -> dict[str, Any]:
    """One timed ingest of `source` (`rows` lines) into the new database `store_url`, in a process of its own
    (started before the clock, its imports done): roleforge's, or a plain pandas read_json + to_sql. A fresh process
    each time, so that no run's peak memory holds what an earlier one left behind (pandas keeps gigabytes that a
    trim does not return). Roleforge's run also counts where its rows went."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_timed_ingest_child, args=(name, source, run_dir, rows, store_url, send),
                            name=f"bench-ingest-{name}")
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:  # killed, or out of memory: nothing was sent
        child.join()
        result = {"error": f"it ended without a result (exit code {child.exitcode})"}
    finally:
        receive.close()
        child.join()
    if "error" in result:
        raise RuntimeError(f"the {name} run of the ingest benchmark failed: {result['error']}")
    return result


def _timed_ingest_child(name: str, source: Path, run_dir: Path, rows: int, store_url: str, send: Any) -> None:
    """_timed_ingest's process: the run, its figures sent back through `send` (or the error's last line)."""
    import traceback

    try:
        send.send(_timed_ingest_here(name, source, run_dir, rows, store_url))
    except BaseException as error:  # noqa: BLE001 - sent to the parent, which raises it as one line
        traceback.print_exc()
        send.send({"error": f"{type(error).__name__}: {error}"})
    finally:
        send.close()


def _timed_ingest_here(name: str, source: Path, run_dir: Path, rows: int, store_url: str) -> dict[str, Any]:
    import sqlite3

    import pandas as pd
    import sqlalchemy as sa

    from roleforge.config.settings import DEFAULT_ROLES
    from roleforge.storage.urls import sqlite_file
    from roleforge.tasks.ingest import ingest_files

    database = sqlite_file(store_url)
    with PeakRss() as memory:
        started = time.perf_counter()
        if name == "roleforge":
            report = ingest_files([str(source)], set(DEFAULT_ROLES), store_url, run_dir / "quarantine")
        else:
            frame = pd.read_json(source, lines=True)
            with sqlite3.connect(database) if database else sa.create_engine(store_url).begin() as connection:
                frame.to_sql("feedback", connection, index=False, chunksize=50_000)
        seconds = time.perf_counter() - started
    run = {"seconds": seconds, "events_per_s": round(rows / seconds, 1), "peak_rss_mb": round(memory.peak_mb, 1)}
    if name == "roleforge":
        run.update(ingested=report.ingested, duplicates=report.duplicates, quarantined=report.quarantined,
                   accounted=report.ingested + report.duplicates + report.quarantined + report.blank)
    return run
