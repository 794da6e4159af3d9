"""Report: one outcome per role, whatever happened to it, as a table for people and JSON for machines."""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from pydantic import BaseModel


def artifact_key(prefix: str, role: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes only) for a role's artifact."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{role}".lower())


def role_resource(role: str) -> dict[str, str]:
    """The Prefect event resource for a role, which automations can match on."""
    return {"prefect.resource.id": f"roleforge.role.{role}", "prefect.resource.name": role}


class RoleOutcome(BaseModel):
    """Where a role ended in this run, and why."""

    role: str
    pairs: int = 0
    train_pairs: int = 0
    held_out_pairs: int = 0
    by_source: dict[str, int] = {}
    conflicts: int = 0
    abstained: int = 0
    skipped: dict[str, int] = {}  # reason -> judgements that made no pair (a middling answer rated above a bad one, ...)
    new_pairs: int | None = None
    trained: bool = False
    promoted: bool = False
    reason: str = ""
    snapshot_hash: str | None = None
    version: str | None = None
    champion_version: str | None = None
    previous_version: str | None = None
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    train_seconds: float | None = None
    seconds: float | None = None  # the role's whole pipeline (contract to promotion), wall clock
    resumed_from_step: int | None = None
    reference_pairs_computed: int | None = None  # the rest of the training pairs' reference log-probs were kept
    opponent: str | None = None
    preference_accuracy: float | None = None
    opponent_preference_accuracy: float | None = None
    accuracy_gain: float | None = None
    reward_accuracy: float | None = None
    reward_margin: float | None = None
    accuracy_gain_low: float | None = None
    accuracy_gain_high: float | None = None
    win_rate: float | None = None  # generation A/B against the opponent, ties counted half
    win_rate_low: float | None = None
    win_rate_high: float | None = None
    guardrails: dict[str, Any] | None = None
    contract: dict[str, dict[str, Any]] = {}  # per side (candidate, opponent): the output contract's compliance
    drift_kl: float | None = None  # mean token KL to the reference on general prompts
    task_metrics: dict[str, dict[str, float]] = {}

    @property
    def result(self) -> str:
        """The outcome in two words or so: 'promoted v3', 'not promoted', 'not trained', 'failed'."""
        if self.reason.startswith("failed"):
            return "failed"
        if self.promoted:
            return f"promoted v{self.version}"
        return "not promoted" if self.trained else "not trained"

    @property
    def headline(self) -> str:
        """The result and, where it is no promotion, why: the line a role's progress ends on."""
        if self.promoted or not self.reason:
            return self.result
        return self.reason if self.result == "failed" else f"{self.result}: {self.reason}"

    @classmethod
    def held_back(cls, dataset: Any) -> RoleOutcome:
        """A role that did not train: its contract failed or it has too few pairs."""
        return cls(role=dataset.role, reason=dataset.skip_reason or "", **_dataset_fields(dataset))

    @classmethod
    def finished(cls, dataset: Any, candidate: Any, evaluation: Any, decision: Any) -> RoleOutcome:
        return cls(
            role=dataset.role, **_dataset_fields(dataset), trained=True, promoted=decision.promoted, reason=decision.reason,
            version=decision.version, champion_version=decision.champion_version, previous_version=decision.previous_version,
            mlflow_run_id=candidate.mlflow_run_id, mlflow_experiment_id=candidate.mlflow_experiment_id, train_seconds=candidate.train_seconds,
            resumed_from_step=candidate.resumed_from_step, reference_pairs_computed=candidate.reference_pairs_computed,
            opponent=evaluation.opponent,
            preference_accuracy=evaluation.candidate.preference_accuracy,
            opponent_preference_accuracy=evaluation.opponent_score.preference_accuracy,
            accuracy_gain=evaluation.accuracy_gain, reward_accuracy=evaluation.candidate.reward_accuracy,
            reward_margin=evaluation.candidate.reward_margin, accuracy_gain_low=evaluation.accuracy_gain_low,
            accuracy_gain_high=evaluation.accuracy_gain_high, task_metrics=evaluation.task_metrics,
            guardrails=evaluation.guardrails.model_dump() if evaluation.guardrails is not None else None,
            contract={side: scores.model_dump() for side, scores in evaluation.contract.items()}, drift_kl=evaluation.drift_kl,
            **({"win_rate": ab.win_rate, "win_rate_low": ab.win_rate_low, "win_rate_high": ab.win_rate_high}
               if (ab := evaluation.generation) is not None else {}),
        )

    @classmethod
    def failed(cls, role: str, error: BaseException | str) -> RoleOutcome:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return cls(role=role, reason=f"failed: {message}")


