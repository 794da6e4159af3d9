"""Retention: `roleforge gc` prunes by age and count, never what a registered version points at, and a rollback still
works after it."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from roleforge.cli.parser import main
from roleforge.config.settings import GateConfig, load_settings
from roleforge.evaluation.scoring import ModelScore
from roleforge.ops import audit
from roleforge.ops.retention import collect_garbage, nightly_gc
from roleforge.registry.tracking import CHAMPION, PREVIOUS, alias_version, experiment_id, local_adapter_path, mlflow_client
from roleforge.tasks.evaluate import Evaluation
from roleforge.tasks.promote import decide
from roleforge.training.candidate import Candidate
from roleforge.training.reference_store import KEPT_REFERENCES

DAY = 86400
RETENTION = """
[retention]
archive_days = 30
snapshot_keep = 2
stale_training_days = 14
mlflow_run_days = 30
reference_unused_days = 30
"""


def age(path: Path, days: float) -> None:
    """Everything at and under `path` last written `days` ago."""
    when = time.time() - days * DAY
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (when, when))


def lora_adapter(base_model: Path, directory: Path) -> Path:
    """A real (untrained) LoRA adapter of the tiny model, saved as training saves one."""
    from peft import LoraConfig, get_peft_model

    from roleforge.models.base import load_model

    model = get_peft_model(load_model(base_model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def training(home: Path, role: str, snapshot: str, run_id: str, steps: tuple[int, ...], complete: tuple[int, ...]) -> Path:
    """A training folder as roleforge/training/local.py leaves one: its run marker and checkpoints."""
    folder = home / "checkpoints" / role / f"{snapshot}-recipe000001"
    for step in steps:
        checkpoint = folder / f"checkpoint-{step}"
        checkpoint.mkdir(parents=True)
        if step in complete:
            (checkpoint / "adapter_model.safetensors").write_bytes(b"weights")
            (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / "mlflow_run_id").write_text(run_id)
    return folder


def snapshot(home: Path, role: str, digest: str, days_old: float) -> Path:
    folder = home / "datasets" / role / digest
    folder.mkdir(parents=True)
    for split in ("train", "held_out"):
        (folder / f"{split}.parquet").write_bytes(b"pairs" * 100)
    age(folder, days_old)
    return folder


def promoted(client, home: Path, tiny_model_dir: Path, digest: str, started_days_ago: float) -> Candidate:
    """A ceo candidate with a real adapter, trained (by its run's start) days ago, registered and made champion."""
    run = client.create_run(experiment_id(client, home / "mlartifacts"), start_time=int((time.time() - started_days_ago * DAY) * 1000))
    adapter = lora_adapter(tiny_model_dir, home / "adapters" / "ceo" / run.info.run_id)
    client.log_artifacts(run.info.run_id, str(adapter), artifact_path="adapter")
    candidate = Candidate(role="ceo", adapter_path=str(adapter), mlflow_experiment_id=run.info.experiment_id,
                          mlflow_run_id=run.info.run_id, snapshot_hash=digest, dataset_path=str(home / "datasets" / "ceo" / digest),
                          train_pairs=16, steps=4, resumed_from_step=None, train_seconds=1.0, train_metrics={})
    score = ModelScore(preference_accuracy=0.9, reward_accuracy=0.9, reward_margin=1.0)
    evaluation = Evaluation(role="ceo", held_out_pairs=10, opponent="base", opponent_version=None, candidate=score,
                            opponent_score=ModelScore(preference_accuracy=0.5, reward_accuracy=None, reward_margin=None))
    assert decide(client, "roleforge-ceo", candidate, evaluation, GateConfig(), {}).promoted
    return candidate


@pytest.fixture()
def grown_home(home: Path, tmp_path: Path, tiny_model_dir: Path) -> dict:
    """A home after many nights: two ceo versions (champion and previous) trained on old snapshots in old runs, their
    finished trainings and working copies; an unfinished cfo training, a stale coo one, old snapshots, old archived
    feedback, reference log-probs unused for long, old unregistered runs (one a saved tuned recipe came from) and a
    cached download."""
    (tmp_path / "roleforge.toml").write_text((tmp_path / "roleforge.toml").read_text() + RETENTION)
    settings = load_settings()
    client = mlflow_client(settings.resolved_tracking_uri)
    first = promoted(client, home, tiny_model_dir, "a" * 16, started_days_ago=90)
    second = promoted(client, home, tiny_model_dir, "b" * 16, started_days_ago=60)
    for candidate in (first, second):
        age(training(home, "ceo", candidate.snapshot_hash, candidate.mlflow_run_id, (2, 4), (2, 4)), 40)
        age(Path(candidate.adapter_path), 40)
    (home / "status").mkdir(parents=True)
    (home / "status" / "ceo.json").write_text(json.dumps({"state": "ready", "adapter_path": second.adapter_path}))
    for digest, days in [("a" * 16, 90), ("b" * 16, 60), ("c" * 16, 50), ("d" * 16, 40), ("e" * 16, 3), ("f" * 16, 2)]:
        snapshot(home, "ceo", digest, days)

    experiment = experiment_id(client, home / "mlartifacts")
    unfinished_run = client.create_run(experiment, start_time=int((time.time() - 45 * DAY) * 1000)).info.run_id
    training(home, "cfo", "9" * 16, unfinished_run, (2, 4, 6), (2, 4))  # step 6 is being written
    snapshot(home, "cfo", "9" * 16, 50)
    for digest, days in [("7" * 16, 1), ("8" * 16, 0.5)]:
        snapshot(home, "cfo", digest, days)
    age(training(home, "coo", "5" * 16, "gone", (2,), (2,)), 20)

    orphan = client.create_run(experiment, start_time=int((time.time() - 45 * DAY) * 1000)).info.run_id
    tuned = client.create_run(experiment, start_time=int((time.time() - 45 * DAY) * 1000)).info.run_id
    (home / "recipes").mkdir(parents=True)
    (home / "recipes" / "ceo.json").write_text(json.dumps({"overrides": {}, "trial": 3, "mlflow_run_id": tuned}))
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "model.bin").write_bytes(b"x" * 5000)
    client.log_artifacts(orphan, str(tmp_path / "orphan"))

    old_day, today = time.strftime("%Y-%m-%d", time.localtime(time.time() - 40 * DAY)), time.strftime("%Y-%m-%d")
    for day, name, days in [(old_day, "old.jsonl", 40), (today, "new.jsonl", 0)]:
        (home / "archive" / day).mkdir(parents=True, exist_ok=True)
        (home / "archive" / day / name).write_text('{"agent_role": "ceo"}\n')
        age(home / "archive" / day / name, days)

    store = home / "checkpoints" / KEPT_REFERENCES
    with sqlite3.connect(store) as connection:
        connection.execute("CREATE TABLE reference (key TEXT PRIMARY KEY, chosen REAL NOT NULL, rejected REAL NOT NULL, "
                           "used INTEGER NOT NULL) WITHOUT ROWID")
        now_day = int(time.time() // DAY)
        connection.executemany("INSERT INTO reference VALUES (?, 0.0, 0.0, ?)",
                               [(f"old{i}", now_day - 40) for i in range(300)] + [(f"new{i}", now_day - 2) for i in range(5)])
    for version in ("1", "2", "7"):
        (home / "registry-cache" / "roleforge-ceo" / version).mkdir(parents=True)
    return {"settings": settings, "client": client, "first": first, "second": second, "unfinished_run": unfinished_run,
            "orphan": orphan, "tuned": tuned}


def listing(home: Path) -> set[str]:
    return {str(path.relative_to(home)) for path in home.rglob("*") if "prefect" not in path.parts}


def test_a_dry_run_counts_what_gc_removes_and_removes_nothing(grown_home, home, capsys):
    before = listing(home)
    assert main(["gc", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert listing(home) == before and report["dry_run"] is True and report["freed_bytes"] > 0
    assert {"freed_bytes", "removed", "kept", "dry_run"} <= set(report)
    assert report["removed"] == collect_garbage(load_settings()).removed


def test_gc_prunes_by_age_and_count_and_keeps_what_registered_versions_point_at(grown_home, home, tiny_model_dir):
    first, second = grown_home["first"], grown_home["second"]
    report = collect_garbage(load_settings())
    assert report.errors == []
    assert report.removed == {"adapters": 1, "archive": 1, "checkpoints": 1, "mlflow_runs": 1, "reference_logps": 300,
                              "registry_cache": 1, "snapshots": 2, "trainings": 3}
    assert report.kept["reference_logps"] == 5 and report.kept["mlflow_runs"] == 4

    # Finished trainings go whole (their adapters are in the registry), so does the stale coo one; the unfinished cfo
    # training keeps its newest complete checkpoint and the one being written.
    assert sorted(p.relative_to(home / "checkpoints").as_posix() for p in (home / "checkpoints").glob("*/*/checkpoint-*")) == [
        f"cfo/{'9' * 16}-recipe000001/checkpoint-4", f"cfo/{'9' * 16}-recipe000001/checkpoint-6"]
    # Snapshots: the registered versions' (however old), the unfinished training's, and each role's two newest.
    assert sorted(p.name[0] for p in (home / "datasets" / "ceo").iterdir()) == ["a", "b", "e", "f"]
    assert sorted(p.name[0] for p in (home / "datasets" / "cfo").iterdir()) == ["7", "8", "9"]
    assert not Path(first.adapter_path).exists() and Path(second.adapter_path).exists()  # the one status names stays
    assert [p.name for p in (home / "archive").rglob("*.jsonl")] == ["new.jsonl"]
    assert sorted(p.name for p in (home / "registry-cache" / "roleforge-ceo").iterdir()) == ["1", "2"]

    client = grown_home["client"]
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        client.get_run(grown_home["orphan"])
    for kept in ("unfinished_run", "tuned"):  # a kept training's run, a saved tuned recipe's trial
        assert client.get_run(grown_home[kept]).info.lifecycle_stage == "active"

    # Lineage and rollback: champion and previous load, rollback works, and the snapshots they name are there.
    from peft import PeftModel

    from roleforge.models.base import load_model

    base = load_model(tiny_model_dir)
    for alias, candidate in ((CHAMPION, second), (PREVIOUS, first)):
        version = alias_version(client, "roleforge-ceo", alias)
        assert version.run_id == candidate.mlflow_run_id
        assert (home / "datasets" / "ceo" / version.tags["roleforge.dataset_hash"] / "train.parquet").exists()
        PeftModel.from_pretrained(base, str(local_adapter_path(client, version, home / "registry-cache"))).unload()
    again = collect_garbage(load_settings())
    assert again.removed == {} and again.freed_bytes == 0, "a second gc finds nothing more"
    assert main(["rollback", "--role", "ceo"]) == 0
    assert alias_version(client, "roleforge-ceo", CHAMPION).run_id == first.mlflow_run_id


def test_gc_is_audited_and_a_registry_it_cannot_read_protects_everything(grown_home, home, monkeypatch):
    monkeypatch.setattr("roleforge.ops.retention.read_lineage", lambda uri: (_ for _ in ()).throw(OSError("registry down")))
    trainings = sorted((home / "checkpoints").glob("*/*"))
    report = nightly_gc()
    assert report is not None and any("registry unreadable" in problem for problem in report.errors)
    assert sorted((home / "checkpoints").glob("*/*")) == trainings and len(list((home / "datasets" / "ceo").iterdir())) == 6
    assert report.removed["archive"] == 1, "what does not depend on the registry is still pruned"
    entry = audit.read(home)[-1]
    assert entry["action"] == "gc" and entry["removed"]["archive"] == 1 and entry["errors"] and audit.verify(home) is None

    monkeypatch.setattr("roleforge.ops.retention.audited_gc", lambda settings: 1 / 0)
    assert nightly_gc() is None, "a failing gc never fails the night"


def test_finished_prefect_runs_past_the_horizon_are_deleted(home, prefect_harness):
    from prefect import flow, get_client
    from prefect.exceptions import ObjectNotFound

    from roleforge.ops.retention import Sweep
    from roleforge.ops.run_retention import sweep_prefect_runs

    @flow
    def night() -> int:
        return 1

    state = night(return_state=True)
    run_id = state.state_details.flow_run_id
    sweep = Sweep(dry_run=True, protected=[])
    sweep_prefect_runs(1, sweep, time.time())
    assert sweep.removed["prefect_runs"] == 0, "a run of today is within the horizon"
    sweep_prefect_runs(1, sweep, time.time() + 2 * DAY)
    assert sweep.removed["prefect_runs"] >= 1
    sweep = Sweep(dry_run=False, protected=[])
    sweep_prefect_runs(1, sweep, time.time() + 2 * DAY)
    with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
        client.read_flow_run(run_id)
