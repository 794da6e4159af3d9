"""Poisoning guard: a sudden shift in who or what a role's new feedback comes from holds the role back.

The new rows are those stored since the role's last training (all rows before its first). They are compared with
the history (the rows before them): one rater giving most of the new rows, a rater or a source (the producer's
`metadata.source`) whose share jumps against the history, or one prompt repeated across many new rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from roleforge.config.settings import ShiftGuardConfig
from roleforge.validation.results import ContractResult, ExpectationOutcome


def _source(row: dict[str, Any]) -> str | None:
    metadata = row.get("metadata")
    source = metadata.get("source") if isinstance(metadata, dict) else None
    return str(source) if source is not None else None


def _shares(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], str | None]) -> tuple[Counter[str], int]:
    counts = Counter(value for row in rows if (value := key(row)) is not None)
    return counts, sum(counts.values())


def _outcome(name: str, column: str, problems: list[str]) -> ExpectationOutcome:
    return ExpectationOutcome(expectation=name, column=column, success=not problems,
                              unexpected_count=len(problems), examples=problems[:3])


def _share_checks(name: str, new: list[dict[str, Any]], history: list[dict[str, Any]],
                  key: Callable[[dict[str, Any]], str | None], config: ShiftGuardConfig,
                  max_share: float | None) -> list[ExpectationOutcome]:
    counts, total = _shares(new, key)
    if total < config.min_rows:
        return []
    past, past_total = _shares(history, key)
    absolute, shifted = [], []
    for value, count in counts.most_common():
        share = count / total
        if max_share is not None and share > max_share:
            absolute.append(f"{name} {value} gave {share:.0%} of {total} new rows (limit {max_share:.0%})")
        if past_total >= config.min_rows:
            before = past[value] / past_total
            if share - before > config.max_share_shift:
                shifted.append(f"{name} {value}: {share:.0%} of {total} new rows, {before:.0%} of {past_total} before "
                               f"(shift limit {config.max_share_shift:.0%})")
    checks = [_outcome("rows_share_shift", name, shifted)]
    if max_share is not None:
        checks.insert(0, _outcome("rows_share", name, absolute))
    return checks


def shift_guard(role: str, rows: list[dict[str, Any]], watermark: int, config: ShiftGuardConfig) -> ContractResult:
    """Judge a role's rows stored after `watermark` (a feedback id) against the ones before it."""
    new = [row for row in rows if row["id"] > watermark]
    history = [row for row in rows if row["id"] <= watermark]
    checks = [
        *_share_checks("rater", new, history, lambda row: row.get("rater"), config, config.max_rater_share),
        *_share_checks("source", new, history, _source, config, None),
    ]
    repeated = [f"prompt {prompt[:60]!r} is {count} of {len(new)} new rows" for prompt, count in
                Counter(row["prompt"] for row in new).most_common()
                if count > config.min_prompt_repeats and count / len(new) > config.max_prompt_share]
    checks.append(_outcome("prompt_repeats", "prompt", repeated))
    return ContractResult(role=role, rows=len(new), success=all(c.success for c in checks), expectations=checks,
                          name="shift guard")
