"""Train: one DPO LoRA adapter per role with TRL's DPOTrainer on the base model; checkpoints, resume, MLflow."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from roleforge.runtime import MODEL_MODULES, import_for_stages
from roleforge.ops.errors import Preempted, RoleforgeError, retry_transient
from roleforge.training.preemption import RetryPolicy
from roleforge.training.engines import roleforge_trainer, trl_trainer
from roleforge.tasks.label import PreferenceDataset, load_split
from roleforge.training.reference_store import ReferenceStore
from roleforge.config.settings import load_settings
from roleforge.ops.timing import STAGES

# Retries of a training: Preempted and transient errors each have a budget in settings.training (RetryPolicy);
# the task's own count is only the ceiling. Backoff doubles from 10 s to at most 10 min, with +-50% jitter.
MAX_TASK_RETRIES = 20
# Reference log-probs kept across trainings (roleforge/training/reference_store.py), a file in the checkpoints directory.
KEPT_REFERENCES = "reference_logps.db"
BACKOFF_SECONDS = [min(10 * 2**attempt, 600) for attempt in range(MAX_TASK_RETRIES)]

LOGGED_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                  "logps/rejected", "grad_norm", "learning_rate")


class Candidate(BaseModel):
    """A freshly trained adapter, not yet judged."""

    role: str
    adapter_path: str
    mlflow_experiment_id: str
    mlflow_run_id: str
    snapshot_hash: str
    dataset_path: str
    train_pairs: int
    steps: int
    resumed_from_step: int | None
    train_seconds: float
    train_metrics: dict[str, float]
    # Of train_pairs, those whose reference log-probs this training computed; the rest were kept from an earlier
    # training under the same reference (roleforge/training/reference_store.py). None for stock TRL, which computes its own.
    reference_pairs_computed: int | None = None
    replay_pairs: int = 0  # general prompts with the base model's own answers, trained on beside train_pairs


def plot_training_curve(history: list[dict[str, float]], title: str, path: Path) -> Path | None:
    """Loss, reward margin and reward accuracy per step as a PNG; None when nothing was logged."""
    steps = [entry for entry in history if "loss" in entry and "step" in entry]
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for axis, key, label in zip(axes, ("loss", "rewards/margins", "rewards/accuracies"), ("DPO loss", "reward margin", "reward accuracy")):
        axis.plot([e["step"] for e in steps if key in e], [e[key] for e in steps if key in e], marker="o", markersize=3)
        axis.set_title(label)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def recipe_fingerprint(recipe: dict[str, Any], base_model: Path, base_adapter: Path | None = None) -> str:
    """Names one training: a checkpoint is resumed only by a training with the same recipe and starting point."""
    return hashlib.sha256(json.dumps([recipe, str(base_model), str(base_adapter or "")], sort_keys=True,
                                     default=str).encode()).hexdigest()[:12]


def mlflow_logging_callback(client: Any, run_id: str) -> Any:
    from transformers import TrainerCallback

    class MlflowStepMetrics(TrainerCallback):
        """Log the trainer's per-step metrics into the role's MLflow run."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(key=k.replace("/", "_"), value=float(v), timestamp=now, step=state.global_step)
                       for k, v in (logs or {}).items() if k in LOGGED_METRICS]
            if metrics:
                client.log_batch(run_id, metrics=metrics)

    return MlflowStepMetrics()


def resume_point(output_dir: Path) -> tuple[str | None, int | None]:
    """The newest complete checkpoint and its step. The trainer writes trainer_state.json last, so a checkpoint
    without it (or with it unreadable) was cut off mid-write and is passed over."""
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]) if p.name.rsplit("-", 1)[1].isdigit() else -1,
                         reverse=True) if output_dir.is_dir() else []
    for checkpoint in checkpoints:
        try:
            step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            continue
        if (checkpoint / "adapter_model.safetensors").exists():
            return str(checkpoint), int(step)
    return None, None


def _open_run(client: Any, experiment: str, output_dir: Path, role: str, dataset: PreferenceDataset, tags: dict[str, str]) -> str:
    """The MLflow run of this training: the one a resumed training started, or a new one."""
    marker = output_dir / "mlflow_run_id"
    if marker.exists():
        return marker.read_text().strip()
    run = client.create_run(experiment, run_name=f"{role}-{dataset.snapshot_hash[:8]}", tags={
        "roleforge.role": role, "roleforge.dataset_hash": dataset.snapshot_hash, "roleforge.stage": "train", **tags})
    output_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(run.info.run_id)
    return run.info.run_id


