"""Validate: run a role's feedback batch through its Great Expectations suite; a failing role is held back."""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import get_run_logger, task
from pydantic import BaseModel

from roleforge.tasks.errors import retry_transient
from roleforge.tasks.settings import load_settings


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    examples: list[str]


class ContractResult(BaseModel):
    """A role's contract verdict, one line per expectation."""

    role: str
    rows: int
    success: bool
    expectations: list[ExpectationOutcome]

    @property
    def failure_summary(self) -> str:
        failed = [f"{e.expectation}({e.column or ''}): {e.unexpected_count} unexpected" for e in self.expectations if not e.success]
        return "contract failed: " + "; ".join(failed) if failed else ""


def _quiet_context() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def validate_feedback(role: str, rows: list[dict[str, Any]]) -> ContractResult:
    """Check one role's stored feedback against the feedback suite."""
    import pandas as pd

    from roleforge.data_contracts.suites import feedback_suite
    from roleforge.tasks.store import FEEDBACK_COLUMNS

    context = _quiet_context()
    frame = pd.DataFrame(rows, columns=FEEDBACK_COLUMNS).drop(columns=["metadata"])
    batch_definition = (context.data_sources.add_pandas("feedback").add_dataframe_asset(role)
                        .add_batch_definition_whole_dataframe("all"))
    suite = context.suites.add(feedback_suite(role))
    validation = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    outcomes = [
        ExpectationOutcome(
            expectation=result.expectation_config.type,
            column=result.expectation_config.kwargs.get("column"),
            success=bool(result.success),
            unexpected_count=result.result.get("unexpected_count"),
            examples=[str(v)[:80] for v in (result.result.get("partial_unexpected_list") or [])[:3]],
        )
        for result in validation.results
    ]
    return ContractResult(role=role, rows=len(frame), success=bool(validation.success), expectations=outcomes)


@task(name="check-contract", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def check_contract(role: str) -> ContractResult:
    """Validate a role's stored feedback and publish the per-expectation verdict as a table artifact."""
    from prefect.artifacts import create_table_artifact

    from roleforge.tasks.store import engine_for, feedback_for_role

    result = validate_feedback(role, feedback_for_role(engine_for(load_settings().resolved_store_url), role))
    create_table_artifact(
        key=f"contract-{role}".replace("_", "-"), table=[e.model_dump() for e in result.expectations],
        description=f"Feedback contract of role {role}: {'passed' if result.success else 'FAILED'} on {result.rows} rows",
    )
    if not result.success:
        get_run_logger().warning("role %s held back: %s", role, result.failure_summary)
    return result
