"""Training recipes: a profile's TRL DPOConfig and PEFT LoraConfig fields, with a role's overrides on top.

A recipe passes through whole to TRL and PEFT; it is validated by building those config objects at start-up,
so that a bad field fails before any compute is spent.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from roleforge.ops.errors import RoleforgeError

# What a LoRA adapter may adapt: the attention projections, or every linear layer of a block.
LORA_TARGETS = {"attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
                "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
LORA_DEFAULTS: dict[str, Any] = {
    "r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": LORA_TARGETS["attention"],
    "task_type": "CAUSAL_LM",
}
DPO_DEFAULTS: dict[str, Any] = {
    "beta": 0.1, "loss_type": ["sigmoid"], "learning_rate": 5e-5, "lr_scheduler_type": "constant",
    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "max_length": 256,
    "activation_checkpointing": False, "logging_steps": 1, "save_steps": 10, "save_total_limit": 2, "seed": 0,
    # The reference (the base with adapters off) never changes: score it once instead of every step.
    "precompute_ref_log_probs": True, "precompute_ref_batch_size": 16,
}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # A few minutes for the whole sample on two CPU cores: a short look at the data.
    "quick": {"dpo": {**DPO_DEFAULTS, "num_train_epochs": 1, "learning_rate": 2e-4}, "lora": LORA_DEFAULTS,
              "data": {"max_train_pairs": 32, "max_eval_pairs": 32}},
    # The nightly recipe, for any role: DPO moves the implicit reward long before it moves what the model writes, so
    # an SFT term on the chosen answers teaches the role's answer shape; replay of the base model's own answers to
    # general prompts keeps that shape to the role's questions; distilled, it leaves room for 3e-4 under the drift
    # limit (docs/engine.md, "Learning the role without forgetting", has the runs behind both).
    # A step's 8 pairs go through in two micro-batches of 4: the same update, 2.3 GB less at the peak, as fast
    # (docs/perf-notes.md, "Training memory").
    "default": {"dpo": {**DPO_DEFAULTS, "num_train_epochs": 2, "learning_rate": 3e-4, "loss_type": ["sigmoid", "sft"],
                        "loss_weights": [1.0, 1.0], "save_steps": 40, "per_device_train_batch_size": 4,
                        "gradient_accumulation_steps": 2},
                # LoRA on the MLP too: on attention alone the role's shape stayed half-learnt (docs/engine.md).
                "lora": {**LORA_DEFAULTS, "target_modules": LORA_TARGETS["all-linear"]},
                # Replay by distillation: the base's whole next-token distribution on its own answers, not its
                # greedy tokens alone, which sharpened the adapter away from the base (docs/engine.md).
                "data": {"max_train_pairs": 192, "max_eval_pairs": 64, "replay_pairs": 192, "replay_distill_top_k": 16}},
}

# A profile's recipe for one built-in role, under the role's own overrides. The tool agent should answer every
# request with a tool call, a plain question included (with a search): no replay of the base model's prose, and a
# higher learning rate for its strict format, and more pairs: each kind of arithmetic needs its own examples.
ROLE_PROFILES: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("default", "tool-agent"): {"dpo": {"learning_rate": 5e-4, "save_steps": 20},
                                "data": {"replay_pairs": 0, "max_train_pairs": 480}},
}

DATA_FIELDS = {"max_train_pairs", "max_eval_pairs", "replay_pairs", "replay_distill_top_k"}

# (section, field, lowest, highest, lowest allowed itself): values outside fail before any compute is spent.
RANGES: list[tuple[str, str, float, float, bool]] = [
    ("dpo", "beta", 0.0, 100.0, False),
    ("dpo", "learning_rate", 0.0, 1.0, False),
    ("dpo", "num_train_epochs", 0.0, 1000.0, False),
    ("dpo", "per_device_train_batch_size", 1, 4096, True),
    ("dpo", "gradient_accumulation_steps", 1, 4096, True),
    ("dpo", "max_length", 8, 1_000_000, True),
    ("dpo", "save_steps", 1, 1_000_000, True),
    ("lora", "r", 1, 4096, True),
    ("lora", "lora_alpha", 0.0, 1e6, False),
    ("lora", "lora_dropout", 0.0, 1.0, True),
    ("data", "max_train_pairs", 1, 10_000_000, True),
    ("data", "max_eval_pairs", 1, 10_000_000, True),
    ("data", "replay_pairs", 0, 10_000_000, True),
    ("data", "replay_distill_top_k", 0, 1024, True),
]


def role_recipe(profile: str, overrides: dict[str, dict[str, Any]], role: str | None = None) -> dict[str, dict[str, Any]]:
    """The profile's recipe (with its defaults for `role`, if any) and the role's overrides merged in, section by section."""
    if profile not in PROFILES:
        raise RoleforgeError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    unknown_sections = set(overrides) - {"dpo", "lora", "data"}
    if unknown_sections:
        raise RoleforgeError(f"unknown recipe section(s) {sorted(unknown_sections)}: use dpo, lora or data")
    recipe = copy.deepcopy(PROFILES[profile])
    for section, values in [*ROLE_PROFILES.get((profile, role or ""), {}).items(), *overrides.items()]:
        recipe[section].update(values)
    unknown_data = set(recipe["data"]) - DATA_FIELDS
    if unknown_data:
        raise RoleforgeError(f"unknown data field(s) {sorted(unknown_data)}: use {sorted(DATA_FIELDS)}")
    check_ranges(recipe)
    return recipe


def check_ranges(recipe: dict[str, dict[str, Any]]) -> None:
    """Hyperparameters in range, and a loss mix whose weights match its losses."""
    for section, field, low, high, low_included in RANGES:
        value = recipe[section].get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RoleforgeError(f"bad training recipe: {section}.{field} must be a number, got {value!r}")
        if not (low <= value if low_included else low < value) or value > high or (field == "lora_dropout" and value >= 1):
            bound = "[" if low_included else "("
            raise RoleforgeError(f"bad training recipe: {section}.{field} = {value} is out of range {bound}{low}, {high}]")
    losses = recipe["dpo"].get("loss_type", ["sigmoid"])
    losses = [losses] if isinstance(losses, str) else list(losses)
    weights = recipe["dpo"].get("loss_weights")
    if not losses:
        raise RoleforgeError("bad training recipe: dpo.loss_type is empty")
    if weights is not None and (len(weights) != len(losses) or any(w < 0 for w in weights)):
        raise RoleforgeError(f"bad training recipe: dpo.loss_weights {weights} must be {len(losses)} non-negative "
                             f"number(s), one per loss in {losses}")


def build_configs(recipe: dict[str, dict[str, Any]], output_dir: str) -> tuple[Any, Any]:
    """TRL's DPOConfig and PEFT's LoraConfig for a recipe; a bad field is a one-line error."""
    from peft import LoraConfig
    from trl import DPOConfig

    try:
        lora = LoraConfig(**recipe["lora"])
        # A progress bar in a terminal; none in logs and CI.
        machine = {"report_to": "none", "save_strategy": "steps", "remove_unused_columns": False,
                   "disable_tqdm": not sys.stderr.isatty(),
                   "use_cpu": not has_accelerator(), "bf16": bf16_supported()}
        dpo = DPOConfig(output_dir=output_dir, **{**machine, **recipe["dpo"]})
    except (TypeError, ValueError) as error:
        raise RoleforgeError(f"bad training recipe: {str(error).splitlines()[0]}") from error
    return dpo, lora


def check_recipes(settings: Any, roles: list[str], profile: str) -> None:
    """Builds each role's recipe as its training will, so that a bad value or a misspelt field (`learning_rte`) is a
    one-line error before the night starts, not when the role's turn to train comes (or never, while it has no
    feedback). TRL's own check of a DPO field's name needs DPOConfig, which the night's training imports anyway."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="roleforge-recipe-") as scratch:
        for role in roles:
            try:
                build_configs(role_recipe(profile, settings.role_training(role), role), scratch)
            except RoleforgeError as error:
                raise RoleforgeError(f"[roles.{role}.training]: {error}") from None


def has_accelerator() -> bool:
    """A CUDA device to train on."""
    import torch

    return torch.cuda.is_available()


def bf16_supported() -> bool:
    """bf16 math in hardware: a recent GPU, or a CPU with AVX512-BF16/AMX."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