def _dataset_fields(dataset: Any) -> dict[str, Any]:
    return {"pairs": dataset.train_pairs + dataset.held_out_pairs, "train_pairs": dataset.train_pairs,
            "held_out_pairs": dataset.held_out_pairs, "by_source": dataset.by_source, "conflicts": dataset.conflicts,
            "abstained": dataset.abstained, "skipped": dataset.skipped, "new_pairs": dataset.new_pairs,
            "snapshot_hash": dataset.snapshot_hash}


def outcome_rows(outcomes: dict[str, RoleOutcome]) -> list[dict[str, Any]]:
    """One flat row per role for tables (terminal and Prefect artifact)."""
    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    def interval(value: float | None, low: float | None, high: float | None, digits: int = 2) -> str:
        if value is None:
            return ""
        return f"{value:.{digits}f}" + (f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None and high is not None else "")

    def tool_use(o: RoleOutcome) -> str:
        rates = {side: m.get("full_compliance_rate") for side, m in o.task_metrics.items()}
        return f"{rates['candidate']:.2f} vs {rates['opponent']:.2f}" if rates.get("candidate") is not None else ""

    return [{
        "role": o.role, "pairs": o.pairs, "by source": ", ".join(f"{k}={v}" for k, v in sorted(o.by_source.items())),
        "trained": "yes" if o.trained else "no", "accuracy": fmt(o.preference_accuracy),
        "opponent": f"{o.opponent or ''} {fmt(o.opponent_preference_accuracy)}".strip(),
        "gain [CI]": interval(o.accuracy_gain, o.accuracy_gain_low, o.accuracy_gain_high, 3),
        "reward acc": fmt(o.reward_accuracy), "A/B win [CI]": interval(o.win_rate, o.win_rate_low, o.win_rate_high),
        "tool use": tool_use(o), "promoted": "yes" if o.promoted else "no",
        "champion": o.champion_version or "", "s": "" if o.seconds is None else f"{o.seconds:.0f}", "reason": o.reason,
    } for o in outcomes.values()]


def summary_markdown(outcomes: dict[str, RoleOutcome], mlflow_ui_url: str) -> str:
    """The run's per-role table in markdown, each trained role linked to its MLflow run."""
    rows = outcome_rows(outcomes)
    for row, outcome in zip(rows, outcomes.values()):
        row["mlflow"] = (f"[run]({mlflow_ui_url}/#/experiments/{outcome.mlflow_experiment_id}/runs/{outcome.mlflow_run_id})"
                         if outcome.mlflow_run_id else "")
    header = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n" if rows else ""
    body = "".join("| " + " | ".join(str(v).replace("|", "/") for v in row.values()) + " |\n" for row in rows)
    return f"# roleforge run\n\n{header}{body}"


@task(name="publish-summary")
def publish_summary(outcomes: dict[str, RoleOutcome]) -> None:
    """The run's per-role table as a Prefect artifact, for the UI."""
    from prefect.artifacts import create_markdown_artifact

    from roleforge.config.settings import load_settings

    create_markdown_artifact(key="self-learning-summary", markdown=summary_markdown(outcomes, load_settings().mlflow_ui_url),
                             description="Per-role outcome of the self-learning run")
