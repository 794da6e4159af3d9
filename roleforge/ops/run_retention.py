"""Run data past a horizon, pruned only where the operator set one: MLflow runs no registered version was trained
in (retention.mlflow_run_days), and finished Prefect flow runs (retention.prefect_run_days). Part of `roleforge gc`
(roleforge/ops/retention.py)."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from roleforge.config.settings import Settings
from roleforge.ops.disk import tree_size

DAY = 86400.0


def runs_started_before(client: Any, cutoff_ms: int) -> list[Any]:
    """Every run, active or deleted, of every experiment, started before `cutoff_ms` (epoch milliseconds)."""
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs, token = [], None
    while experiments:
        page = client.search_runs(experiments, f"attributes.start_time < {cutoff_ms}", run_view_type=ViewType.ALL,
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    return runs


def tuned_recipe_runs(settings: Settings) -> set[str]:
    """The runs of the trials whose recipes `roleforge tune` saved (recipes/<role>.json names each)."""
    from roleforge.ops.status import read_tuned_recipe

    recipes = (read_tuned_recipe(path) for path in sorted((settings.home / "recipes").glob("*.json")))
    return {str(recipe["mlflow_run_id"]) for recipe in recipes if recipe and recipe.get("mlflow_run_id")}


def sweep_mlflow_runs(settings: Settings, lineage: Any, kept_runs: set[str], days: int, sweep: Any, now: float) -> None:
    """MLflow runs started more than `days` ago that no registered version was trained in, no kept unfinished
    training reports to and no saved tuned recipe came from: deleted, then removed for good with their artifacts by
    MLflow's own gc."""
    from mlflow.cli import gc as mlflow_gc

    from roleforge.registry.tracking import mlflow_client

    client = mlflow_client(settings.resolved_tracking_uri)
    kept = lineage.run_ids | kept_runs | tuned_recipe_runs(settings)
    doomed = []
    for run in runs_started_before(client, int((now - days * DAY) * 1000)):
        if run.info.run_id in kept:
            sweep.keep("mlflow_runs")
            continue
        artifacts = urlparse(run.info.artifact_uri or "")
        sweep.freed_bytes += tree_size(Path(unquote(artifacts.path))) if artifacts.scheme in ("", "file") else 0
        sweep.removed["mlflow_runs"] += 1
        doomed.append(run.info)
    if sweep.dry_run or not doomed:
        return
    for info in doomed:
        if info.lifecycle_stage != "deleted":
            client.delete_run(info.run_id)
    uri = settings.resolved_tracking_uri
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per run
        mlflow_gc.main(["--backend-store-uri", uri, "--tracking-uri", uri, "--run-ids", ",".join(i.run_id for i in doomed)],
                       standalone_mode=False)


def sweep_prefect_runs(days: int, sweep: Any, now: float) -> None:
    """Prefect flow runs in a final state that started more than `days` ago, deleted through the API (their task
    runs, logs and artifacts go with them)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterStartTime, FlowRunFilterState,
                                                FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    finished = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
    old = FlowRunFilter(start_time=FlowRunFilterStartTime(before_=datetime.fromtimestamp(now - days * DAY, UTC)),
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=finished)))
    with get_client(sync_client=True) as client:
        runs, page = [], None
        while page is None or len(page) == 200:
            page = client.read_flow_runs(flow_run_filter=old, sort=FlowRunSort.START_TIME_ASC, limit=200, offset=len(runs))
            runs += page
        for run in runs:
            if not sweep.dry_run:
                client.delete_flow_run(run.id)
            sweep.removed["prefect_runs"] += 1
