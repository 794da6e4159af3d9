"""Status: per role, what is stored, what was labeled last, and which adapter is champion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roleforge.tasks.settings import Settings


def latest_snapshot_pairs(datasets_dir: Path, role: str) -> tuple[int, str | None]:
    """Pair count and hash of the role's most recently written snapshot."""
    import pyarrow.parquet as pq

    snapshots = [p for p in (datasets_dir / role).glob("*") if (p / "held_out.parquet").exists()] if (datasets_dir / role).is_dir() else []
    if not snapshots:
        return 0, None
    latest = max(snapshots, key=lambda p: (p / "held_out.parquet").stat().st_mtime)
    return sum(pq.ParquetFile(latest / f"{s}.parquet").metadata.num_rows for s in ("train", "held_out")), latest.name


def role_status(settings: Settings) -> dict[str, dict[str, Any]]:
    from roleforge.tasks.promote import CHAMPION, alias_version
    from roleforge.tasks.store import engine_for, feedback_counts
    from roleforge.tasks.tracking import mlflow_client

    counts = feedback_counts(engine_for(settings.resolved_store_url))
    client = mlflow_client(settings.resolved_tracking_uri)
    status = {}
    for role in settings.roles:
        pairs, snapshot = latest_snapshot_pairs(settings.home / "datasets", role)
        champion = alias_version(client, settings.registered_model_name(role), CHAMPION)
        metrics = {k.removeprefix("roleforge.metric."): float(v) for k, v in (champion.tags if champion else {}).items()
                   if k.startswith("roleforge.metric.")}
        training = read_training_status(settings.home, role) or {"state": "pending"}
        status[role] = {"feedback": counts.get(role, 0), "pairs": pairs, "snapshot": snapshot,
                        "training": training["state"], "training_metrics": training.get("metrics", {}),
                        "adapter_path": training.get("adapter_path"),
                        "champion_version": str(champion.version) if champion else None, "champion_metrics": metrics}
    return status


TRAINING_STATES = ("pending", "training", "ready", "failed")


def write_training_status(home: Path, role: str, state: str, **fields: Any) -> None:
    """A role's training status (pending, training, ready, failed) with its last metrics and adapter path,
    replaced atomically so that `roleforge status` never reads half a file."""
    import json
    import os
    import socket
    import time

    if state not in TRAINING_STATES:
        raise ValueError(f"unknown training state {state!r}")
    directory = home / "status"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{role}.json"
    previous = read_training_status(home, role) or {}
    record = {**previous, **fields, "state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    staging = directory / f".{role}.json.{os.getpid()}"
    staging.write_text(json.dumps(record, default=str))
    staging.replace(target)


def read_training_status(home: Path, role: str) -> dict[str, Any] | None:
    import json

    try:
        return json.loads((home / "status" / f"{role}.json").read_text())
    except (OSError, ValueError):
        return None
