"""Scoring a model on preference pairs: log-probs of completions, preference and implicit-reward accuracy.
Free of orchestration imports (evaluation, benchmarks)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ModelScore(BaseModel):
    """How one model ranks the held-out pairs."""

    preference_accuracy: float  # share of pairs where the model's mean token log-prob favours chosen
    reward_accuracy: float | None  # share where the implicit DPO reward (log-ratio to base) favours chosen
    reward_margin: float | None  # mean implicit reward of chosen minus rejected (nats per sequence)


def completion_logps(model: Any, tokenizer: Any, prompts: list[str], completions: list[str], batch_size: int = 8) -> list[tuple[float, int]]:
    """(sum of log-probs, token count) of each completion given its prompt; logits only for completion tokens."""
    import torch

    from roleforge.models.base import inference_autocast
    from roleforge.training.dpo_batches import pad_sequences
    from roleforge.training.preemption import stop_if_shutdown
    from roleforge.training.sequence_logps import sequence_logps

    results: list[tuple[float, int]] = []
    for start in range(0, len(prompts), batch_size):
        stop_if_shutdown("scoring pairs")
        prompt_ids = tokenizer(prompts[start:start + batch_size], add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completions[start:start + batch_size], add_special_tokens=False)["input_ids"]
        batch = pad_sequences([p + c for p, c in zip(prompt_ids, completion_ids)], [len(p) for p in prompt_ids],
                              tokenizer.pad_token_id)
        batch = {key: value.to(model.device) for key, value in batch.items()}
        with torch.no_grad(), inference_autocast():
            sums, counts = sequence_logps(model, None, batch)
        results.extend((float(total), int(count)) for total, count in zip(sums.tolist(), counts.tolist()))
    return results


def pair_correct(chosen: list[tuple[float, int]], rejected: list[tuple[float, int]]) -> list[float]:
    """1.0 for each pair whose mean token log-prob favours chosen, else 0.0."""
    return [float(c / max(nc, 1) > r / max(nr, 1)) for (c, nc), (r, nr) in zip(chosen, rejected)]


def score(chosen: list[tuple[float, int]], rejected: list[tuple[float, int]],
          ref_chosen: list[tuple[float, int]] | None, ref_rejected: list[tuple[float, int]] | None) -> ModelScore:
    """Preference accuracy from a model's own log-probs, and DPO reward accuracy/margin against a reference."""
    n = len(chosen)
    accuracy = sum(pair_correct(chosen, rejected)) / n
    if ref_chosen is None or ref_rejected is None:
        return ModelScore(preference_accuracy=accuracy, reward_accuracy=None, reward_margin=None)
    margins = [(c - rc) - (r - rr) for (c, _), (r, _), (rc, _), (rr, _) in zip(chosen, rejected, ref_chosen, ref_rejected)]
    return ModelScore(preference_accuracy=accuracy, reward_accuracy=sum(m > 0 for m in margins) / n, reward_margin=sum(margins) / n)
