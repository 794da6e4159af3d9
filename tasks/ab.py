"""Generation A/B and guardrails: candidate and opponent answer the same held-out prompts, a judge picks a winner
per prompt (asked in both orders), and the win rate gets a Wilson interval; refusals, answer length and a small
retained-capability set guard against a candidate that wins preferences by breaking something else."""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from roleforge.sample import CAPABILITIES
from roleforge.tasks.labelers.heuristics import is_refusal



def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (successes may count ties as halves)."""
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def paired_bootstrap(candidate: Sequence[float], opponent: Sequence[float], confidence: float = 0.95,
                     rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of mean(candidate - opponent) over items resampled with replacement (paired)."""
    differences = [c - o for c, o in zip(candidate, opponent, strict=True)]
    if not differences:
        return 0.0, 0.0
    rng = random.Random(seed)
    n = len(differences)
    means = sorted(sum(rng.choices(differences, k=n)) / n for _ in range(rounds))
    tail = (1 - confidence) / 2
    return means[int(tail * (rounds - 1))], means[int((1 - tail) * (rounds - 1))]


class GenerationAB(BaseModel):
    """Per-prompt verdicts of the judge on the two models' answers, and the candidate's win rate."""

    judge: str
    prompts: int
    wins: int
    losses: int
    ties: int
    no_verdict: int
    win_rate: float  # ties count half
    win_rate_low: float
    win_rate_high: float
    examples: list[dict[str, str]] = []
    # Each prompt's verdict ("win", "loss", "tie", or "no verdict: " and the judge's reason), in order: for the
    # evaluation's answers artifact, not for reports.
    verdicts: list[str] = Field(default=[], exclude=True)


def judge_ab(judge: Any, system_prompt: str, prompts: list[str], candidate: list[str], opponent: list[str],
             margin: float = 0.1, confidence: float = 0.95) -> GenerationAB:
    """The judge compares each pair of answers as (candidate, opponent) and as (opponent, candidate); the averaged
    probability decides a win, a loss, or (within margin of 0.5) a tie."""
    forward = judge.prefer_a(system_prompt, list(zip(prompts, candidate, opponent)))
    backward = judge.prefer_a(system_prompt, list(zip(prompts, opponent, candidate)))
    wins = losses = ties = no_verdict = 0
    examples, verdicts = [], []
    for prompt, ours, theirs, first, second in zip(prompts, candidate, opponent, forward, backward):
        if isinstance(first, str) or isinstance(second, str):
            no_verdict += 1
            verdicts.append(f"no verdict: {first if isinstance(first, str) else second}")
            continue
        p_candidate = (first + (1.0 - second)) / 2
        verdict = "win" if p_candidate > 0.5 + margin else "loss" if p_candidate < 0.5 - margin else "tie"
        wins, losses, ties = wins + (verdict == "win"), losses + (verdict == "loss"), ties + (verdict == "tie")
        verdicts.append(verdict)
        if len(examples) < 3:
            examples.append({"prompt": prompt, "candidate": ours[:300], "opponent": theirs[:300], "verdict": verdict})
    judged = wins + losses + ties
    low, high = wilson_interval(wins + ties / 2, judged, confidence)
    return GenerationAB(judge=judge.name, prompts=len(prompts), wins=wins, losses=losses, ties=ties, no_verdict=no_verdict,
                        win_rate=(wins + ties / 2) / judged if judged else 0.0, win_rate_low=low, win_rate_high=high,
                        examples=examples, verdicts=verdicts)


def capability_items(path: Path = CAPABILITIES) -> list[dict[str, Any]]:
    """Plain questions with accepted answers: what the candidate must still answer where its opponent does."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def answers_correctly(answer: str, accepted: list[str]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", answer, re.IGNORECASE) for word in accepted)


class Guardrails(BaseModel):
    """What the candidate must not break, measured on the same prompts for both models."""

    candidate_refusal_rate: float
    opponent_refusal_rate: float
    length_ratio: float  # mean answer length (characters), candidate over opponent; 1.0 with nothing generated
    capability_total: int  # capability questions the opponent answers correctly
    capability_lost: list[str]  # of those, the ones the candidate gets wrong

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
        if len(self.capability_lost) > config.max_capability_loss:
            reasons.append(f"lost {len(self.capability_lost)} of {self.capability_total} retained capabilities "
                           f"(e.g. {self.capability_lost[0]!r})")
        return reasons


def measure_guardrails(candidate: list[str], opponent: list[str], items: list[dict[str, Any]],
                       candidate_checks: list[str], opponent_checks: list[str]) -> Guardrails:
    def mean_length(answers: list[str]) -> float:
        return sum(map(len, answers)) / max(len(answers), 1)

    kept = [(item, ours) for item, ours, theirs in zip(items, candidate_checks, opponent_checks, strict=True)
            if answers_correctly(theirs, item["answers"])]
    return Guardrails(
        candidate_refusal_rate=sum(map(is_refusal, candidate)) / max(len(candidate), 1),
        opponent_refusal_rate=sum(map(is_refusal, opponent)) / max(len(opponent), 1),
        # +1 character on both sides: two empty answer sets are the same length, not a division by zero.
        length_ratio=(mean_length(candidate) + 1) / (mean_length(opponent) + 1),
        capability_total=len(kept),
        capability_lost=[item["question"] for item, ours in kept if not answers_correctly(ours, item["answers"])],
    )
