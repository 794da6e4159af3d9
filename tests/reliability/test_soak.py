"""Thirty nights on a compressed clock: new feedback every night (bad lines and duplicates among it), one night a
flooding rater, one a full disk on ingest, one a kill mid-training. After every night: every good row stored once,
every bad line quarantined, the audit chain intact, every champion loadable, the home under its retention bound with
nothing pruned that lineage needs, and the reference log-prob store bounded.

The clock: after each night every time the home records (file times, archive folders, the reference store's days,
MLflow's run and version times) moves one day back, as if a day had passed; the nightly flow and its gc run as they
are, on the tiny model. Most nights add too few pairs to train; ceo trains every few nights, cfo never."""

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
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from roleforge.sample.generate import ceo_good, cfo_good, exec_rows
from tests.reliability.test_ingest_faults import quarantined, stored
from tests.support.gates import open_gate

NIGHTS, DISK_FULL, FLOOD, KILLED = 30, 5, 12, 20
DAY = 86400
ARCHIVE_DAYS, SNAPSHOT_KEEP, REFERENCE_DAYS, MAX_TRAIN_PAIRS, MAX_EVAL_PAIRS = 5, 2, 4, 8, 8
SOAK = f"""
[retention]
archive_days = {ARCHIVE_DAYS}
snapshot_keep = {SNAPSHOT_KEEP}
reference_unused_days = {REFERENCE_DAYS}
max_home_gb = 0.02
[roles.ceo]
min_pairs = {MAX_TRAIN_PAIRS}
min_new_pairs = 20
[roles.ceo.training.dpo]
num_train_epochs = 1
per_device_train_batch_size = 1
learning_rate = 0.01
save_steps = 2
[roles.ceo.training.data]
max_train_pairs = {MAX_TRAIN_PAIRS}
max_eval_pairs = {MAX_EVAL_PAIRS}
replay_pairs = 0
[roles.ceo.evaluation]
generation_prompts = 0
contract_prompts = 2
capability_checks = false
drift_prompts = 0
max_new_tokens = 8
[roles.cfo]
min_new_pairs = 100000
""" + open_gate("ceo")
BAD_LINES = [b'{"agent_role": "ceo", "prompt": "cut off', b'{"agent_role": "ceo", "prompt": "Rate", "response": "x", "rating": 9}',
             b'{"agent_role": "nobody", "prompt": "p", "response": "r", "rating": 3}', b'["not", "an", "object"]']


class Feedback:
    """Each night's files: new ceo and cfo rows from generated pools, two rows of an earlier night again, two bad lines."""

    def __init__(self) -> None:
        self.ceo = exec_rows(random.Random(1), "ceo", ceo_good)[:150]  # A/B choices (147 used): pairs as they come
        self.cfo = exec_rows(random.Random(2), "cfo", cfo_good)
        self.sent: list[dict] = []

    def night(self, number: int) -> list[bytes]:
        ceo = 36 if number == 1 else 30 if number == KILLED else 0 if number == KILLED + 1 else 3
        cfo = 30 if number == 1 else 3
        rows = [self.ceo.pop(0) for _ in range(ceo)] + [self.cfo.pop(0) for _ in range(cfo)]
        if number == FLOOD:  # one rater suddenly gives most of cfo's feedback
            rows += [{**self.cfo.pop(), "rater": "flood-bot"} for _ in range(90)]
        again = random.Random(number).sample(self.sent, 2) if self.sent else []
        self.sent += rows
        bad = [BAD_LINES[number % 4], BAD_LINES[(number + 1) % 4]]
        return [json.dumps(row).encode() for row in rows + again] + bad


def drop_in_inbox(home: Path, number: int, lines: list[bytes]) -> Path:
    inbox = home / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    staging = inbox / f".night-{number:02d}.partial"
    staging.write_bytes(b"\n".join(lines) + b"\n")
    return staging.rename(inbox / f"night-{number:02d}.jsonl")


