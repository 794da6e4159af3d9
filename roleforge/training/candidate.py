"""What a training produces, whatever ran it: a `Candidate` adapter, and the fingerprint that names a training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel


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
    # training under the same reference (roleforge/training/reference_store.py). None for stock TRL, which computes its
    # own.
    reference_pairs_computed: int | None = None
    replay_pairs: int = 0  # general prompts with the base model's own answers, trained on beside train_pairs


def recipe_fingerprint(recipe: dict[str, Any], base_model: Path, base_adapter: Path | None = None) -> str:
    """Names one training: a checkpoint is resumed only by a training with the same recipe and starting point."""
    return hashlib.sha256(json.dumps([recipe, str(base_model), str(base_adapter or "")], sort_keys=True,
                                     default=str).encode()).hexdigest()[:12]
