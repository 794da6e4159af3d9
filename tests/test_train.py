"""DPO training on the tiny model: LoRA weights move, base weights do not, and training resumes from checkpoints."""

from pathlib import Path

import pytest
from safetensors.torch import load_file

from roleforge.config.recipes import build_configs, role_recipe
from roleforge.config.settings import LabelingConfig, load_settings
from roleforge.ops.errors import RoleforgeError
from roleforge.registry.tracking import experiment_id, mlflow_client
from roleforge.tasks.label import build_dataset
from roleforge.training.local import train_adapter

RECIPE_OVERRIDES = {"dpo": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "learning_rate": 0.01, "save_steps": 2},
                    "data": {"max_train_pairs": 16}}


def dataset(tmp_path: Path):
    rows = [{"id": i, "agent_role": "tool-agent", "kind": "ab", "prompt": f"What is {i} times 7?", "rater": None,
             "response_a": f'Thought: use the calculator.\nAction:\n```json\n{{"tool": "calculator", "args": {{"expression": "{i} * 7"}}}}\n```',
             "response_b": "I cannot help with that.", "preference": "a", "confidence": None} for i in range(40)]
    return build_dataset(rows, "tool-agent", LabelingConfig(), 0.2, 4, tmp_path / "datasets")


def train(home: Path, tiny_model_dir: Path, overrides=RECIPE_OVERRIDES, **options):
    settings = load_settings()
    client = mlflow_client(settings.resolved_tracking_uri)
    return train_adapter(dataset(home), "You are a tool agent.", role_recipe("quick", overrides), tiny_model_dir,
                         home / "checkpoints", home / "adapters", client, experiment_id(client, home / "mlartifacts"), **options)


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


def base_fingerprint(model) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def test_roles_train_in_turn_on_one_base_model_that_stays_plain(home, tiny_model_dir):
    from roleforge.models.base import BASE_MODELS, compute_dtype, is_clean

    loads = BASE_MODELS.loads
    first = train(home, tiny_model_dir)
    with BASE_MODELS.lend(tiny_model_dir, dtype=compute_dtype()) as base:
        shared, before = base, base_fingerprint(base)
        assert is_clean(base) and "forward" not in base.__dict__
    second = train(home, tiny_model_dir, {**RECIPE_OVERRIDES, "dpo": {**RECIPE_OVERRIDES["dpo"], "beta": 0.2}})
    with BASE_MODELS.lend(tiny_model_dir, dtype=compute_dtype()) as base:
        assert base is shared and is_clean(base) and base_fingerprint(base) == before
    assert BASE_MODELS.loads - loads <= 1, "the base model is read from disk once per process"
    assert first.adapter_path != second.adapter_path


def make_sft_adapter(tiny_model_dir: Path, target: Path, r: int = 4) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from roleforge.models.base import load_model

    torch.manual_seed(1)
    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=r, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                                   init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(str(target), safe_serialization=True)
    return target


def test_dpo_on_top_of_an_sft_adapter_starts_from_it_and_uses_it_as_reference(home, tiny_model_dir, tmp_path):
    sft = make_sft_adapter(tiny_model_dir, tmp_path / "sft")
    candidate = train(home, tiny_model_dir, base_adapter=sft)
    adapter = load_file(Path(candidate.adapter_path) / "adapter_model.safetensors")
    sft_weights = load_file(sft / "adapter_model.safetensors")
    assert set(adapter) == set(sft_weights), "the new adapter has the SFT adapter's shape (r=4 on q/v), no 'ref' copy"
    assert any(not (adapter[k] == sft_weights[k]).all() for k in adapter), "training moved it away from the SFT weights"
    client = mlflow_client(load_settings().resolved_tracking_uri)
    first_step = {m.step: m.value for m in client.get_metric_history(candidate.mlflow_run_id, "rewards_chosen")}[1]
    # Step 1 scores the untouched SFT policy against its reference: a zero reward only if the SFT adapter is that
    # reference (against the bare base model the random SFT weights would give a clearly non-zero reward).
    assert abs(first_step) < 5e-3
    assert client.get_run(candidate.mlflow_run_id).data.params["base_adapter"] == str(sft)


