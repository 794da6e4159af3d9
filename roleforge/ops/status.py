"""Status: per role, what is stored, what was labeled last, and which adapter is champion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roleforge.config.settings import Settings
from roleforge.registry.tracking import CHAMPION


def latest_snapshot_pairs(datasets_dir: Path, role: str) -> tuple[int, str | None]:
    """Pair count and hash of the role's most recently written snapshot."""
    import pyarrow.parquet as pq

    snapshots = [p for p in (datasets_dir / role).glob("*") if (p / "held_out.parquet").exists()] if (datasets_dir / role).is_dir() else []
    if not snapshots:
        return 0, None
    latest = max(snapshots, key=lambda p: (p / "held_out.parquet").stat().st_mtime)
    return sum(pq.ParquetFile(latest / f"{s}.parquet").metadata.num_rows for s in ("train", "held_out")), latest.name


def role_status(settings: Settings) -> dict[str, dict[str, Any]]:
    from roleforge.storage.schema import engine_for, feedback_counts

    counts = feedback_counts(engine_for(settings.resolved_store_url))
    champions = champions_of(settings.resolved_tracking_uri, {role: settings.registered_model_name(role) for role in settings.roles})
    decisions = last_decisions(settings.home)
    status = {}
    for role in settings.roles:
        pairs, snapshot = latest_snapshot_pairs(settings.home / "datasets", role)
        version, tags = champions.get(role) or (None, {})
        metrics = {k.removeprefix("roleforge.metric."): float(v) for k, v in tags.items() if k.startswith("roleforge.metric.")}
        training = read_training_status(settings.home, role) or {"state": "pending"}
        status[role] = {"feedback": counts.get(role, 0), "pairs": pairs, "snapshot": snapshot,
                        "training": training["state"], "training_metrics": training.get("metrics", {}),
                        "adapter_path": training.get("adapter_path"), "champion_version": version, "champion_metrics": metrics,
                        "last_decision": decisions.get(role)}
        # When the training status last changed and what stopped it, only where there is a status: the others keep
        # the keys they had.
        status[role].update({f"training_{key}": training[key] for key in ("updated", "error") if training.get(key)})
        tuned = read_tuned_recipe(settings.tuned_recipe_path(role))
        if tuned is not None:  # only where `roleforge tune` saved one: the other keys stay as they were
            status[role]["tuned_recipe"] = tuned
    return status


def disk_status(settings: Settings) -> dict[str, int | None]:
    """Bytes under ROLEFORGE_HOME per kind of state (roleforge/ops/disk.py), their total, and the bound gc holds the
    home to (retention.max_home_gb; None when unset)."""
    from roleforge.ops.disk import disk_use
    from roleforge.storage.urls import sqlite_file

    bound = settings.retention.max_home_gb
    return {**disk_use(settings.home, sqlite_file(settings.resolved_store_url)),
            "max_home_bytes": int(bound * 2**30) if bound else None}


def read_tuned_recipe(path: Path) -> dict[str, Any] | None:
    """What `roleforge tune` saved for a role (None when it saved nothing); a file that does not parse gives its
    error instead, as training would stop on it."""
    import json

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        return {"error": f"{path}: {error}"}
    return record if isinstance(record, dict) else {"error": f"{path}: not a JSON object"}


DECISIONS = ("promote", "hold", "rollback")


def last_decisions(home: Path) -> dict[str, dict[str, Any]]:
    """Per role, the audit log's latest promotion, hold or rollback: its action, version (the candidate's; for a
    rollback, the champion it went back to), reason, and time. A log that cannot be read (`roleforge audit` says
    why) gives none."""
    from roleforge.ops import audit

    try:
        entries = audit.read(home)
    except (OSError, ValueError):
        return {}
    decisions = {}
    for entry in entries:
        if isinstance(entry, dict) and entry.get("action") in DECISIONS and entry.get("role"):
            version = entry.get("champion_version") if entry["action"] == "rollback" else entry.get("version")
            decisions[entry["role"]] = {"action": entry["action"], "version": version, "reason": entry.get("reason"),
                                        "time": entry.get("time")}
    return decisions


def champions_of(tracking_uri: str, models: dict[str, str]) -> dict[str, tuple[str, dict[str, str]]]:
    """Per role, its registered model's champion version and that version's tags (roles without one left out).

    The embedded SQLite registry is read directly, read-only: importing MLflow and opening its store costs seconds,
    and `roleforge status` should answer in about one. Any other registry, or a SQLite file whose tables are not
    what this reader expects, goes through the MLflow client."""
    from roleforge.storage.urls import sqlite_file

    database = sqlite_file(tracking_uri)
    if database is not None:
        fast = _sqlite_champions(database, models)
        if fast is not None:
            return fast
    from roleforge.registry.tracking import alias_version, mlflow_client

    client = mlflow_client(tracking_uri)
    found = {}
    for role, name in models.items():
        version = alias_version(client, name, CHAMPION)
        if version is not None:
            found[role] = (str(version.version), dict(version.tags))
    return found


def _sqlite_champions(path: Path, models: dict[str, str]) -> dict[str, tuple[str, dict[str, str]]] | None:
    """champions_of for an MLflow SQLite file (None: let the MLflow client answer). A missing file has no champions."""
    import os
    import sqlite3

    if not path.exists():
        return {}
    if os.environ.get("MLFLOW_WORKSPACE") or os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("1", "true", "yes"):
        return None  # workspaces other than the default one: the client knows which applies
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(registered_model_aliases)")}
        if not {"name", "alias", "version"} <= columns:
            return None
        workspace = " AND workspace = 'default'" if "workspace" in columns else ""
        found = {}
        for role, name in models.items():
            row = connection.execute(f"SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?{workspace}",
                                     (name, CHAMPION)).fetchone()
            if row is None:
                continue
            tags = connection.execute(f"SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?{workspace}",
                                      (name, row[0])).fetchall()
            found[role] = (str(row[0]), dict(tags))
        return found
    except sqlite3.Error:
        return None
    finally:
        connection.close()


TRAINING_STATES = ("pending", "training", "ready", "failed")


def write_training_status(home: Path, role: str, state: str, **fields: Any) -> None:
    """A role's training status (pending, training, ready, failed) with its last metrics and adapter path,
    replaced atomically so that `roleforge status` never reads half a file."""
    import json
    import os
    import socket
    import time

    from roleforge.ops.files import write_atomic

    if state not in TRAINING_STATES:
        raise ValueError(f"unknown training state {state!r}")
    target = home / "status" / f"{role}.json"
    previous = read_training_status(home, role) or {}
    record = {**previous, **fields, "state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "worker": f"{socket.gethostname()}:{os.getpid()}"}
    write_atomic(target, json.dumps(record, default=str))


def read_training_status(home: Path, role: str) -> dict[str, Any] | None:
    import json

    try:
        return json.loads((home / "status" / f"{role}.json").read_text())
    except (OSError, ValueError):
        return None
