"""Retention: `roleforge gc`, also the nightly flow's last step. It keeps what lineage and rollback need (every
registered version's adapter, run and dataset snapshot; the newest checkpoints of unfinished trainings) and prunes
the rest by age and count, as `[retention]` says (roleforge/config/settings.py)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import BaseModel

from roleforge.config.settings import RetentionSettings, Settings
from roleforge.ops.disk import disk_use, tree_size

log = logging.getLogger(__name__)

DAY = 86400.0
# An unfinished training replaced by a later registered one is removed only after a day untouched, so that one still
# running beside the night (a tune's trial) is never pulled from under its trainer.
REPLACED_GRACE_S = DAY


class GcReport(BaseModel):
    """What one gc removed (or, in a dry run, would remove) and kept, counted by kind."""

    freed_bytes: int = 0
    removed: dict[str, int] = {}
    kept: dict[str, int] = {}
    dry_run: bool = False
    home_bytes: int = 0
    max_home_bytes: int | None = None
    errors: list[str] = []

    @property
    def over_bound(self) -> bool:
        return self.max_home_bytes is not None and self.home_bytes > self.max_home_bytes


@dataclass
class Lineage:
    """What the registry points at: every registered version's run, dataset snapshot and local adapter directory,
    when each model last registered a version (epoch seconds), and the versions worth keeping in a download cache."""

    run_ids: set[str] = field(default_factory=set)
    dataset_hashes: set[str] = field(default_factory=set)
    sources: list[Path] = field(default_factory=list)
    registered_at: dict[str, float] = field(default_factory=dict)
    cached_versions: dict[str, set[str]] = field(default_factory=dict)


def read_lineage(tracking_uri: str) -> Lineage:
    """The registry's lineage. A SQLite registry that does not exist yet holds nothing (and is not created)."""
    from roleforge.storage.urls import sqlite_file

    database = sqlite_file(tracking_uri)
    if database is not None and not database.exists():
        return Lineage()
    from roleforge.registry.tracking import CHAMPION, PREVIOUS, alias_version, mlflow_client, registered_versions

    client = mlflow_client(tracking_uri)
    lineage = Lineage()
    for version in registered_versions(client):
        if version.run_id:
            lineage.run_ids.add(version.run_id)
        if dataset_hash := (version.tags or {}).get("roleforge.dataset_hash"):
            lineage.dataset_hashes.add(dataset_hash)
        source = urlparse(version.source or "")
        if source.scheme in ("", "file") and source.path:
            lineage.sources.append(Path(unquote(source.path)).resolve())
        created = (version.creation_timestamp or 0) / 1000
        lineage.registered_at[version.name] = max(lineage.registered_at.get(version.name, 0.0), created)
    for name in lineage.registered_at:  # a search does not say which versions the aliases point at
        lineage.cached_versions[name] = {str(v.version) for alias in (CHAMPION, PREVIOUS) if (v := alias_version(client, name, alias))}
    return lineage


@dataclass
class Sweep:
    """Removes (or, in a dry run, only counts) what the steps find, never a path that holds, or lies inside, a
    registered version's adapter."""

    dry_run: bool
    protected: list[Path]
    removed: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    freed_bytes: int = 0
    errors: list[str] = field(default_factory=list)

    def remove(self, kind: str, path: Path) -> None:
        resolved = path.resolve()
        if any(resolved == p or resolved in p.parents or p in resolved.parents for p in self.protected):
            self.kept[kind] += 1
            return
        size = tree_size(path)
        if not self.dry_run:
            try:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            except FileNotFoundError:
                return
            except OSError as error:
                self.errors.append(f"{kind}: cannot remove {error.filename or path}: {error.strerror or error}")
                return
        self.removed[kind] += 1
        self.freed_bytes += size

    def keep(self, kind: str, count: int = 1) -> None:
        self.kept[kind] += count


def newest_mtime(path: Path) -> float:
    """When anything at or under `path` was last written."""
    times = [path.stat().st_mtime]
    times += [child.stat().st_mtime for child in path.rglob("*") if not child.is_symlink()] if path.is_dir() else []
    return max(times)


