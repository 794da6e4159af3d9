"""Human labels: an A/B choice, and two rated responses to the same prompt far enough apart."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from roleforge.data_contracts.preference import PreferencePair
from roleforge.tasks.labelers import LabelResult, mean_by_response, preferred, rated_by_prompt


@dataclass
class HumanChoiceLabeler:
    """A/B rows: the response the user preferred is chosen, with the user's confidence (1.0 when not given)."""

    name: str = "human_choice"

    def label(self, rows: list[dict[str, Any]]) -> LabelResult:
        pairs = []
        for row in rows:
            if row["kind"] != "ab":
                continue
            chosen, rejected = preferred(row)
            pairs.append(PreferencePair(
                role=row["agent_role"], prompt=row["prompt"], chosen=chosen, rejected=rejected, source="human_ab", labeler=self.name,
                confidence=row["confidence"] if row["confidence"] is not None else 1.0, feedback_ids=(row["id"],),
                rater=row["rater"]))
        return LabelResult(pairs=pairs)


@dataclass
class RatingGapLabeler:
    """Rated responses to the same prompt: the higher mean rating is chosen when the gap is at least min_gap and
    the chosen answer's own mean rating is at least min_chosen. A middling answer rated above a bad one is still
    middling: training imitates its chosen answers (the recipe's SFT term, and DPO raises them), so such a pair is
    skipped, and counted."""

    min_gap: int = 2
    min_chosen: float = 1
    name: str = "rating_gap"

    def label(self, rows: list[dict[str, Any]]) -> LabelResult:
        pairs, skipped = [], Counter[str]()
        for (role, prompt), by_response in rated_by_prompt(rows).items():
            means = mean_by_response(by_response)
            for first, second in combinations(sorted(means), 2):
                gap = means[first] - means[second]
                if abs(gap) < self.min_gap:
                    continue
                chosen, rejected = (first, second) if gap > 0 else (second, first)
                if means[chosen] < self.min_chosen:
                    skipped[f"chosen answer rated below {self.min_chosen:g}"] += 1
                    continue
                rated = by_response[first] + by_response[second]
                raters = {r["rater"] for r in rated}
                pairs.append(PreferencePair(
                    role=role, prompt=prompt, chosen=chosen, rejected=rejected, source="rating", labeler=self.name,
                    confidence=min(1.0, abs(gap) / 4), rater=raters.pop() if len(raters) == 1 else None,
                    feedback_ids=tuple(sorted(r["id"] for r in rated))))
        return LabelResult(pairs=pairs, skipped=skipped)
