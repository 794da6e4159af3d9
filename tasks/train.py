"""Train: a role's candidate DPO LoRA adapter, trained by the configured backend (roleforge/training/backends.py),
and the self-learning trigger that decides whether a role trains at all."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from roleforge.config.settings import load_settings
from roleforge.ops.errors import Preempted
from roleforge.ops.retries import RetryPolicy, retry_transient
from roleforge.ops.timing import STAGES
from roleforge.runtime import MODEL_MODULES, import_for_stages
from roleforge.storage.snapshots import PreferenceDataset, load_split
from roleforge.training.backends import TrainingBackend, training_backend
from roleforge.training.candidate import Candidate

# Retries of a training: Preempted and transient errors each have a budget in settings.training (RetryPolicy);
# the task's own count is only the ceiling. Backoff doubles from 10 s to at most 10 min, with +-50% jitter.
MAX_TASK_RETRIES = 20
BACKOFF_SECONDS = [min(10 * 2**attempt, 600) for attempt in range(MAX_TASK_RETRIES)]


def _retry_budgets() -> dict[str, int]:
    training = load_settings().training
    return {"preempted": training.preemption_retries, "transient": training.transient_retries}


TRAIN_RETRIES = RetryPolicy(_retry_budgets)


@task(name="train-adapter", retries=MAX_TASK_RETRIES, retry_delay_seconds=BACKOFF_SECONDS, retry_jitter_factor=0.5,
      retry_condition_fn=TRAIN_RETRIES, cache_policy=NO_CACHE)
@STAGES.timed("train")
def train_role_adapter(dataset: PreferenceDataset, profile: str, backend: TrainingBackend | None = None) -> Candidate:
    """Train a role's candidate adapter with `backend` (default: the one settings.training.backend names); a retry
    resumes from the newest checkpoint. Preemptions and transient errors retry from their own budgets
    (settings.training); code errors fail fast."""
    import_for_stages(MODEL_MODULES)
    from roleforge.ops.status import write_training_status
    from roleforge.registry.tracking import current_flow_run, experiment_id, mlflow_client

    settings = load_settings()
    settings.role(dataset.role)
    write_training_status(settings.home, dataset.role, "training", snapshot=dataset.snapshot_hash, error=None)
    try:
        client = mlflow_client(settings.resolved_tracking_uri)
        experiment = experiment_id(client, settings.path("mlartifacts"))
        train = backend or training_backend(settings)
        candidate = train(dataset, profile, client, experiment, current_flow_run())
    except Preempted as error:
        write_training_status(settings.home, dataset.role, "pending", error=f"preempted: {error}")
        raise
    except Exception as error:
        write_training_status(settings.home, dataset.role, "failed", error=str(error).splitlines()[0] if str(error) else type(error).__name__)
        raise
    metrics = {k: v for k, v in candidate.train_metrics.items() if k in ("train_loss", "train_runtime", "train_samples_per_second")}
    write_training_status(settings.home, dataset.role, "ready", adapter_path=candidate.adapter_path, metrics=metrics,
                          steps=candidate.steps, resumed_from_step=candidate.resumed_from_step, mlflow_run_id=candidate.mlflow_run_id,
                          feedback_watermark=dataset.feedback_watermark)
    reference = ("" if candidate.reference_pairs_computed is None else
                 f", reference log-probs computed for {candidate.reference_pairs_computed} of {candidate.train_pairs} pairs")
    get_run_logger().info("role %s: %d steps in %.0f s%s%s", dataset.role, candidate.steps, candidate.train_seconds,
                          f", resumed from step {candidate.resumed_from_step}" if candidate.resumed_from_step else "",
                          reference)
    return candidate


def new_pairs_since(dataset: PreferenceDataset, previous_hash: str | None) -> int:
    """Training pairs in this snapshot that the snapshot of the last training did not have."""
    current = {pair["pair_id"] for pair in load_split(dataset.path, "train")}
    previous_path = Path(dataset.path).parent / previous_hash if previous_hash else None
    if previous_path is None or not (previous_path / "train.parquet").exists():
        return len(current)
    return len(current - {pair["pair_id"] for pair in load_split(previous_path, "train")})


@task(name="should-train", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@STAGES.timed("label")
def should_train(dataset: PreferenceDataset, force: bool) -> PreferenceDataset:
    """The self-learning trigger: a role trains only with at least min_new_pairs new pairs since its last training."""
    if not dataset.ready:
        return dataset
    from roleforge.registry.tracking import last_trained_snapshot, mlflow_client

    settings = load_settings()
    minimum = settings.role(dataset.role).min_new_pairs
    previous = last_trained_snapshot(mlflow_client(settings.resolved_tracking_uri), settings.registered_model_name(dataset.role))
    new = new_pairs_since(dataset, previous)
    reason = None if force or new >= minimum else f"only {new} new training pairs since the last training (needs {minimum})"
    return dataset.model_copy(update={"new_pairs": new, "skip_reason": reason})