def sweep_trainings(checkpoints: Path, lineage: Lineage, retention: RetentionSettings, model_name: Any, sweep: Sweep,
                    now: float) -> tuple[set[str], set[str]]:
    """Training folders (checkpoints/<role>/<snapshot>-<recipe>): a registered one goes whole (its adapter is in the
    registry); an unfinished one keeps its newest checkpoints until it is stale or a later training of its role was
    registered. Returns the snapshot hashes the kept ones train on and the MLflow runs they report to."""
    from roleforge.training.local import RUN_MARKER, checkpoint_step, complete_checkpoints

    snapshots, runs = set(), set()
    for training in sorted(checkpoints.glob("*/*")):
        marker = training / RUN_MARKER
        if not training.is_dir() or not (marker.exists() or any(training.glob("checkpoint-*"))):
            continue  # the caches beside the trainings (replay-answers/, reference-answers/) hold files only
        run_id = marker.read_text().strip() if marker.exists() else None
        touched = newest_mtime(training)
        replaced = lineage.registered_at.get(model_name(training.parent.name), 0.0) > touched and now - touched > REPLACED_GRACE_S
        if run_id in lineage.run_ids or replaced or now - touched > retention.stale_training_days * DAY:
            sweep.remove("trainings", training)
            continue
        sweep.keep("trainings")
        snapshots.add(training.name.split("-", 1)[0])
        runs.update([run_id] if run_id else [])
        complete = complete_checkpoints(training)
        if not complete:
            continue  # nothing to resume from yet: what is there may be the first checkpoint being written
        oldest_kept = complete[:retention.checkpoint_keep][-1][1]
        for checkpoint in training.glob("checkpoint-*"):
            if checkpoint_step(checkpoint) < oldest_kept:
                sweep.remove("checkpoints", checkpoint)
            else:
                sweep.keep("checkpoints")
    return snapshots, runs


def sweep_snapshots(datasets: Path, lineage: Lineage, needed: set[str], keep: int, sweep: Sweep, now: float) -> None:
    """Dataset snapshots (datasets/<role>/<hash>): those registered versions or kept trainings point at, and each
    role's `keep` newest, stay; so does a half-written one younger than a day (a labeling in progress)."""
    for role in sorted(p for p in datasets.glob("*") if p.is_dir()):
        snapshots = [p for p in role.iterdir() if p.is_dir() and not p.name.startswith(".")]
        newest = sorted(snapshots, key=lambda p: newest_mtime(p), reverse=True)[:keep]
        for snapshot in snapshots:
            if snapshot in newest or snapshot.name in lineage.dataset_hashes or snapshot.name in needed:
                sweep.keep("snapshots")
            else:
                sweep.remove("snapshots", snapshot)
        for partial in role.glob(".*.partial"):
            if now - newest_mtime(partial) > DAY:
                sweep.remove("snapshots", partial)


def sweep_adapters(adapters: Path, lineage: Lineage, home: Path, stale_days: int, sweep: Sweep, now: float) -> None:
    """Trained adapters (adapters/<role>/<run id>), working copies: a registered one goes (the registry holds its
    own copy), except the one a role's training status names; an unregistered one (a tune's trial, a candidate
    whose promotion never ran) goes once stale."""
    from roleforge.ops.status import read_training_status

    for role in sorted(p for p in adapters.glob("*") if p.is_dir()):
        current = (read_training_status(home, role.name) or {}).get("adapter_path")
        for adapter in sorted(p for p in role.iterdir() if p.is_dir()):
            if current and adapter.resolve() == Path(current).resolve():
                sweep.keep("adapters")
            elif adapter.name in lineage.run_ids or now - newest_mtime(adapter) > stale_days * DAY:
                sweep.remove("adapters", adapter)
            else:
                sweep.keep("adapters")


def sweep_registry_cache(cache: Path, lineage: Lineage, sweep: Sweep) -> None:
    """Champions downloaded from a remote artifact store (registry-cache/<model>/<version>): a model's champion and
    previous stay; the others download again if ever needed."""
    for version in sorted(cache.glob("*/*")):
        if version.name in lineage.cached_versions.get(version.parent.name, set()):
            sweep.keep("registry_cache")
        else:
            sweep.remove("registry_cache", version)


def archived_day(archive: Path, path: Path) -> float:
    """The end of the day an archived file's date folder (archive/<YYYY-MM-DD>/) names, local time; 0 without one."""
    try:
        return time.mktime(time.strptime(path.relative_to(archive).parts[0], "%Y-%m-%d")) + DAY
    except (ValueError, OverflowError):
        return 0.0