def one_day_passes(home: Path) -> None:
    """Every time the home records moves one day back."""
    for path in home.rglob("*"):
        if not path.is_symlink() and "prefect" not in path.parts:
            stat = path.stat()
            os.utime(path, (stat.st_atime - DAY, stat.st_mtime - DAY))
    for folder in sorted((home / "archive").glob("????-??-??")):
        earlier = time.strftime("%Y-%m-%d", time.localtime(time.mktime(time.strptime(folder.name, "%Y-%m-%d")) - DAY + 3600))
        folder.rename(folder.with_name(earlier))
    if (home / "checkpoints" / "reference_logps.db").exists():
        with sqlite3.connect(home / "checkpoints" / "reference_logps.db") as connection:
            connection.execute("UPDATE reference SET used = used - 1")
    with sqlite3.connect(home / "mlflow.db") as connection:
        connection.execute(f"UPDATE runs SET start_time = start_time - {DAY * 1000}, end_time = end_time - {DAY * 1000}")
        connection.execute(f"UPDATE model_versions SET creation_time = creation_time - {DAY * 1000}")


def expected_rows(home: Path, night_files: dict[str, bytes]) -> tuple[set[str], set[tuple[str, int]]]:
    from roleforge.config.settings import load_settings
    from roleforge.ingest.rows import parse_records

    spellings = load_settings().role_spellings()
    good, bad = set(), set()
    for name, content in night_files.items():
        batch = parse_records(name, enumerate(content.splitlines(keepends=True), start=1), spellings)
        good |= {row["content_hash"] for row in batch.rows}
        bad |= {(name, entry.line) for entry in batch.quarantined}
    return good, bad


def kill_mid_training(home: Path, tmp_path: Path) -> int:
    """`roleforge run` on the night's inbox, killed with its whole session once the ceo training has a complete
    checkpoint; returns that checkpoint's step."""
    from prefect.settings import PREFECT_API_URL

    def checkpoints() -> list[Path]:
        return [p for p in (home / "checkpoints").glob("ceo/*/checkpoint-*") if (p / "trainer_state.json").exists()]

    before = set(checkpoints())
    log = (tmp_path / "killed.log").open("w")
    command = [sys.executable, "-m", "roleforge.cli", "run", "--roles", "ceo,cfo", "--profile", "quick"]
    run = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True,
                           env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()})
    deadline = time.monotonic() + 300
    while not set(checkpoints()) - before and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert set(checkpoints()) - before, (tmp_path / "killed.log").read_text()[-3000:]
    assert json.loads((home / "status" / "ceo.json").read_text())["state"] == "training"
    return max(int(p.name.split("-")[1]) for p in set(checkpoints()) - before)


def ingest_on_a_full_disk(home: Path) -> None:
    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "ingest"], capture_output=True, text=True,
                            timeout=300, preexec_fn=full_disk)
    assert result.returncode == 2 and result.stderr.startswith("roleforge: error: cannot"), result.stderr[-2000:]
    assert list((home / "inbox").glob("*.jsonl")), "a file whose rows were not stored left the inbox"


