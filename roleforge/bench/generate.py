"""`roleforge bench generate`: greedy generation batched against one prompt at a time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from roleforge.bench.common import feedback_rows


def generate_benchmark(base_model: Path, prompts: int, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """New tokens/s of greedy generation on held-out prompts: batched (batch_size prompts per call) vs one prompt at
    a time, on the same model and prompts, single first. The answers must be the same either way."""
    from roleforge.config.settings import DEFAULT_ROLES
    from roleforge.models.base import load_model, load_tokenizer
    from roleforge.models.generation import generate_answers

    questions = [row["prompt"] for row in feedback_rows(prompts * 3, seed=7)][::3][:prompts]
    system_prompt = DEFAULT_ROLES["ceo"].system_prompt
    model, tokenizer = load_model(base_model).eval(), load_tokenizer(base_model)
    generate_answers(model, tokenizer, system_prompt, questions[:2], 4, 2)  # warm-up: first-call allocations
    results = {}
    for name, size in (("single", 1), ("batched", batch_size)):
        counts: list[int] = []
        started = time.perf_counter()
        answers = generate_answers(model, tokenizer, system_prompt, questions, max_new_tokens, size, counts)
        seconds = time.perf_counter() - started
        results[name] = {"answers": answers, "tokens": sum(counts), "seconds": seconds}
    same = sum(a == b for a, b in zip(results["single"]["answers"], results["batched"]["answers"]))
    rate = {name: r["tokens"] / r["seconds"] for name, r in results.items()}
    return {
        "prompts": prompts, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
        "single_new_tokens": results["single"]["tokens"], "batched_new_tokens": results["batched"]["tokens"],
        "single_seconds": round(results["single"]["seconds"], 2), "batched_seconds": round(results["batched"]["seconds"], 2),
        "single_new_tokens_per_s": round(rate["single"], 1), "batched_new_tokens_per_s": round(rate["batched"], 1),
        "speedup": round(rate["batched"] / rate["single"], 2), "same_answers": same,
    }
