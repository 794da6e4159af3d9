"""DPO training on the tiny model: LoRA weights move, base weights do not, and training resumes from checkpoints."""

from pathlib import Path

import pytest
from safetensors.torch import load_file

from roleforge.tasks.errors import RoleforgeError
from roleforge.tasks.label import build_dataset
from roleforge.tasks.recipes import build_configs, role_recipe
from roleforge.tasks.settings import LabelingConfig, load_settings
from roleforge.tasks.tracking import experiment_id, mlflow_client
from roleforge.tasks.train import train_adapter

RECIPE_OVERRIDES = {"dpo": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "learning_rate": 0.01, "save_steps": 2},
                    "data": {"max_train_pairs": 16}}


def dataset(tmp_path: Path):
    rows = [{"id": i, "agent_role": "tool-agent", "kind": "ab", "prompt": f"What is {i} times 7?", "rater": None,
             "response_a": f'Thought: use the calculator.\nAction:\n```json\n{{"tool": "calculator", "args": {{"expression": "{i} * 7"}}}}\n```',
             "response_b": "I cannot help with that.", "preference": "a", "confidence": None} for i in range(40)]
    return build_dataset(rows, "tool-agent", LabelingConfig(), 0.2, 4, tmp_path / "datasets")


def train(home: Path, tiny_model_dir: Path, overrides=RECIPE_OVERRIDES):
    settings = load_settings()
    client = mlflow_client(settings.resolved_tracking_uri)
    return train_adapter(dataset(home), "You are a tool agent.", role_recipe("quick", overrides), tiny_model_dir,
                         home / "checkpoints", home / "adapters", client, experiment_id(client, home / "mlartifacts"))


def test_lora_moves_and_base_stays(home, tiny_model_dir):
    candidate = train(home, tiny_model_dir)
    adapter = load_file(Path(candidate.adapter_path) / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero: training must move it"
    assert all("lora_" in name for name in adapter), "only LoRA weights train: the base model stays frozen"
    client = mlflow_client(load_settings().resolved_tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(candidate.mlflow_run_id)}
    assert {"adapter", "training_curve.png"} <= artifacts
    run = client.get_run(candidate.mlflow_run_id)
    assert run.data.tags["roleforge.dataset_hash"] == candidate.snapshot_hash
    assert "loss" in run.data.metrics and run.data.params["dpo.beta"] == "0.1"
    assert candidate.resumed_from_step is None and candidate.steps == 4


def test_a_restart_resumes_from_the_newest_complete_checkpoint(home, tiny_model_dir):
    first = train(home, tiny_model_dir)
    (output_dir,) = (home / "checkpoints" / "tool-agent").iterdir()
    # As if the process died after checkpoint-2 while checkpoint-4 was being written: no trainer_state.json yet.
    (output_dir / "checkpoint-4" / "trainer_state.json").unlink()
    second = train(home, tiny_model_dir)
    assert (second.resumed_from_step, second.steps) == (2, 4)
    assert second.mlflow_run_id == first.mlflow_run_id, "a resumed training continues its MLflow run"


def test_bad_recipe_fails_before_compute():
    with pytest.raises(RoleforgeError, match="bad training recipe"):
        build_configs(role_recipe("quick", {"dpo": {"not_a_field": 1}}), "/tmp/unused")
    with pytest.raises(RoleforgeError, match="unknown recipe section"):
        role_recipe("quick", {"optimizer": {}})
