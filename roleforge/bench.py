"""Benchmarks that print JSON: measured on this machine, in one process, never asserted by a timed test."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from roleforge.sample.generate import EXEC_ROLES, exec_rows, tool_agent_rows


def feedback_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` stored-feedback-shaped rows drawn from the sample generators, prompts made unique per batch."""
    rows: list[dict[str, Any]] = []
    batch = 0
    while len(rows) < count:
        rng = random.Random(seed + batch)
        generated = tool_agent_rows(rng) if batch % 4 == 3 else exec_rows(rng, *list(EXEC_ROLES.items())[batch % 3])
        for row in generated:
            kind = "rating" if "rating" in row else "ab"
            rows.append({"id": len(rows) + 1, "kind": kind, "confidence": None, "rating": None, "response": None,
                         "response_a": None, "response_b": None, "preference": None, "rater": None,
                         **row, "prompt": f"{row['prompt']} (#{batch})"})
        batch += 1
    return rows[:count]


def label_benchmark(rows: int, judge_pairs: int, base_model: Path | None) -> dict[str, Any]:
    """Heuristic labeling throughput on `rows` rows; local-judge throughput batched vs one pair at a time."""
    from roleforge.tasks.labelers import comparisons
    from roleforge.tasks.labelers.heuristics import HeuristicLabeler

    data = feedback_rows(rows)
    labeler = HeuristicLabeler(["tool_format", "refusal", "detail"])
    started = time.perf_counter()
    result = labeler.label(data)
    heuristic_seconds = time.perf_counter() - started
    compared = len(result.pairs) + result.abstained
    report: dict[str, Any] = {
        "rows": rows, "heuristic_comparisons": compared, "heuristic_pairs": len(result.pairs),
        "heuristic_seconds": round(heuristic_seconds, 3), "heuristic_rows_per_s": round(rows / heuristic_seconds, 1),
        "heuristic_comparisons_per_s": round(compared / heuristic_seconds, 1),
    }
    if judge_pairs and base_model is not None:
        from roleforge.tasks.labelers.judge import LocalJudge
        from roleforge.tasks.models import load_model, load_tokenizer

        items = [(c.prompt, c.first, c.second) for c in comparisons(data[:2000], 2, include_ab=False)[:judge_pairs]]
        model, tokenizer = load_model(base_model).eval(), load_tokenizer(base_model)
        for batch_size in (1, 8):
            judge = LocalJudge(model, tokenizer, batch_size=batch_size)
            judge.prefer_a("You are the CEO.", items[:1])  # warm-up
            started = time.perf_counter()
            judge.prefer_a("You are the CEO.", items)
            report[f"judge_pairs_per_s_batch_{batch_size}"] = round(len(items) / (time.perf_counter() - started), 3)
        report["judge_pairs"] = len(items)
        report["judge_speedup_batched"] = round(report["judge_pairs_per_s_batch_8"] / report["judge_pairs_per_s_batch_1"], 2)
    return report


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
