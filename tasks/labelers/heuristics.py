"""Heuristic labels: rules that rank two responses when one of them clearly breaks what the role requires.

Rules are tried in order; the first that tells the two responses apart decides, the others are not asked.
When no rule tells them apart, the labeler abstains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roleforge.evaluation.refusals import is_refusal
from roleforge.evaluation.tool_use import check_tool_use
from roleforge.tasks.labelers import Comparison, LabelResult, comparisons

def refusal_rule(first: str, second: str, _: dict[str, Any]) -> bool | None:
    """An answer beats a refusal."""
    a, b = is_refusal(first), is_refusal(second)
    return None if a == b else b


def detail_rule(first: str, second: str, options: dict[str, Any]) -> bool | None:
    """A detailed answer beats a terse one: the shorter is under min_detail_chars and at most half the longer."""
    short, long_ = sorted((len(first.strip()), len(second.strip())))
    if short >= options.get("min_detail_chars", 40) or short * 2 > long_:
        return None
    return len(first.strip()) > len(second.strip())


def tool_format_rule(first: str, second: str, _: dict[str, Any]) -> bool | None:
    """A compliant tool call (Thought line, parseable JSON action, known tool) beats one that is not."""
    a, b = check_tool_use(first).compliant(), check_tool_use(second).compliant()
    return None if a == b else a


def contract_rule(first: str, second: str, options: dict[str, Any]) -> bool | None:
    """An answer that follows the role's output contract beats one that does not; no contract, no verdict."""
    contract = options.get("contract")
    if contract is None or contract.empty:
        return None
    a, b = contract.complies(first), contract.complies(second)
    return None if a == b else a


RULES: dict[str, tuple[Callable[[str, str, dict[str, Any]], bool | None], float]] = {
    "contract": (contract_rule, 0.9),
    "refusal": (refusal_rule, 0.9),
    "tool_format": (tool_format_rule, 0.95),
    "detail": (detail_rule, 0.6),
}


@dataclass
class HeuristicLabeler:
    """Ranks undecided response pairs (and A/B pairs, so disagreements with humans are counted) by rules."""

    rules: list[str] = field(default_factory=lambda: ["refusal", "detail"])
    options: dict[str, Any] = field(default_factory=dict)
    min_gap: int = 2
    name: str = "heuristics"

    def __post_init__(self) -> None:
        unknown = set(self.rules) - set(RULES)
        if unknown:
            raise ValueError(f"unknown heuristic rule(s) {sorted(unknown)}; known: {sorted(RULES)}")

    def judge(self, comparison: Comparison) -> tuple[bool, str, float] | None:
        for rule in self.rules:
            check, confidence = RULES[rule]
            verdict = check(comparison.first, comparison.second, self.options)
            if verdict is not None:
                return verdict, rule, confidence
        return None

    def label(self, rows: list[dict[str, Any]]) -> LabelResult:
        result = LabelResult()
        for comparison in comparisons(rows, self.min_gap, include_ab=True):
            verdict = self.judge(comparison)
            if verdict is None:
                result.abstained += 1
                continue
            first_wins, rule, confidence = verdict
            result.pairs.append(comparison.pair(first_wins, "heuristic", f"{self.name}:{rule}", confidence))
        return result