def check_the_home(home: Path, good: set[str], bad: set[tuple[str, int]], trained_nights: list[int], night: int,
                   base: object, collected: bool = True) -> None:
    """The night's checks; those of gc's bounds only where the night ended with its gc (`collected`)."""
    from peft import PeftModel

    from roleforge.config.settings import load_settings
    from roleforge.ops import audit
    from roleforge.ops.disk import disk_use
    from roleforge.registry.tracking import CHAMPION, PREVIOUS, alias_version, local_adapter_path, mlflow_client

    hashes, count = stored(home)
    assert hashes == good and count == len(hashes), f"night {night}: a good row is missing or stored twice"
    assert bad <= quarantined(home), f"night {night}: a bad line is not in quarantine"
    assert audit.verify(home) is None, f"night {night}: the audit chain is broken"

    settings = load_settings()
    client = mlflow_client(settings.resolved_tracking_uri)
    versions = client.search_model_versions("name='roleforge-ceo'")
    for alias in (CHAMPION, PREVIOUS):
        if (version := alias_version(client, "roleforge-ceo", alias)) is not None:
            PeftModel.from_pretrained(base, str(local_adapter_path(client, version, home / "registry-cache"))).unload()
    assert all((home / "datasets" / "ceo" / v.tags["roleforge.dataset_hash"]).is_dir() for v in versions)

    assert disk_use(home)["total"] <= settings.retention.max_home_gb * 2**30
    if not collected:
        return
    registered_runs = {v.run_id for v in versions}
    assert not [m for m in (home / "checkpoints").glob("*/*/mlflow_run_id") if m.read_text() in registered_runs], \
        f"night {night}: a finished training kept its checkpoints"
    assert len(list((home / "datasets" / "cfo").iterdir())) <= SNAPSHOT_KEEP
    oldest = time.strftime("%Y-%m-%d", time.localtime(time.time() - (ARCHIVE_DAYS + 2) * DAY))
    assert all(folder.name >= oldest for folder in (home / "archive").iterdir())
    with sqlite3.connect(home / "checkpoints" / "reference_logps.db") as connection:
        (kept,) = connection.execute("SELECT count(*) FROM reference").fetchone()
        (stale,) = connection.execute("SELECT count(*) FROM reference WHERE used < ?", (int(time.time() // DAY) - REFERENCE_DAYS,)).fetchone()
    recent = [n for n in trained_nights if night - n <= REFERENCE_DAYS]
    # Per training: its pairs' reference values, and the held-out values of the three models its evaluation scores.
    per_night = MAX_TRAIN_PAIRS + 3 * MAX_EVAL_PAIRS
    assert stale == 0 and kept <= per_night * max(len(recent), 1), f"night {night}: {kept} reference log-probs kept"
    collected = [e for e in audit.read(home) if e["action"] == "gc"]
    assert not collected or collected[-1]["errors"] == []


def a_night(night: int, home: Path, tmp_path: Path, trained: list[int], killed_at: int | None) -> int | None:
    """One night: the nightly flow (or its kill mid-training); returns the killed checkpoint's step on that night."""
    from roleforge.flows.params import SelfLearningRun
    from roleforge.flows.self_learning import self_learning

    if night == DISK_FULL:
        ingest_on_a_full_disk(home)
    if night == KILLED:
        return kill_mid_training(home, tmp_path)
    outcomes = self_learning(SelfLearningRun(roles=["ceo", "cfo"], profile="quick"))
    assert not outcomes["cfo"].trained and ("flood-bot" in outcomes["cfo"].reason or night != FLOOD)
    if outcomes["ceo"].trained:
        trained.append(night)
        assert outcomes["ceo"].promoted, outcomes["ceo"].reason
    if night == KILLED + 1:
        assert outcomes["ceo"].trained and outcomes["ceo"].resumed_from_step >= killed_at
    return killed_at


@pytest.mark.slow
def test_thirty_nights(home, tmp_path, tiny_model_dir, prefect_harness):
    from roleforge.cli.parser import main
    from roleforge.models.base import load_model

    (tmp_path / "roleforge.toml").write_text(SOAK)
    base = load_model(tiny_model_dir)
    feedback, files, trained, killed_at, started = Feedback(), {}, [], None, time.monotonic()
    # A flow run's heartbeat thread (a server's crash detection) holds up the run's end by up to a second: four a night.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        for night in range(1, NIGHTS + 1):
            lines = feedback.night(night)
            files[drop_in_inbox(home, night, lines).name] = b"\n".join(lines) + b"\n"
            killed_at = a_night(night, home, tmp_path, trained, killed_at)
            check_the_home(home, *expected_rows(home, files), trained, night, base, collected=night != KILLED)
            one_day_passes(home)
    assert 3 <= len(trained) <= 10, trained
    assert main(["rollback", "--role", "ceo"]) == 0  # a rollback after thirty nights of gc
    check_the_home(home, *expected_rows(home, files), trained, NIGHTS, base)
    from roleforge.ops.disk import disk_use

    print(f"soak: {NIGHTS} nights in {time.monotonic() - started:.0f} s, ceo trained on nights {trained}, home {disk_use(home)}")
