"""`roleforge serve`: the deployments of prefect.yaml, with their schedules, served from one process.

For a single machine without workers. prefect.yaml stays the one place where deployments are defined: this
module reads it and builds the same deployments with `flow.to_deployment`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"


def load_flow(entrypoint: str) -> Any:
    """The flow object an entrypoint like `flows/self_learning.py:self_learning` names, imported as a module."""
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module("roleforge." + path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def deployment_specs(prefect_yaml: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    import yaml

    return yaml.safe_load(prefect_yaml.read_text())["deployments"]


def build_deployments(prefect_yaml: Path = PREFECT_YAML, with_schedules: bool = True) -> list[Any]:
    """RunnerDeployments for every deployment in prefect.yaml."""
    from prefect.schedules import Cron

    deployments = []
    for spec in deployment_specs(prefect_yaml):
        schedules = [Cron(s["cron"], timezone=s.get("timezone")) for s in spec.get("schedules", [])] if with_schedules else []
        deployments.append(load_flow(spec["entrypoint"]).to_deployment(
            name=spec["name"], description=spec.get("description"), parameters=spec.get("parameters", {}),
            schedules=schedules or None))
    return deployments


def serve_all(limit: int | None = 1, with_schedules: bool = True) -> None:
    """Register the deployments and run their flows from this process until interrupted."""
    from prefect import serve

    serve(*build_deployments(with_schedules=with_schedules), limit=limit)
