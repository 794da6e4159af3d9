"""MLflow at the edge: one client per tracking URI, the experiment's artifacts kept under ROLEFORGE_HOME, and the
registry's aliases (a role's champion and the version before it)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

EXPERIMENT = "roleforge"
# Registry aliases: the version a role serves, and the one before it (rollback's target).
CHAMPION, PREVIOUS = "champion", "previous"


@functools.cache
def mlflow_client(tracking_uri: str) -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema migrations of a new database are not news

    from roleforge.storage.urls import sqlite_file

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    database = sqlite_file(tracking_uri)
    if database is None:
        return client
    database.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (Dask workers training roles side by side) may open a new SQLite store at once: its schema
    # migrations must run in one of them at a time, or they collide.
    import fcntl

    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client._tracking_client.store  # noqa: B018 - opening the stores runs their migrations
            client._get_registry_client().store  # noqa: B018
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def experiment_id(client: Any, artifact_root: Path) -> str:
    """The roleforge experiment, created with its artifacts under home (not in the current directory)."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(EXPERIMENT, artifact_location=artifact_root.resolve().as_uri())


def current_flow_run() -> dict[str, str]:
    """The Prefect flow run this code runs in, as MLflow tags (empty outside a flow)."""
    try:
        from prefect.runtime import flow_run
    except ImportError:
        return {}
    run_id = flow_run.get_id()
    if not run_id:
        return {}
    tags = {"prefect.flow_run_id": str(run_id), "prefect.flow_run_name": str(flow_run.get_name() or "")}
    ui_url = flow_run_ui_url(str(run_id))
    if ui_url:
        tags["prefect.flow_run_url"] = ui_url
    return tags


def flow_run_ui_url(run_id: str) -> str | None:
    """The flow run's page in the Prefect UI of the server this process talks to (PREFECT_UI_URL, else derived from
    PREFECT_API_URL); None in ephemeral mode, where no UI serves it (Prefect's own helper then writes "None/...")."""
    from urllib.parse import quote

    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    if not base or urlparse(base).scheme not in ("http", "https") or not urlparse(base).netloc:
        return None
    return f"{base.rstrip('/')}/flow-runs/flow-run/{quote(run_id)}"


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The model version an alias points at, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def local_adapter_path(client: Any, version: Any, cache_dir: Path) -> Path:
    """A local directory holding a version's adapter (downloaded once for remote artifact stores)."""
    parsed = urlparse(version.source)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    import mlflow

    target = cache_dir / version.name / str(version.version)
    if not target.exists():
        mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(target))
    return target


def champion_adapter(client: Any, name: str, cache_dir: Path) -> tuple[Path | None, str | None]:
    """The local directory of a role's champion adapter and its version; (None, None) when it has none."""
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return None, None
    return local_adapter_path(client, champion, cache_dir), str(champion.version)


def last_trained_snapshot(client: Any, name: str) -> str | None:
    """The dataset hash of the role's newest registered version: what its last training saw."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    newest = max(versions, key=lambda v: int(v.version), default=None)
    return newest.tags.get("roleforge.dataset_hash") if newest is not None else None


def registered_versions(client: Any) -> list[Any]:
    """Every version of every registered model, page by page: what lineage and rollback need kept."""
    names, token = [], None
    while True:
        page = client.search_registered_models(page_token=token)
        names += [model.name for model in page]
        token = page.token
        if not token:
            break
    versions = []
    for name in names:
        token = None
        while True:
            page = client.search_model_versions(f"name='{name}'", page_token=token)
            versions += list(page)
            token = page.token
            if not token:
                break
    return versions
