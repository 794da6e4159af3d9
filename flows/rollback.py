"""Rollback: a role's champion goes back to the version it replaced."""

from __future__ import annotations

from prefect import flow

from roleforge.flows.params import RollbackRun
from roleforge.tasks.promote import rollback_role


@flow(name="rollback")
def rollback(run: RollbackRun) -> dict[str, str | None]:
    return rollback_role(run.role)


if __name__ == "__main__":
    print(rollback(RollbackRun(role="tool-agent")))
