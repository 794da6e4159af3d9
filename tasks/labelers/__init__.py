"""Labelers: feedback rows in, preference pairs out, each pair with its source, labeler, confidence and row ids.

Every labeler has the same small interface (`name`, `label(rows) -> LabelResult`), so the label stage can run
any mix of them per role and count what each produced, abstained on, or had to skip.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Protocol

from roleforge.data_contracts.preference import PreferencePair


@dataclass
class LabelResult:
    pairs: list[PreferencePair] = field(default_factory=list)
    abstained: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count: never a pair from a bad verdict

    def extend(self, other: LabelResult) -> None:
        self.pairs.extend(other.pairs)
        self.abstained += other.abstained
        self.skipped.update(other.skipped)


class Labeler(Protocol):
    name: str

    def label(self, rows: list[dict[str, Any]]) -> LabelResult: ...


@dataclass(frozen=True)
class Comparison:
    """Two different responses to the same prompt of the same role, not yet ranked by anyone."""

    role: str
    prompt: str
    first: str
    second: str
    feedback_ids: tuple[int, ...]
    rater: str | None

    def pair(self, first_wins: bool, source: str, labeler: str, confidence: float) -> PreferencePair:
        chosen, rejected = (self.first, self.second) if first_wins else (self.second, self.first)
        return PreferencePair(role=self.role, prompt=self.prompt, chosen=chosen, rejected=rejected, source=source,
                              labeler=labeler, confidence=round(min(max(confidence, 0.0), 1.0), 4),
                              feedback_ids=self.feedback_ids, rater=self.rater)


def preferred(row: dict[str, Any]) -> tuple[str, str]:
    """(chosen, rejected) of an A/B row, as the user chose."""
    if row["preference"] == "a":
        return row["response_a"], row["response_b"]
    return row["response_b"], row["response_a"]


def rated_by_prompt(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, list[dict[str, Any]]]]:
    """Rated rows grouped by (role, prompt), then by response."""
    grouped: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["kind"] == "rating":
            grouped[(row["agent_role"], row["prompt"])][row["response"]].append(row)
    return grouped


def mean_by_response(by_response: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Each distinct response's mean rating."""
    return {response: sum(r["rating"] for r in rated) / len(rated) for response, rated in by_response.items()}


def comparisons(rows: list[dict[str, Any]], min_gap: int, include_ab: bool) -> list[Comparison]:
    """Response pairs that humans left undecided (rated responses closer than min_gap), and optionally the
    A/B pairs too, for labelers that should be checked against human choices."""
    found = []
    for (role, prompt), by_response in rated_by_prompt(rows).items():
        means = mean_by_response(by_response)
        for first, second in combinations(sorted(means), 2):
            if abs(means[first] - means[second]) < min_gap:
                ids = tuple(sorted(x["id"] for x in by_response[first] + by_response[second]))
                found.append(Comparison(role, prompt, first, second, ids, None))
    if include_ab:
        found.extend(Comparison(r["agent_role"], r["prompt"], r["response_a"], r["response_b"], (r["id"],), r["rater"])
                     for r in rows if r["kind"] == "ab")
    return found
