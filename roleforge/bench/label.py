"""`roleforge bench label`: heuristic labeling throughput, and the local judge batched against one pair at a time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from roleforge.bench.common import feedback_rows


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
        from roleforge.models.base import load_model, load_tokenizer
        from roleforge.tasks.labelers.judge import LocalJudge

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
