"""The A/B statistics, the judge's verdicts in both orders, the guardrails and the gate that reads them."""

from __future__ import annotations

import pytest

from roleforge.config.settings import GateConfig
from roleforge.evaluation.ab import GenerationAB, judge_ab, paired_bootstrap, wilson_interval
from roleforge.evaluation.capability import Guardrails, answers_correctly, measure_guardrails
from roleforge.evaluation.scoring import ModelScore
from roleforge.tasks.evaluate import Evaluation
from roleforge.tasks.promote import gate


def test_wilson_interval_matches_the_textbook_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)


def test_paired_bootstrap_brackets_the_mean_difference_and_narrows_with_more_items():
    candidate, opponent = [1.0, 0.0, 1.0, 1.0] * 10, [1.0, 0.0, 0.0, 1.0] * 10
    low, high = paired_bootstrap(candidate, opponent)
    assert low < 0.25 < high and low > 0.0
    wide = paired_bootstrap(candidate[:8], opponent[:8])
    assert wide[1] - wide[0] >= high - low
    assert paired_bootstrap(candidate, opponent) == (low, high), "seeded: the same interval every time"


class PositionBiasedJudge:
    """Prefers whichever answer mentions "good", but also leans 0.2 toward the first position."""

    name = "fake"

    def prefer_a(self, system_prompt, items):
        return ["no answer" if a == "silent" else min(1.0, (0.7 if "good" in a else 0.1 if "good" in b else 0.3) + 0.2)
                for _, a, b in items]


def test_judge_asks_both_orders_so_position_bias_cancels():
    prompts = ["p1", "p2", "p3", "p4", "p5"]
    candidate = ["good plan", "meh", "good", "same", "silent"]
    opponent = ["meh", "good plan", "good too", "same", "x"]
    result = judge_ab(PositionBiasedJudge(), "sys", prompts, candidate, opponent)
    assert (result.wins, result.losses, result.ties, result.no_verdict) == (1, 1, 2, 1)
    assert result.win_rate == 0.5 and result.win_rate_low < 0.5 < result.win_rate_high
    assert result.examples[0]["verdict"] == "win"


def test_guardrails_measure_refusals_length_and_lost_capabilities():
    items = [{"question": "capital of France?", "answers": ["Paris"]}, {"question": "2+2?", "answers": ["4", "four"]},
             {"question": "hard?", "answers": ["xyzzy"]}]
    g = measure_guardrails(["I cannot help with that.", "Sure: do X."], ["Do X then Y.", "Plan: X."], items,
                           ["It is Lyon.", "four", "no idea"], ["Paris, of course", "2+2 = 4", "no idea"])
    assert g.candidate_refusal_rate == 0.5 and g.opponent_refusal_rate == 0.0
    assert g.capability_total == 3 and g.capability_lost == ["capital of France?"] and g.capability_gained == []
    reasons = g.broken(GateConfig())
    # One lost question of three is no evidence of a lost capability (McNemar p=0.5): only the refusals break.
    assert len(reasons) == 1 and reasons[0].startswith("refusal rate 0.50")
    assert not answers_correctly("-18.00 degrees", ["0"]) and answers_correctly("0 degrees", ["0"])


def evaluation(gain_low=0.1, ab=None, guardrails=None) -> Evaluation:
    return Evaluation(role="ceo", held_out_pairs=32, opponent="champion", opponent_version="3",
                      candidate=ModelScore(preference_accuracy=0.8, reward_accuracy=0.9, reward_margin=1.0),
                      opponent_score=ModelScore(preference_accuracy=0.6, reward_accuracy=None, reward_margin=None),
                      accuracy_gain_low=gain_low, accuracy_gain_high=0.35, generation=ab, guardrails=guardrails)


def ab(wins, losses, ties=0) -> GenerationAB:
    n = wins + losses + ties
    low, high = wilson_interval(wins + ties / 2, n)
    return GenerationAB(judge="fake", prompts=n, wins=wins, losses=losses, ties=ties, no_verdict=0,
                        win_rate=(wins + ties / 2) / n, win_rate_low=low, win_rate_high=high,
                        length_controlled_win_rate=(wins + ties / 2) / n)


FINE = Guardrails(candidate_refusal_rate=0.0, opponent_refusal_rate=0.0, length_ratio=1.1, capability_total=10, capability_lost=[])


@pytest.mark.parametrize(("ev", "passes", "says"), [
    (evaluation(ab=ab(6, 2), guardrails=FINE), True, "accuracy gain +0.200 over champion v3 (95% interval +0.100 to +0.350)"),
    (evaluation(gain_low=-0.02), False, "not sure enough: its 95% lower bound -0.020 is not above +0.000"),
    (evaluation(ab=ab(0, 12)), False, "lost the generation A/B against champion v3"),
    (evaluation(ab=ab(3, 3, 2), guardrails=FINE.model_copy(update={"length_ratio": 3.0})), False, "guardrail broken: answer length 3.00x"),
])
def test_gate_reads_the_interval_the_ab_and_the_guardrails(ev, passes, says):
    promoted, reason = gate(ev, GateConfig())
    assert promoted is passes and says in reason