@contextmanager
def system_metrics(run_id: str, tracking_uri: str, interval_s: float = 10.0) -> Iterator[None]:
    """CPU, memory, disk, network (and GPU where there is one) sampled into the MLflow run while it trains."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def train_adapter(dataset: PreferenceDataset, system_prompt: str, recipe: dict[str, dict[str, Any]], base_model: Path,
                  checkpoints_dir: Path, adapters_dir: Path, client: Any, experiment: str,
                  run_tags: dict[str, str] | None = None, base_adapter: Path | None = None, min_pairs: int = 1,
                  max_parallel: int = 1, engine: str = "roleforge") -> Candidate:
    """Train a role's DPO LoRA adapter on its snapshot, on the process's shared base model.

    From scratch, the reference is the base model. With `base_adapter` (the role's SFT adapter), training starts
    from that adapter and uses it as the reference. Checkpoints go under `checkpoints_dir`; a run of the same
    training (same snapshot, recipe and starting point) resumes from the newest complete one. On SIGTERM it writes a
    checkpoint and raises Preempted. `engine` is roleforge's training path (roleforge/training/fast_dpo.py) or stock TRL; the
    former takes the reference log-probs of pairs seen by earlier trainings from `checkpoints_dir` (KEPT_REFERENCES).
    """
    from transformers import PrinterCallback

    from roleforge.models.base import BASE_MODELS, check_adapter, compute_dtype, load_tokenizer
    from roleforge.training.preemption import checkpoint_on_shutdown_callback, raise_if_preempted, training_in_progress
    from roleforge.config.recipes import build_configs

    started = time.monotonic()
    if base_adapter is not None:
        check_adapter(base_adapter, base_model)
    output_dir = checkpoints_dir / dataset.role / f"{dataset.snapshot_hash}-{recipe_fingerprint(recipe, base_model, base_adapter)}"
    dpo_config, lora_config = build_configs(recipe, str(output_dir))
    pairs = sorted(load_split(dataset.path, "train"), key=lambda p: p["pair_id"])[: recipe["data"]["max_train_pairs"]]
    if len(pairs) < min_pairs:
        raise RoleforgeError(f"role {dataset.role}: {len(pairs)} training pairs in snapshot {dataset.snapshot_hash[:12]}, "
                             f"fewer than the {min_pairs} it needs")
    run_id = _open_run(client, experiment, output_dir, dataset.role, dataset, run_tags or {})
    checkpoint, resumed_from_step = resume_point(output_dir)
    if checkpoint is None:
        client.log_batch(run_id, params=_params(recipe, dataset, len(pairs), base_adapter))
    tokenizer = load_tokenizer(base_model)
    callbacks = [mlflow_logging_callback(client, run_id), checkpoint_on_shutdown_callback()]
    dtype = compute_dtype() if engine == "roleforge" else "float32"
    with (BASE_MODELS.lend(base_model, max_parallel, dtype) as base, training_in_progress(),
          system_metrics(run_id, client.tracking_uri)):
        replay = replayed_base_answers(base, tokenizer, system_prompt, pairs, recipe["data"], base_model, base_adapter,
                                       checkpoints_dir / REPLAY_ANSWERS)
        pairs = pairs + replay
        if engine == "trl":
            trainer = trl_trainer(base, dpo_config, lora_config, base_adapter, tokenizer, pairs, system_prompt, callbacks)
        else:
            trainer = roleforge_trainer(base, dpo_config, lora_config, base_adapter, tokenizer, pairs, system_prompt,
                                        callbacks, output_dir / "reference_logps.json",
                                        ReferenceStore(checkpoints_dir / KEPT_REFERENCES))
        try:
            trainer.remove_callback(PrinterCallback)  # metrics go to MLflow and the run logger, not to stdout
            result = trainer.train(resume_from_checkpoint=checkpoint)
            raise_if_preempted(trainer.state.global_step)
            adapter_path = adapters_dir / dataset.role / run_id
            trainer.model.save_pretrained(str(adapter_path), safe_serialization=True, selected_adapters=["default"])
            history = trainer.state.log_history
        finally:
            # Take the adapters off the shared base model so the next role trains on the plain base.
            trainer.model.unload()
    client.log_artifacts(run_id, str(adapter_path), artifact_path="adapter")
    curve = plot_training_curve(history, f"{dataset.role}: DPO training", output_dir / "training_curve.png")
    if curve is not None:
        client.log_artifact(run_id, str(curve))
    return Candidate(
        role=dataset.role, adapter_path=str(adapter_path), mlflow_experiment_id=experiment, mlflow_run_id=run_id, snapshot_hash=dataset.snapshot_hash,
        dataset_path=dataset.path, train_pairs=len(pairs) - len(replay), steps=result.global_step, resumed_from_step=resumed_from_step,
        train_seconds=round(time.monotonic() - started, 2),
        train_metrics={k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))},
        reference_pairs_computed=getattr(trainer, "reference_pairs_computed", None), replay_pairs=len(replay),
    )


# Beside the checkpoints: the base model's answers to the general prompts, per role (training/replay.py).
REPLAY_ANSWERS = "replay-answers"


def replayed_base_answers(base: Any, tokenizer: Any, system_prompt: str, pairs: list[dict[str, Any]],
                          data: dict[str, Any], base_model: Path, base_adapter: Path | None,
                          cache_dir: Path) -> list[dict[str, Any]]:
    """The recipe's replay pairs (data.replay_pairs of them): the reference model's own answers to general prompts
    as chosen, the role's shape as rejected. The reference is the base, or the role's SFT adapter on it."""
    count = int(data.get("replay_pairs", 0))
    if count <= 0:
        return []
    from roleforge.models.base import attach_adapter
    from roleforge.training.reference_store import reference_identity
    from roleforge.training.replay import finished, general_prompts, reference_answers, replay_pairs

    parameter = next(base.parameters())
    identity = reference_identity(base_model, base_adapter, str(parameter.dtype), parameter.device.type)
    model = attach_adapter(base, base_adapter, adapter_name="replay") if base_adapter is not None else base
    try:
        # A quarter more prompts than pairs, for the answers the base does not finish; the same prompts every night,
        # so that their answers come from the cache after the first.
        prompts = general_prompts()[:count + count // 4]
        answers = reference_answers(model.eval(), tokenizer, system_prompt, prompts, REPLAY_MAX_NEW_TOKENS, cache_dir, identity)
    finally:
        if base_adapter is not None:
            model.unload()
    return replay_pairs(finished(answers, tokenizer, REPLAY_MAX_NEW_TOKENS), pairs, count, seed=len(pairs))


# Long enough for the base model's answer to a plain question; answers it does not finish are not replayed.
REPLAY_MAX_NEW_TOKENS = 96


def _params(recipe: dict[str, dict[str, Any]], dataset: PreferenceDataset, train_pairs: int, base_adapter: Path | None) -> list[Any]:
    from mlflow.entities import Param

    flat = {f"{section}.{key}": value for section, values in recipe.items() for key, value in values.items()}
    flat.update({"dataset.snapshot_hash": dataset.snapshot_hash, "dataset.train_pairs": train_pairs,
                 "base_adapter": str(base_adapter) if base_adapter else "none"})
    return [Param(key, str(value)[:6000]) for key, value in sorted(flat.items())]


def _retry_budgets() -> dict[str, int]:
    training = load_settings().training
    return {"preempted": training.preemption_retries, "transient": training.transient_retries}


TRAIN_RETRIES = RetryPolicy(_retry_budgets)


@task(name="train-adapter", retries=MAX_TASK_RETRIES, retry_delay_seconds=BACKOFF_SECONDS, retry_jitter_factor=0.5,
      retry_condition_fn=TRAIN_RETRIES, cache_policy=NO_CACHE)
@STAGES.timed("train")
def train_role_adapter(dataset: PreferenceDataset, profile: str) -> Candidate:
    """Train a role's candidate adapter here or as an Azure ML job; a retry resumes from the newest checkpoint.
    Preemptions and transient errors retry from their own budgets (settings.training); code errors fail fast."""
    import_for_stages(MODEL_MODULES)
    from roleforge.models.base import ensure_base_model
    from roleforge.config.recipes import role_recipe
    from roleforge.ops.status import write_training_status
    from roleforge.registry.tracking import current_flow_run, experiment_id, mlflow_client

    settings = load_settings()
    config = settings.role(dataset.role)
    write_training_status(settings.home, dataset.role, "training", snapshot=dataset.snapshot_hash, error=None)
    try:
        base_model = ensure_base_model(settings.resolved_base_model, is_default=settings.base_model is None)
        client = mlflow_client(settings.resolved_tracking_uri)
        experiment = experiment_id(client, settings.path("mlartifacts"))
        recipe = role_recipe(profile, settings.role_training(dataset.role), dataset.role)
        if settings.training.backend == "azure_ml":
            from roleforge.deployments.azure_ml import train_on_azure_ml

            candidate = train_on_azure_ml(settings, dataset, profile, client, experiment, current_flow_run())
        else:
            candidate = train_adapter(
                dataset, config.system_prompt, recipe, base_model, settings.path("checkpoints"), settings.path("adapters"),
                client, experiment, current_flow_run(), base_adapter=config.base_adapter, min_pairs=config.min_pairs,
                max_parallel=settings.training.max_parallel_roles, engine=settings.training.engine)
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
    from roleforge.tasks.promote import last_trained_snapshot
    from roleforge.registry.tracking import mlflow_client

    settings = load_settings()
    minimum = settings.role(dataset.role).min_new_pairs
    previous = last_trained_snapshot(mlflow_client(settings.resolved_tracking_uri), settings.registered_model_name(dataset.role))
    new = new_pairs_since(dataset, previous)
    reason = None if force or new >= minimum else f"only {new} new training pairs since the last training (needs {minimum})"
    return dataset.model_copy(update={"new_pairs": new, "skip_reason": reason})