def test_bad_base_adapters_fail_before_compute(home, tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    with pytest.raises(RoleforgeError, match="does not exist"):
        train(home, tiny_model_dir, base_adapter=tmp_path / "missing")
    wrong = make_sft_adapter(tiny_model_dir, tmp_path / "wrong")
    name = next(k for k in load_file(wrong / "adapter_model.safetensors") if "lora_A" in k)
    save_file({name: torch.zeros(4, 99)}, str(wrong / "adapter_model.safetensors"))  # made for another model's width
    with pytest.raises(RoleforgeError, match="does not match the base model"):
        train(home, tiny_model_dir, base_adapter=wrong)
    assert not (home / "checkpoints").exists(), "nothing was trained"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"dpo": {"beta": 0}}, r"dpo.beta = 0 is out of range \(0.0, 100.0\]"),
    ({"dpo": {"learning_rate": -1e-4}}, "dpo.learning_rate"),
    ({"lora": {"r": 0}}, r"lora.r = 0 is out of range \[1"),
    ({"lora": {"lora_dropout": 1.0}}, "lora.lora_dropout"),
    ({"dpo": {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}}, "loss_weights"),
    ({"dpo": {"per_device_train_batch_size": "eight"}}, "must be a number"),
])
def test_hyperparameters_out_of_range_are_one_line_errors(overrides, message):
    with pytest.raises(RoleforgeError, match=message):
        role_recipe("quick", overrides)


def test_too_few_pairs_fail_before_compute(home, tiny_model_dir):
    with pytest.raises(RoleforgeError, match="fewer than the 1000 it needs"):
        train(home, tiny_model_dir, min_pairs=1000)


def test_sigterm_writes_a_checkpoint_and_a_rerun_resumes_from_it(home, tiny_model_dir, monkeypatch):
    import os
    import signal

    from transformers import TrainerCallback

    from roleforge.ops.errors import Preempted
    from roleforge.training import local, preemption

    long_run = {"dpo": {**RECIPE_OVERRIDES["dpo"], "per_device_train_batch_size": 1, "save_steps": 1000}, "data": {"max_train_pairs": 32}}

    class EvictAtStepTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **_):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # what a spot eviction notice does

    with monkeypatch.context() as patched:
        patched.setattr(local, "progress_callback", EvictAtStepTwo)
        try:
            with pytest.raises(Preempted, match="checkpoint at step"):
                train(home, tiny_model_dir, long_run)
        finally:
            preemption.reset()
    (output_dir,) = (home / "checkpoints" / "tool-agent").iterdir()
    (checkpoint,) = output_dir.glob("checkpoint-*")  # save_steps is 1000: only the eviction wrote one
    stopped_at = int(checkpoint.name.split("-")[1])
    resumed = train(home, tiny_model_dir, long_run)
    assert resumed.resumed_from_step == stopped_at and 0 < stopped_at < resumed.steps


