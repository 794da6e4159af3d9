"""Scale-out: Azure ML specs and job polling (offline), the training backend and the promotion mirror."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from roleforge.config.settings import AzureMLSettings
from roleforge.deployments.azure_ml import compute_spec, training_folder, training_job_spec, wait_for_job
from roleforge.ops.errors import Preempted

# The per-role fan-out on a Dask LocalCluster: tests/test_ten_roles.py runs a ten-role night there.


def test_the_low_priority_cluster_scales_to_zero():
    spec = compute_spec(AzureMLSettings(compute="gpu-spot", vm_size="Standard_NC6s_v3", max_instances=3))._to_dict()
    assert spec["tier"] == "low_priority" and spec["min_instances"] == 0 and spec["max_instances"] == 3
    assert spec["name"] == "gpu-spot" and spec["size"] == "Standard_NC6s_v3" and spec["type"] == "amlcompute"


def test_the_training_job_runs_the_same_entry_point_on_the_snapshot(tmp_path: Path):
    snapshot = tmp_path / "datasets" / "cfo" / "abc123"
    snapshot.mkdir(parents=True)
    job = training_job_spec(AzureMLSettings(), "cfo", snapshot, "abc123", "default", "fp01",
                            {"prefect.flow_run_id": "run-9"}, code_dir=Path(__file__).resolve().parents[1])
    spec = job._to_dict()
    command = " ".join(spec["component"]["command"].split())
    assert "roleforge train-job --role cfo --profile default --snapshot ${{inputs.snapshot}}" in command
    assert "--output ${{outputs.result}}" in command and "pip install --quiet -c constraints.txt ." in command
    assert spec["inputs"]["snapshot"]["type"] == "uri_folder" and spec["inputs"]["snapshot"]["path"].endswith("abc123")
    # Checkpoints live in a folder named after the training, so a restarted or resubmitted job resumes there.
    assert spec["outputs"]["result"]["path"] == training_folder("cfo", "abc123", "fp01")
    assert spec["outputs"]["result"]["mode"] == "rw_mount"
    assert spec["compute"] == "azureml:roleforge-lowpri" and spec["environment"]["image"].startswith("mcr.microsoft.com/azureml/")
    assert spec["component"]["tags"] == {"roleforge.role": "cfo", "roleforge.dataset_hash": "abc123", "prefect.flow_run_id": "run-9"}
    text = yaml.safe_dump(spec)
    assert "secret" not in text.lower() and "password" not in text.lower()


class Jobs:
    """jobs.get answers from a script of states, as the service would across polls."""

    def __init__(self, states: list[str]) -> None:
        self.states, self.cancelled = list(states), []

    def get(self, name: str):
        return type("Job", (), {"name": name, "status": self.states.pop(0) if len(self.states) > 1 else self.states[0],
                                "studio_url": "https://ml.azure.invalid/runs/" + name})()

    def begin_cancel(self, name: str) -> None:
        self.cancelled.append(name)


def test_polling_counts_preemption_restarts_and_finishes():
    states = ["NotStarted", "Queued", "Preparing", "Running", "Queued", "Preparing", "Running", "Finalizing", "Completed"]
    assert wait_for_job(Jobs(states), "job-1", max_restarts=2, poll_seconds=0, sleep=lambda _: None) == 1


def test_too_many_preemptions_cancel_the_job_and_raise_preempted():
    jobs = Jobs(["Queued", "Running", "Queued", "Running", "Starting", "Running"])
    with pytest.raises(Preempted, match="preempted 2 times"):
        wait_for_job(jobs, "job-2", max_restarts=1, poll_seconds=0, sleep=lambda _: None)
    assert jobs.cancelled == ["job-2"]


def test_a_failed_job_is_an_error_not_a_retry():
    with pytest.raises(RuntimeError, match="ended Failed") as error:
        wait_for_job(Jobs(["Queued", "Running", "Failed"]), "job-3", max_restarts=5, poll_seconds=0, sleep=lambda _: None)
    assert not isinstance(error.value, Preempted)


def test_a_promoted_adapter_is_mirrored_as_an_azure_ml_model_with_its_lineage(tmp_path: Path):
    from roleforge.deployments.azure_ml import mirror_promotion, model_spec

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    spec = model_spec("cfo", "7", adapter, {"roleforge.dataset_hash": "abc123"})._to_dict()
    assert (spec["name"], spec["version"], spec["type"]) == ("roleforge-cfo", "7", "custom_model")
    assert spec["path"].endswith("adapter")
    assert spec["tags"] == {"roleforge.role": "cfo", "roleforge.champion": "true", "roleforge.dataset_hash": "abc123"}

    class Models:
        created: list = []

        def create_or_update(self, model):
            self.created.append(model)
            return type("Created", (), {"id": f"azureml:{model.name}:{model.version}"})()

    client = type("Client", (), {"models": Models()})()
    assert mirror_promotion(AzureMLSettings(mirror_promotions=True), "cfo", "7", adapter, {}, client) == "azureml:roleforge-cfo:7"
    assert Models.created[0].name == "roleforge-cfo"


def test_settings_choose_the_training_backend_and_the_promotion_mirror(tmp_path: Path):
    from roleforge.config.settings import Settings
    from roleforge.deployments.azure_ml import AzureMLTraining
    from roleforge.registry.mirror import promotion_mirror
    from roleforge.training.backends import LocalTraining, training_backend

    assert isinstance(training_backend(Settings(home=tmp_path)), LocalTraining)
    assert isinstance(training_backend(Settings(home=tmp_path, training={"backend": "azure_ml"})), AzureMLTraining)
    assert promotion_mirror(Settings(home=tmp_path)) is None
    assert callable(promotion_mirror(Settings(home=tmp_path, azure_ml={"mirror_promotions": True})))


def test_the_train_stage_trains_with_the_backend_it_is_given(home: Path):
    from prefect.logging import disable_run_logger

    from roleforge.ops.status import read_training_status
    from roleforge.storage.snapshots import PreferenceDataset
    from roleforge.tasks.train import train_role_adapter
    from roleforge.training.candidate import Candidate

    dataset = PreferenceDataset(role="cfo", snapshot_hash="abc", path=str(home / "datasets"), train_pairs=16,
                                held_out_pairs=4, by_source={}, conflicts=0)
    asked = []

    def backend(dataset, profile, client, experiment, tags):
        asked.append((dataset.role, profile))
        return Candidate(role=dataset.role, adapter_path=str(home / "adapter"), mlflow_experiment_id=experiment,
                         mlflow_run_id="run", snapshot_hash=dataset.snapshot_hash, dataset_path=dataset.path,
                         train_pairs=16, steps=4, resumed_from_step=None, train_seconds=1.0, train_metrics={})

    with disable_run_logger():
        candidate = train_role_adapter.fn(dataset, "quick", backend)
    assert asked == [("cfo", "quick")] and candidate.mlflow_run_id == "run"
    assert read_training_status(home, "cfo")["state"] == "ready"
