"""The DPO loss mix of roleforge's engine, with TRL's definitions of each loss type."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from roleforge.ops.errors import RoleforgeError

SUPPORTED_LOSSES = ("sigmoid", "sft", "ipo", "hinge")


def dpo_losses(loss_types: list[str], weights: list[float], beta: float, policy: tuple[torch.Tensor, torch.Tensor],
               reference: tuple[torch.Tensor, torch.Tensor], chosen_tokens: torch.Tensor) -> torch.Tensor:
    """The weighted loss mix, per pair, with TRL's definitions (sft: mean NLL of the chosen completion tokens)."""
    chosen, rejected = policy
    logits = (chosen - reference[0]) - (rejected - reference[1])
    total = torch.zeros_like(chosen)
    for loss_type, weight in zip(loss_types, weights):
        if loss_type == "sigmoid":
            loss = -F.logsigmoid(beta * logits)
        elif loss_type == "hinge":
            loss = torch.relu(1 - beta * logits)
        elif loss_type == "ipo":
            loss = (logits - 1 / (2 * beta)) ** 2
        else:  # sft
            loss = (-chosen.sum() / chosen_tokens.sum().clamp(min=1)).expand_as(chosen)
        total = total + weight * loss
    return total


def check_losses(dpo: dict[str, Any]) -> tuple[list[str], list[float]]:
    losses = dpo.get("loss_type", ["sigmoid"])
    losses = [losses] if isinstance(losses, str) else list(losses)
    unsupported = [loss for loss in losses if loss not in SUPPORTED_LOSSES]
    if unsupported:
        raise RoleforgeError(f"bad training recipe: loss_type {unsupported} is not supported by the roleforge engine "
                             f"(use {', '.join(SUPPORTED_LOSSES)}, or training.engine = \"trl\")")
    return losses, list(dpo.get("loss_weights") or [1.0] * len(losses))