def test_sigterm_stops_answer_generation_and_reference_scoring_at_their_next_step(tiny_model_dir):
    """Work with nothing to checkpoint stops at once, not at the next training step minutes later."""
    from roleforge.models.base import load_model, load_tokenizer
    from roleforge.models.generation import generate_answers
    from roleforge.ops.errors import Preempted
    from roleforge.training import preemption
    from roleforge.training.dpo_batches import tokenize_pairs
    from roleforge.training.fast_dpo import reference_logps

    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    assert generate_answers(model, tokenizer, "You help.", ["Hi?"], max_new_tokens=4) != []
    preemption.request_shutdown()
    try:
        with pytest.raises(Preempted, match="while generating answers"):
            generate_answers(model, tokenizer, "You help.", ["Hi?"], max_new_tokens=4)
        prefix, examples = tokenize_pairs(tokenizer, "You help.", [{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No."}], 64)
        with pytest.raises(Preempted, match="while scoring the reference"):
            reference_logps(model, prefix, examples, tokenizer.pad_token_id)
    finally:
        preemption.reset()


def test_preemption_and_code_errors_have_separate_retry_budgets():
    from roleforge.ops.errors import Preempted
    from roleforge.ops.retries import RetryPolicy
    from roleforge.training import preemption

    class Failed:
        def __init__(self, error):
            self.error = error

        def result(self):
            raise self.error

    class Run:
        id = "run-1"

    policy = RetryPolicy(lambda: {"preempted": 3, "transient": 1})
    assert [policy(None, Run(), Failed(Preempted("evicted"))) for _ in range(4)] == [True, True, True, False]
    assert [policy(None, Run(), Failed(OSError("database is locked"))) for _ in range(2)] == [True, False]
    assert policy(None, Run(), Failed(ValueError("a bug"))) is False, "code errors fail fast"
    preemption.request_shutdown()
    try:
        other = type("Other", (), {"id": "run-2"})()
        assert policy(None, other, Failed(Preempted("evicted"))) is False, "a process going away does not retry itself"
        assert policy(None, other, Failed(OSError("database is locked"))) is False
    finally:
        preemption.reset()


def test_a_gpu_with_bf16_trains_in_bf16(monkeypatch):
    """On a CUDA machine the bf16 decision comes from the GPU (this path never runs on the CPU-only CI machine)."""
    import torch

    from roleforge.config.recipes import bf16_supported

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for answer in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, answer=answer, **kwargs: answer)
        assert bf16_supported() is answer


def test_a_later_training_takes_the_reference_log_probs_it_has_seen_from_the_earlier_one(home, tiny_model_dir, monkeypatch):
    import json

    from roleforge.training import fast_dpo

    real, computed = fast_dpo.reference_logps, []

    def counted(model, prefix, examples, *args, **kwargs):
        computed.append(len(examples))
        return real(model, prefix, examples, *args, **kwargs)

    monkeypatch.setattr(fast_dpo, "reference_logps", counted)
    assert train(home, tiny_model_dir).reference_pairs_computed == 16 and computed == [16]
    # Another recipe on the same pairs: a new training (its own checkpoints), the same reference.
    later = train(home, tiny_model_dir, {**RECIPE_OVERRIDES, "dpo": {**RECIPE_OVERRIDES["dpo"], "learning_rate": 0.02}})
    assert computed == [16], "no pair's reference log-probs were computed a second time"
    assert later.reference_pairs_computed == 0 and later.train_pairs == 16
    first, second = (json.loads(path.read_text())["logps"]
                     for path in sorted((home / "checkpoints" / "tool-agent").glob("*/reference_logps.json")))
    assert sorted(first) == sorted(second) and len(first) == 16


def test_one_classifier_decides_what_every_stage_retries():
    from roleforge.ops.errors import Preempted
    from roleforge.ops.retries import retry_kind, retry_transient

    class Failed:
        def __init__(self, error):
            self.error = error

        def result(self):
            raise self.error

    assert [retry_kind(error) for error in (Preempted("evicted"), OSError("Database is locked"), ValueError("a bug"))] == [
        "preempted", "transient", None]
    assert retry_transient(None, None, Failed(OSError("connection refused")))
    assert not retry_transient(None, None, Failed(KeyError("a bug"))) and not retry_transient(None, None, type(
        "Completed", (), {"result": lambda self: 1})())
    from roleforge.training import preemption

    preemption.request_shutdown()
    try:  # a process on its way out retries nothing: the next run asks for the work again
        assert not retry_transient(None, None, Failed(Preempted("evicted")))
        assert not retry_transient(None, None, Failed(OSError("connection refused")))
    finally:
        preemption.reset()
