"""A promotion gate the tiny model's candidates pass: its random weights learn too little for the real bounds, and
the tests that use it are about what happens around a promotion, not about the bounds."""

from __future__ import annotations


def open_gate(role: str) -> str:
    """roleforge.toml lines that let any trained candidate of `role` through the gate."""
    return f"""
[roles.{role}.gate]
min_accuracy_gain = -1.0
min_reward_accuracy = 0.0
min_gain_lower_bound = -2.0
min_win_rate_high = 0.0
min_length_ratio = 0.0
max_length_ratio = 1000.0
max_refusal_increase = 1.0
max_capability_loss = 100
"""
