"""The space `roleforge tune` searches: Optuna distributions, and a trial's draw turned into recipe overrides."""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial

from roleforge.config.recipes import LORA_TARGETS

# What a trial may draw. `sft_weight` is drawn only when `sft` is (a conditional parameter): without the SFT term
# the loss is DPO's sigmoid alone. Replay and LoRA rank are categorical: their values are steps, not a scale.
SEARCH_SPACE: dict[str, BaseDistribution] = {
    "learning_rate": FloatDistribution(5e-5, 1e-3, log=True),
    "num_train_epochs": IntDistribution(1, 3),
    "beta": FloatDistribution(0.05, 0.5, log=True),
    "sft": CategoricalDistribution([False, True]),
    "sft_weight": FloatDistribution(0.25, 1.5),
    "replay_pairs": CategoricalDistribution([0, 48, 96, 192]),
    "replay_distill_top_k": CategoricalDistribution([0, 16]),
    "lora_r": CategoricalDistribution([8, 16, 32]),
    "lora_targets": CategoricalDistribution(["attention", "all-linear"]),
}


def draw(trial: Any, name: str) -> Any:
    """A trial's value of one parameter of SEARCH_SPACE, through the trial's public suggest_* methods (an Optuna
    Trial, or a FixedTrial that replays given values)."""
    space = SEARCH_SPACE[name]
    if isinstance(space, CategoricalDistribution):
        return trial.suggest_categorical(name, space.choices)
    if isinstance(space, IntDistribution):
        return trial.suggest_int(name, space.low, space.high, log=space.log)
    return trial.suggest_float(name, space.low, space.high, log=space.log)


def trial_overrides(trial: Any) -> dict[str, dict[str, Any]]:
    """A trial's draw as recipe overrides (sections dpo, lora, data), the shape role_recipe takes."""
    rank = draw(trial, "lora_r")
    # The weights always come with the losses: a role whose recipe mixes in SFT (the tool agent's) must not keep a
    # weight for a loss the trial dropped.
    if draw(trial, "sft"):
        losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, draw(trial, "sft_weight")]}
    else:
        losses = {"loss_type": ["sigmoid"], "loss_weights": [1.0]}
    return {
        "dpo": {"learning_rate": draw(trial, "learning_rate"), "num_train_epochs": draw(trial, "num_train_epochs"),
                "beta": draw(trial, "beta"), **losses},
        "lora": {"r": rank, "lora_alpha": 2 * rank, "target_modules": LORA_TARGETS[draw(trial, "lora_targets")]},
        "data": {"replay_pairs": draw(trial, "replay_pairs"), "replay_distill_top_k": draw(trial, "replay_distill_top_k")},
    }


def space_corners() -> list[dict[str, dict[str, Any]]]:
    """The overrides at the two ends of the space (every parameter at its lowest, without the SFT term; at its
    highest, with it): a tune checks that both make valid recipes before it trains anything."""

    def end(at: int) -> dict[str, Any]:
        return {name: space.choices[at] if isinstance(space, CategoricalDistribution) else (space.low, space.high)[at]
                for name, space in SEARCH_SPACE.items()}

    return [trial_overrides(FixedTrial(end(0))), trial_overrides(FixedTrial(end(-1)))]
