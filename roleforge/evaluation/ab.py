"""Generation A/B and guardrails: candidate and opponent answer the same held-out prompts, a judge picks a winner
per prompt (asked in both orders), and the win rate gets a Wilson interval; refusals, answer length and a small
retained-capability set guard against a candidate that wins preferences by breaking something else."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field


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


# Fewest judged prompts a length-controlled rate is fitted on; below it, the raw rate stands.
MIN_LENGTH_CONTROL_PROMPTS = 6


def length_controlled_win_rate(outcomes: Sequence[float], candidate_lengths: Sequence[int],
                               opponent_lengths: Sequence[int], min_prompts: int = MIN_LENGTH_CONTROL_PROMPTS) -> float:
    """The win rate at equal answer length (AlpacaEval-LC's idea): a logistic regression of each prompt's outcome (1 win,
    0.5 tie, 0 loss) on the length difference (c - o) / (c + o), scaled to unit RMS, read at zero difference.

    A unit ridge penalty on the slope keeps the fit finite when length alone separates wins from losses. The raw rate
    stands with fewer than `min_prompts` outcomes, outcomes all alike, or no varying length difference.
    """
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    y = np.asarray(outcomes, dtype=float)
    c, o = np.asarray(candidate_lengths, dtype=float), np.asarray(opponent_lengths, dtype=float)
    raw = float(y.mean()) if len(y) else 0.0
    difference = (c - o) / np.maximum(c + o, 1.0)
    if len(y) < min_prompts or np.ptp(y) == 0 or np.ptp(difference) == 0:
        return raw
    x = difference / np.sqrt(np.mean(difference**2))

    def penalised_loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        intercept, slope = params
        z = intercept + slope * x
        residual = expit(z) - y
        loss = -np.sum(y * log_expit(z) + (1 - y) * log_expit(-z)) + slope**2 / 2
        return float(loss), np.array([residual.sum(), (residual * x).sum() + slope])

    fit = minimize(penalised_loss, np.zeros(2), jac=True, method="L-BFGS-B")
    return float(expit(fit.x[0]))


def order_verdict(first: float, second: float, margin: float) -> str:
    """"win", "loss" or "tie" for answer X against Y, from P(X better) with X shown first and P(Y better) with Y shown
    first; "flip" when each order prefers its first answer beyond the margin, which is position bias, not a verdict."""
    if (first > 0.5 + margin and second > 0.5 + margin) or (first < 0.5 - margin and second < 0.5 - margin):
        return "flip"
    p_first = (first + (1.0 - second)) / 2
    return "win" if p_first > 0.5 + margin else "loss" if p_first < 0.5 - margin else "tie"


class GenerationAB(BaseModel):
    """Per-prompt verdicts of the judge on the two models' answers, and the candidate's win rate."""

    judge: str
    prompts: int
    wins: int
    losses: int
    ties: int  # order flips included
    no_verdict: int
    win_rate: float  # ties count half
    win_rate_low: float
    win_rate_high: float
    length_controlled_win_rate: float  # the win rate at equal answer length (length_controlled_win_rate)
    order_flips: int = 0  # verdicts that followed the position, not the answers: counted as ties
    examples: list[dict[str, str]] = []
    # Each prompt's verdict ("win", "loss", "tie", or "no verdict: " and the judge's reason), in order: for the
    # evaluation's answers artifact, not for reports.
    verdicts: list[str] = Field(default=[], exclude=True)


def judge_ab(judge: Any, system_prompt: str, prompts: list[str], candidate: list[str], opponent: list[str],
             margin: float = 0.1, confidence: float = 0.95) -> GenerationAB:
    """The judge compares each pair of answers as (candidate, opponent) and as (opponent, candidate); the averaged
    probability decides a win, a loss, or (within margin of 0.5) a tie. A verdict that flips with the order is a tie."""
    forward = judge.prefer_a(system_prompt, list(zip(prompts, candidate, opponent)))
    backward = judge.prefer_a(system_prompt, list(zip(prompts, opponent, candidate)))
    counts = {"win": 0, "loss": 0, "tie": 0, "flip": 0, "no verdict": 0}
    examples, verdicts, scored = [], [], []  # scored: (outcome, candidate length, opponent length) per judged prompt
    for prompt, ours, theirs, first, second in zip(prompts, candidate, opponent, forward, backward):
        if isinstance(first, str) or isinstance(second, str):
            counts["no verdict"] += 1
            verdicts.append(f"no verdict: {first if isinstance(first, str) else second}")
            continue
        outcome = order_verdict(first, second, margin)
        counts[outcome] += 1
        verdict = "tie" if outcome == "flip" else outcome
        verdicts.append(verdict)
        scored.append(({"win": 1.0, "loss": 0.0, "tie": 0.5}[verdict], len(ours), len(theirs)))
        if len(examples) < 3:
            examples.append({"prompt": prompt, "candidate": ours[:300], "opponent": theirs[:300], "verdict": verdict})
    wins, losses, ties = counts["win"], counts["loss"], counts["tie"] + counts["flip"]
    low, high = wilson_interval(wins + ties / 2, len(scored), confidence)
    outcomes, candidate_lengths, opponent_lengths = zip(*scored) if scored else ((), (), ())
    return GenerationAB(judge=judge.name, prompts=len(prompts), wins=wins, losses=losses, ties=ties,
                        no_verdict=counts["no verdict"], win_rate=(wins + ties / 2) / len(scored) if scored else 0.0,
                        win_rate_low=low, win_rate_high=high, order_flips=counts["flip"], examples=examples, verdicts=verdicts,
                        length_controlled_win_rate=length_controlled_win_rate(outcomes, candidate_lengths, opponent_lengths))
