"""Retained capability: general questions both models answer, each checked by accepted words or a rule, and the
guardrails (refusals, answer length, capability) that hold back a candidate which wins preferences by breaking
something else. A capability loss counts only when the paired outcomes make it unlikely to be noise."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, computed_field
from scipy.stats import binomtest

from roleforge.evaluation.refusals import is_refusal
from roleforge.ops.errors import RoleforgeError
from roleforge.sample import CAPABILITIES


def answers_correctly(answer: str, accepted: list[str]) -> bool:
    """Whether any accepted answer occurs in the answer as a whole word or phrase, ignoring case."""
    return any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", answer, re.IGNORECASE) for word in accepted)


def _starts_with(answer: str, check: dict[str, Any]) -> bool:
    # Quotes, markdown or punctuation before the word are allowed: "**Sure**, ..." starts with Sure.
    return re.match(rf"\W*{re.escape(check['text'])}(?!\w)", answer.strip(), re.IGNORECASE) is not None


def _ends_with(answer: str, check: dict[str, Any]) -> bool:
    return re.search(rf"(?<!\w){re.escape(check['text'])}\W*$", answer.strip(), re.IGNORECASE) is not None


def _items(answer: str, check: dict[str, Any]) -> bool:
    return len([part for part in answer.strip().split(check["separator"]) if part.strip()]) == check["n"]


# The rule kinds an instruction item's "check" may name, each with the keys it reads.
CHECKS: dict[str, Callable[[str, dict[str, Any]], bool]] = {
    "contains": lambda answer, check: answers_correctly(answer, [check["text"]]),  # text, as a whole word or phrase
    "excludes": lambda answer, check: bool(answer.strip()) and not answers_correctly(answer, [check["text"]]),  # text
    "regex": lambda answer, check: re.search(check["pattern"], answer.strip()) is not None,  # pattern
    # Some letters and none of the other case: an answer of digits or punctuation only does not count.
    "uppercase": lambda answer, check: any(map(str.isupper, answer)) and not any(map(str.islower, answer)),
    "lowercase": lambda answer, check: any(map(str.islower, answer)) and not any(map(str.isupper, answer)),
    "starts_with": _starts_with,  # text
    "ends_with": _ends_with,  # text
    "max_words": lambda answer, check: 0 < len(answer.split()) <= check["n"],  # n
    "items": _items,  # n non-empty parts between separator
}


def passes(item: dict[str, Any], answer: str) -> bool:
    """Whether the answer meets the item: one of its accepted answers occurs in it, and it follows its check rule
    (an item with both must meet both)."""
    accepted, check = item.get("answers"), item.get("check")
    return ((accepted is None or answers_correctly(answer, accepted))
            and (check is None or CHECKS[check["kind"]](answer, check)))


def capability_items(path: Path = CAPABILITIES) -> list[dict[str, Any]]:
    """The retained-capability questions, each with accepted answers, a check rule, or both."""
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for item in items:
        check = item.get("check")
        if not item.get("answers") and check is None:
            raise RoleforgeError(f"{path}: {item.get('question')!r} has neither accepted answers nor a check: give it one")
        if check is not None and check.get("kind") not in CHECKS:
            raise RoleforgeError(f"{path}: {item.get('question')!r} has check kind {check.get('kind')!r}; "
                                 f"use one of {', '.join(CHECKS)}")
    return items


def lost_and_gained(candidate: list[bool], opponent: list[bool]) -> tuple[int, int]:
    """Paired outcomes: items the opponent passes and the candidate fails, and the reverse."""
    pairs = list(zip(candidate, opponent, strict=True))
    return sum(o and not c for c, o in pairs), sum(c and not o for c, o in pairs)


def mcnemar_p_value(lost: int, gained: int) -> float | None:
    """Exact one-sided McNemar test: the chance of at least `lost` losses among the `lost + gained` items on which
    the two models disagree, if each disagreement were a fair coin. None when they never disagree."""
    if lost + gained == 0:
        return None
    return float(binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue)


class Guardrails(BaseModel):
    """What the candidate must not break, measured on the same prompts for both models."""

    candidate_refusal_rate: float
    opponent_refusal_rate: float
    length_ratio: float  # mean answer length (characters), candidate over opponent; 1.0 with nothing generated
    capability_total: int  # capability questions asked
    capability_lost: list[str]  # those the opponent passes and the candidate fails
    capability_gained: list[str] = []  # those the candidate passes and the opponent fails
    capability_by_category: dict[str, dict[str, int]] = {}  # per category: "total", "lost", "gained"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def capability_p_value(self) -> float | None:
        """One-sided McNemar p-value of the candidate's capability loss; None when the two never disagree."""
        return mcnemar_p_value(len(self.capability_lost), len(self.capability_gained))

    def broken(self, config: Any) -> list[str]:
        """Each guardrail the candidate breaks under the role's gate configuration, as a reason."""
        reasons = []
        increase = self.candidate_refusal_rate - self.opponent_refusal_rate
        if increase > config.max_refusal_increase:
            reasons.append(f"refusal rate {self.candidate_refusal_rate:.2f} vs {self.opponent_refusal_rate:.2f} "
                           f"(+{increase:.2f} > +{config.max_refusal_increase:.2f})")
        if not config.min_length_ratio <= self.length_ratio <= config.max_length_ratio:
            reasons.append(f"answer length {self.length_ratio:.2f}x the opponent's (allowed "
                           f"{config.min_length_ratio:.2f}-{config.max_length_ratio:.2f})")
        lost, gained, p = len(self.capability_lost), len(self.capability_gained), self.capability_p_value
        alpha = 1 - config.confidence
        # Both: a net loss worth caring about, and one that a fair coin over the disagreements rarely gives.
        if lost - gained > config.max_capability_loss and p is not None and p < alpha:
            reasons.append(f"lost {lost} and gained {gained} of {self.capability_total} general questions "
                           f"(McNemar p={p:.2g} < {alpha:.2g}), e.g. {self.capability_lost[0]!r}")
        return reasons


def measure_guardrails(candidate: list[str], opponent: list[str], items: list[dict[str, Any]],
                       candidate_checks: list[str], opponent_checks: list[str]) -> Guardrails:
    """Refusal rates and answer lengths on the A/B answers (candidate, opponent), and each capability item passed
    or failed by both models (candidate_checks, opponent_checks: their answers to the items, in order)."""
    def mean_length(answers: list[str]) -> float:
        return sum(map(len, answers)) / max(len(answers), 1)

    lost: list[str] = []
    gained: list[str] = []
    by_category: dict[str, dict[str, int]] = {}
    for item, ours, theirs in zip(items, candidate_checks, opponent_checks, strict=True):
        counts = by_category.setdefault(item.get("category", "other"), {"total": 0, "lost": 0, "gained": 0})
        counts["total"] += 1
        outcome = {(False, True): "lost", (True, False): "gained"}.get((passes(item, ours), passes(item, theirs)))
        if outcome is not None:
            counts[outcome] += 1
            (lost if outcome == "lost" else gained).append(item["question"])
    return Guardrails(
        candidate_refusal_rate=sum(map(is_refusal, candidate)) / max(len(candidate), 1),
        opponent_refusal_rate=sum(map(is_refusal, opponent)) / max(len(opponent), 1),
        # +1 character on both sides: two empty answer sets are the same length, not a division by zero.
        length_ratio=(mean_length(candidate) + 1) / (mean_length(opponent) + 1),
        capability_total=len(items), capability_lost=lost, capability_gained=gained, capability_by_category=by_category,
    )