def sweep_archive(archive: Path, days: int | None, sweep: Sweep, now: float) -> None:
    """Ingested inbox files (archive/<date>/...) once `days` have passed since both their archive date and their
    last write, whichever is later; empty date folders after them."""
    files = sorted(p for p in archive.rglob("*") if p.is_file()) if archive.is_dir() else []
    for path in files:
        written = max(archived_day(archive, path), path.stat().st_mtime)
        if days is not None and now - written > days * DAY:
            sweep.remove("archive", path)
        else:
            sweep.keep("archive")
    if not sweep.dry_run and archive.is_dir():
        for directory in sorted((p for p in archive.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(directory.iterdir()):
                directory.rmdir()


def sweep_reference_logps(path: Path, keep_days: int, sweep: Sweep, now: float) -> None:
    """Kept reference log-probs unused for `keep_days`, counted as rows; the file shrinks after."""
    from roleforge.training.reference_store import ReferenceStore

    before = tree_size(path)
    dropped, kept = ReferenceStore(path, keep_days).prune(now, sweep.dry_run)
    sweep.removed.update({"reference_logps": dropped})
    sweep.keep("reference_logps", kept)
    if dropped:
        sweep.freed_bytes += before * dropped // (dropped + kept) if sweep.dry_run else max(before - tree_size(path), 0)


def nonzero(counts: Counter) -> dict[str, int]:
    return {kind: count for kind, count in sorted(counts.items()) if count}


def attempt(sweep: Sweep, kind: str, step: Any) -> Any:
    """step()'s result; None, with the error reported, when it raised: one step's failure never stops the others."""
    try:
        return step()
    except Exception as error:  # noqa: BLE001 - whatever it was, gc reports it and goes on
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        sweep.errors.append(f"{kind}: {message}")
        return None


def collect_garbage(settings: Settings, dry_run: bool = False, now: float | None = None) -> GcReport:
    """Prune ROLEFORGE_HOME as settings.retention says and report it. When the registry cannot be read, nothing whose
    fate depends on it is touched; when the trainings cannot be swept, neither are the snapshots and runs they need."""
    from roleforge.ops.run_retention import sweep_mlflow_runs, sweep_prefect_runs
    from roleforge.storage.urls import sqlite_file
    from roleforge.training.reference_store import KEPT_REFERENCES

    now, retention, home = time.time() if now is None else now, settings.retention, settings.home
    sweep = Sweep(dry_run, [])
    lineage = attempt(sweep, "registry", lambda: read_lineage(settings.resolved_tracking_uri))
    if lineage is None:
        sweep.errors.append("registry unreadable: checkpoints, snapshots, adapters and runs were left as they are")
    else:
        sweep.protected = lineage.sources
        kept = attempt(sweep, "trainings", lambda: sweep_trainings(
            home / "checkpoints", lineage, retention, settings.registered_model_name, sweep, now))
        if kept is not None:
            snapshots, runs = kept
            attempt(sweep, "snapshots", lambda: sweep_snapshots(home / "datasets", lineage, snapshots, retention.snapshot_keep, sweep, now))
            if retention.mlflow_run_days is not None:
                attempt(sweep, "mlflow_runs", lambda: sweep_mlflow_runs(settings, lineage, runs, retention.mlflow_run_days, sweep, now))
        attempt(sweep, "adapters", lambda: sweep_adapters(home / "adapters", lineage, home, retention.stale_training_days, sweep, now))
        attempt(sweep, "registry_cache", lambda: sweep_registry_cache(home / "registry-cache", lineage, sweep))
    attempt(sweep, "archive", lambda: sweep_archive(home / "archive", retention.archive_days, sweep, now))
    attempt(sweep, "reference_logps", lambda: sweep_reference_logps(
        home / "checkpoints" / KEPT_REFERENCES, retention.reference_unused_days, sweep, now))
    if retention.prefect_run_days is not None:
        attempt(sweep, "prefect_runs", lambda: sweep_prefect_runs(retention.prefect_run_days, sweep, now))
    return GcReport(freed_bytes=sweep.freed_bytes, removed=nonzero(sweep.removed), kept=nonzero(sweep.kept), dry_run=dry_run,
                    home_bytes=disk_use(home, sqlite_file(settings.resolved_store_url))["total"], errors=sweep.errors,
                    max_home_bytes=int(retention.max_home_gb * 2**30) if retention.max_home_gb else None)


def audited_gc(settings: Settings, dry_run: bool = False, now: float | None = None) -> GcReport:
    """collect_garbage, with what it removed appended to the audit log (a dry run removes nothing and is not logged)."""
    from roleforge.ops import audit

    report = collect_garbage(settings, dry_run, now)
    if not dry_run and (report.removed or report.errors):
        audit.record(settings.home, "gc", removed=report.removed, freed_bytes=report.freed_bytes, errors=report.errors)
    return report


def nightly_gc() -> GcReport | None:
    """The nightly flow's last step: gc as configured. It never fails the night: its errors are logged as warnings
    (and kept in the audit log with what was removed)."""
    from roleforge.config.settings import load_settings

    try:
        report = audited_gc(load_settings())
    except Exception as error:  # noqa: BLE001 - the night's trainings are done: a gc failure is news, not a failure
        log.warning("gc failed: %s", error)
        return None
    for problem in report.errors:
        log.warning("gc: %s", problem)
    if report.over_bound:
        log.warning("gc: ROLEFORGE_HOME holds %d bytes, over retention.max_home_gb", report.home_bytes)
    log.info("gc: freed %d bytes; removed %s", report.freed_bytes, json.dumps(report.removed))
    return report
