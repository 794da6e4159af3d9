"""One role's DPO LoRA adapter trained in this process, on the shared base model: checkpoints and resume, the
role's MLflow run, replay of the base model's answers, and the engine that does the steps (roleforge's by default,
TRL's DPOTrainer with `training.engine = "trl"`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from roleforge.ops.errors import RoleforgeError
from roleforge.storage.snapshots import PreferenceDataset, load_split
from roleforge.training.candidate import Candidate, recipe_fingerprint
from roleforge.training.engines import roleforge_trainer, trl_trainer
from roleforge.training.reference_store import KEEP_DAYS, KEPT_REFERENCES, ReferenceStore

# What a training folder holds besides its checkpoints: the id of the MLflow run it reports to, so a resumed training
# goes on in the same run.
RUN_MARKER = "mlflow_run_id"

log = logging.getLogger(__name__)

LOGGED_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                  "logps/rejected", "grad_norm", "learning_rate")


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


def progress_callback() -> Any:
    """Each optimizer step, with the last logged loss, as progress of the stage running in this thread."""
    from transformers import TrainerCallback

    from roleforge.ops.progress import advance

    class StepProgress(TrainerCallback):
        loss: float | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any) -> None:
            self.loss = (logs or {}).get("loss", self.loss)

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            advance(state.global_step, state.max_steps, "steps" if self.loss is None else f"loss {self.loss:.3f}")

    return StepProgress()


def checkpoint_step(checkpoint: Path) -> int:
    """The step in a checkpoint folder's name (checkpoint-N); -1 for a name without one."""
    suffix = checkpoint.name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def complete_checkpoints(output_dir: Path) -> list[tuple[Path, int]]:
    """A training's complete checkpoints with their steps, newest first. The trainer writes trainer_state.json last,
    so a checkpoint without it (or with it unreadable) was cut off mid-write and is passed over."""
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=checkpoint_step, reverse=True) if output_dir.is_dir() else []
    complete = []
    for checkpoint in checkpoints:
        try:
            step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError):
            continue
        if (checkpoint / "adapter_model.safetensors").exists():
            complete.append((checkpoint, int(step)))
    return complete


def resume_point(output_dir: Path) -> tuple[str | None, int | None]:
    """The newest complete checkpoint and its step."""
    complete = complete_checkpoints(output_dir)
    return (str(complete[0][0]), complete[0][1]) if complete else (None, None)


def _open_run(client: Any, experiment: str, output_dir: Path, role: str, dataset: PreferenceDataset, tags: dict[str, str]) -> str:
    """The MLflow run of this training: the one a resumed training started, or a new one."""
    marker = output_dir / RUN_MARKER
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
                  max_parallel: int = 1, engine: str = "roleforge", reference_keep_days: int = KEEP_DAYS) -> Candidate:
    """Train a role's DPO LoRA adapter on its snapshot, on the process's shared base model.

    From scratch, the reference is the base model. With `base_adapter` (the role's SFT adapter), training starts
    from that adapter and uses it as the reference. Checkpoints go under `checkpoints_dir`; a run of the same
    training (same snapshot, recipe and starting point) resumes from the newest complete one. On SIGTERM it writes a
    checkpoint and raises Preempted. `engine` is roleforge's training path (fast_dpo.py) or stock TRL; the former
    takes the reference log-probs of pairs seen by earlier trainings from `checkpoints_dir` (KEPT_REFERENCES), where
    those unused for `reference_keep_days` are dropped.
    """
    from transformers import PrinterCallback

    from roleforge.config.recipes import build_configs
    from roleforge.models.base import BASE_MODELS, check_adapter, compute_dtype, load_tokenizer
    from roleforge.training.preemption import checkpoint_on_shutdown_callback, raise_if_preempted, training_in_progress

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
    callbacks = [mlflow_logging_callback(client, run_id), checkpoint_on_shutdown_callback(), progress_callback()]
    dtype = compute_dtype() if engine == "roleforge" else "float32"
    with (BASE_MODELS.lend(base_model, max_parallel, dtype) as base, training_in_progress(),
          system_metrics(run_id, client.tracking_uri)):
        replay = replayed_base_answers(base, tokenizer, system_prompt, pairs, recipe["data"], base_model, base_adapter,
                                       checkpoints_dir / REPLAY_ANSWERS, open_answers=engine != "trl")
        pairs = pairs + replay
        replay_top_k = int(recipe["data"].get("replay_distill_top_k", 0))
        if engine == "trl":
            if replay and replay_top_k:
                log.info("stock TRL trains on the replayed answers' tokens: data.replay_distill_top_k applies to the "
                         "roleforge engine only")
            trainer = trl_trainer(base, dpo_config, lora_config, base_adapter, tokenizer, pairs, system_prompt, callbacks)
        else:
            trainer = roleforge_trainer(base, dpo_config, lora_config, base_adapter, tokenizer, pairs, system_prompt,
                                        callbacks, output_dir / "reference_logps.json",
                                        ReferenceStore(checkpoints_dir / KEPT_REFERENCES, reference_keep_days),
                                        replay_top_k=replay_top_k)
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
                          cache_dir: Path, open_answers: bool = True) -> list[dict[str, Any]]:
    """The recipe's replay pairs (data.replay_pairs of them): the reference model's own answers to general prompts
    as chosen, the role's shape as rejected. The reference is the base, or the role's SFT adapter on it. Without
    `open_answers` (stock TRL, which ends every completion with end-of-sequence), only finished answers are kept."""
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
        # The same prompts every night, so that their answers come from the cache after the first. Kept to finished
        # answers only (stock TRL), a quarter more prompts than pairs, as before open-ended replay.
        prompts = general_prompts()[:count if open_answers else count + count // 4]
        answers = reference_answers(model.eval(), tokenizer, system_prompt, prompts, REPLAY_MAX_NEW_TOKENS, cache_dir, identity)
    finally:
        if base_adapter is not None:
            model.unload()
    complete = finished(answers, tokenizer, REPLAY_MAX_NEW_TOKENS)
    if not open_answers:
        answers = {prompt: answer for prompt, answer in answers.items() if prompt in complete}
    return replay_pairs(answers, pairs, count, seed=len(pairs), complete=complete)


# The base model finishes few answers to an open question in this many tokens: the rest are replayed open-ended
# (training/replay.py), which keeps the replay at the recipe's count.
REPLAY_MAX_NEW_TOKENS = 96


def _params(recipe: dict[str, dict[str, Any]], dataset: PreferenceDataset, train_pairs: int, base_adapter: Path | None) -> list[Any]:
    from mlflow.entities import Param

    flat = {f"{section}.{key}": value for section, values in recipe.items() for key, value in values.items()}
    flat.update({"dataset.snapshot_hash": dataset.snapshot_hash, "dataset.train_pairs": train_pairs,
                 "base_adapter": str(base_adapter) if base_adapter else "none"})
    return [Param(key, str(value)[:6000]) for key, value in sorted(flat.items())]
