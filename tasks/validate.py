"""Validate: run a role's feedback batch through its Great Expectations suite; a failing role is held back."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task

from roleforge.config.settings import load_settings
from roleforge.ops.retries import retry_transient
from roleforge.ops.timing import STAGES
from roleforge.runtime import import_for_stages
from roleforge.validation.results import ContractResult, ExpectationOutcome


def _quiet_context() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
        logging.getLogger(name).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_suite(role: str, frame: Any, make_suite: Callable[[], Any]) -> ContractResult:
    """Validate a DataFrame against a Great Expectations suite built in a fresh ephemeral context."""
    context = _quiet_context()
    suite = make_suite()
    batch_definition = (context.data_sources.add_pandas("roleforge").add_dataframe_asset(suite.name)
                        .add_batch_definition_whole_dataframe("all"))
    validation = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(context.suites.add(suite))
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


def validate_feedback(role: str, rows: list[dict[str, Any]]) -> ContractResult:
    """Check one role's stored feedback against the feedback suite."""
    import pandas as pd

    from roleforge.data_contracts.suites import feedback_suite
    from roleforge.storage.schema import FEEDBACK_COLUMNS

    frame = pd.DataFrame(rows, columns=FEEDBACK_COLUMNS).drop(columns=["metadata"])
    return run_suite(role, frame, lambda: feedback_suite(role))


def validate_pairs(role: str, pairs: list[Any], max_rater_share: float, min_pairs_for_rater_share: int) -> ContractResult:
    """Check a role's labeled pairs against the preference suite, flood guard included (from
    `min_pairs_for_rater_share` pairs on: a share of a handful means nothing, and one pair is one rater's alone)."""
    import pandas as pd

    from roleforge.data_contracts.suites import preference_suite

    frame = pd.DataFrame([{**pair.model_dump(exclude={"feedback_ids"}), "pair_id": pair.pair_id} for pair in pairs],
                         columns=["role", "prompt", "chosen", "rejected", "source", "labeler", "confidence", "rater", "pair_id"])
    frame["distinct"] = frame["chosen"] != frame["rejected"]
    counts = frame["rater"].value_counts()
    frame["rater_share"] = frame["rater"].map(counts / max(len(frame), 1)).astype(float)
    limit = max_rater_share if len(frame) >= min_pairs_for_rater_share else 1.0
    return run_suite(role, frame, lambda: preference_suite(role, limit))


@task(name="check-contract", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
@STAGES.timed("validate")
def check_contract(role: str) -> ContractResult:
    """Validate a role's stored feedback and publish the per-expectation verdict as a table artifact."""
    import_for_stages(("great_expectations", "pandas"))
    from prefect.artifacts import create_table_artifact
    from prefect.events import emit_event

    from roleforge.storage.schema import engine_for, feedback_for_role
    from roleforge.tasks.report import artifact_key, role_resource

    result = validate_feedback(role, feedback_for_role(engine_for(load_settings().resolved_store_url), role))
    create_table_artifact(
        key=artifact_key("contract", role), table=[e.model_dump() for e in result.expectations],
        description=f"Feedback contract of role {role}: {'passed' if result.success else 'FAILED'} on {result.rows} rows",
    )
    if not result.success:
        get_run_logger().warning("role %s held back: %s", role, result.failure_summary)
        emit_event(event="roleforge.contract.failed", resource=role_resource(role),
                   payload={"rows": result.rows, "failed": [e.model_dump() for e in result.expectations if not e.success]})
    return result
