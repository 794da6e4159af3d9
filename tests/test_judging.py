"""Judging that has a signal or says it has none: order flips are ties, the win rate is also read at equal answer
length, and a judge counts only after it passes calibration on pairs with a known better answer."""

from __future__ import annotations

import pytest

from roleforge.evaluation.judging import (JUDGE_CALIBRATION, CalibrationPair, calibrate, calibration_pairs, judge_calibration,
                                          judge_generation)
from roleforge.config.settings import EvaluationConfig, GateConfig
from roleforge.evaluation.ab import judge_ab, length_controlled_win_rate
from roleforge.evaluation.scoring import ModelScore
from roleforge.evaluation.tool_use import TOOL_AGENT_SYSTEM_PROMPT, check_tool_use
from roleforge.ops.errors import RoleforgeError
from roleforge.tasks.evaluate import Evaluation
from roleforge.tasks.promote import gate


class ScriptedJudge:
    """P(A better) from a rule on (prompt, a, b); counts the items it was asked about."""

    name = "scripted_judge"

    def __init__(self, rule):
        self.rule, self.asked = rule, 0

    def prefer_a(self, system_prompt, items):
        self.asked += len(items)
        return [self.rule(prompt, a, b) for prompt, a, b in items]


FIRST_ALWAYS = ScriptedJudge(lambda prompt, a, b: 0.9)  # pure position bias


def test_a_verdict_that_flips_with_the_order_is_a_tie():
    result = judge_ab(FIRST_ALWAYS, "sys", ["p1", "p2", "p3"], ["long answer", "a", "b"], ["x", "yy", "zzz"])
    assert (result.wins, result.losses, result.ties, result.order_flips) == (0, 0, 3, 3)
    assert result.win_rate == 0.5 and result.verdicts == ["tie"] * 3

    # Averaged, (0.95 + (1 - 0.65)) / 2 = 0.65 would be a win; but the swapped order prefers the opponent beyond the margin.
    leaning = ScriptedJudge(lambda prompt, a, b: 0.95 if a == "ours" else 0.65)
    result = judge_ab(leaning, "sys", ["p"], ["ours"], ["theirs"], margin=0.1)
    assert (result.wins, result.ties, result.order_flips) == (0, 1, 1)
    # The same lean within the margin in the second order is no flip: a win.
    mild = ScriptedJudge(lambda prompt, a, b: 0.95 if a == "ours" else 0.55)
    assert judge_ab(mild, "sys", ["p"], ["ours"], ["theirs"], margin=0.1).wins == 1


def test_length_controlled_rate_discounts_wins_bought_with_length():
    prefers_longer = ScriptedJudge(lambda prompt, a, b: 0.9 if len(a) > len(b) else 0.1)
    prompts = [f"p{i}" for i in range(8)]
    # The candidate is longer, by varying amounts, on six prompts and wins exactly those.
    candidate = ["x" * n for n in (40, 60, 80, 100, 120, 140, 10, 20)]
    opponent = ["y" * 30] * 6 + ["y" * 30, "y" * 50]
    result = judge_ab(prefers_longer, "sys", prompts, candidate, opponent)
    assert (result.wins, result.losses) == (6, 2) and result.win_rate == 0.75
    assert result.length_controlled_win_rate < result.win_rate - 0.05

    prefers_good = ScriptedJudge(lambda prompt, a, b: 0.9 if a.startswith("good") else 0.1)
    same_length = judge_ab(prefers_good, "sys", prompts, ["good answer"] * 6 + ["weak answer"] * 2,
                           ["weak answer"] * 6 + ["good answer"] * 2)
    assert same_length.win_rate == 0.75 and same_length.length_controlled_win_rate == same_length.win_rate


def test_length_controlled_rate_falls_back_to_the_raw_rate_on_too_little_evidence():
    assert length_controlled_win_rate([1.0, 0.0, 1.0], [90, 10, 80], [10, 90, 20]) == pytest.approx(2 / 3)
    assert length_controlled_win_rate([], [], []) == 0.0
    # Outcomes unrelated to length (each length difference wins once and loses once) leave the rate where it was.
    balanced = length_controlled_win_rate([1, 0, 1, 0, 1, 0, 1, 1], [50, 50, 10, 10, 30, 30, 20, 20],
                                          [10, 10, 50, 50, 30, 30, 20, 20])
    assert balanced == pytest.approx(0.625, abs=0.02)


def knows_better(pairs: list[CalibrationPair], right_on: float = 1.0) -> ScriptedJudge:
    """Picks the better answer on the first `right_on` share of the pairs' prompts; says "A" on the rest."""
    better = {p.prompt: p.better for p in pairs}
    known = {p.prompt for p in pairs[: round(right_on * len(pairs))]}
    return ScriptedJudge(lambda prompt, a, b: (0.9 if a == better[prompt] else 0.1) if prompt in known else 0.9)


def test_calibration_passes_or_fails_by_agreement():
    pairs = calibration_pairs()
    right = calibrate(knows_better(pairs), pairs, margin=0.1, min_agreement=0.75)
    assert (right.agreement, right.pairs, right.order_flips, right.passed) == (1.0, len(pairs), 0, True)
    half = calibrate(knows_better(pairs, 0.5), pairs, margin=0.1, min_agreement=0.75)
    assert half.agreement == pytest.approx(0.5, abs=0.02) and half.order_flips == len(pairs) - round(0.5 * len(pairs))
    assert not half.passed and half.summary().startswith(f"scripted judge agreed on {half.agreement:.2f} of {len(pairs)}")
    assert half.summary().endswith(f"(< 0.75); {half.order_flips} flipped with the answers' order")
    assert calibrate(knows_better(pairs, 0.5), pairs, margin=0.1, min_agreement=0.4).passed


def test_a_judge_that_cannot_answer_fails_calibration_with_the_reason():
    unreachable = ScriptedJudge(lambda prompt, a, b: "http 503")
    result = calibrate(unreachable, calibration_pairs(), margin=0.1, min_agreement=0.75)
    assert result.agreement == 0.0 and not result.passed and result.no_verdict == result.pairs
    assert "http 503" in result.summary()


def evaluation(ab=None, calibration=None) -> Evaluation:
    return Evaluation(role="ceo", held_out_pairs=32, opponent="champion", opponent_version="3",
                      candidate=ModelScore(preference_accuracy=0.8, reward_accuracy=0.9, reward_margin=1.0),
                      opponent_score=ModelScore(preference_accuracy=0.6, reward_accuracy=None, reward_margin=None),
                      accuracy_gain_low=0.1, accuracy_gain_high=0.35, generation=ab, judge_calibration=calibration)


def test_a_failed_calibration_leaves_no_ab_and_the_gate_decides_without_a_win_rate():
    pairs = calibration_pairs()
    biased = calibrate(FIRST_ALWAYS, pairs, margin=0.1, min_agreement=0.75)
    assert biased.agreement == 0.0 and biased.order_flips == len(pairs)
    assert judge_generation(FIRST_ALWAYS, biased, "sys", ["p"], ["ours"], ["theirs"], 0.1, 0.95) is None
    assert judge_generation(FIRST_ALWAYS, None, "sys", ["p"], ["ours"], ["theirs"], 0.1, 0.95) is None
    promoted, reason = gate(evaluation(calibration=biased), GateConfig())
    assert promoted and "win rate" not in reason
    assert reason.endswith(f"no judge: scripted judge agreed on 0.00 of {len(pairs)} calibration pairs (< 0.75); "
                           f"{len(pairs)} flipped with the answers' order")

    judge = knows_better(pairs)
    passed = calibrate(judge, pairs, margin=0.1, min_agreement=0.75)
    some = pairs[:10]
    ab = judge_generation(judge, passed, "sys", [p.prompt for p in some], [p.worse for p in some], [p.better for p in some],
                          0.1, 0.95)
    assert ab is not None and ab.losses == 10
    promoted, reason = gate(evaluation(ab=ab, calibration=passed), GateConfig())
    assert not promoted and "lost the generation A/B" in reason and "length-controlled 0.00" in reason


def test_the_bundled_calibration_pairs_are_well_formed():
    pairs = calibration_pairs()
    assert len(pairs) >= 40 and EvaluationConfig().min_judge_agreement == 0.75
    assert all(p.prompt and p.better and p.worse and p.better != p.worse for p in pairs)
    assert len({(p.system_prompt, p.prompt) for p in pairs}) == len(pairs), "each request once"
    tool_rows = [p for p in pairs if p.system_prompt == TOOL_AGENT_SYSTEM_PROMPT]
    assert len(tool_rows) >= 10 and len({p.system_prompt for p in pairs}) == 4
    assert all(check_tool_use(p.better).compliant() and not check_tool_use(p.worse).json_valid for p in tool_rows)


def test_a_malformed_calibration_file_fails_with_the_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"system_prompt": "s", "prompt": "p", "better": "b", "worse": "w"}\n{"prompt": "p", "better": "b"}\n')
    with pytest.raises(RoleforgeError, match=r"pairs.jsonl:2: a calibration pair needs"):
        calibration_pairs(path)


def test_a_local_judges_calibration_is_computed_once_per_model_and_file(tmp_path):
    model_dir = tmp_path / "judge-model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights")
    judge = knows_better(calibration_pairs())
    first = judge_calibration(judge, JUDGE_CALIBRATION, 0.1, 0.75, tmp_path / "cache", model_dir)
    asked = judge.asked
    assert first.passed and asked == 2 * first.pairs
    assert judge_calibration(judge, JUDGE_CALIBRATION, 0.1, 0.75, tmp_path / "cache", model_dir) == first
    assert judge.asked == asked, "read from disk, not asked again"
    (model_dir / "model.safetensors").write_bytes(b"new weights")
    judge_calibration(judge, JUDGE_CALIBRATION, 0.1, 0.75, tmp_path / "cache", model_dir)
    assert judge.asked == 2 * asked, "new weights, new calibration"
    judge.dtype = "bfloat16"  # the same weights read in another dtype give other verdicts
    judge_calibration(judge, JUDGE_CALIBRATION, 0.1, 0.75, tmp_path / "cache", model_dir)
    assert judge.asked == 3 * asked, "another dtype, another calibration"


def test_a_remote_judges_calibration_is_kept_for_one_run(tmp_path):
    judge = knows_better(calibration_pairs())
    judge.name = "remote_judge_under_test"
    for run in ("run-1", "run-1", "run-2"):
        judge_calibration(judge, JUDGE_CALIBRATION, 0.1, 0.75, tmp_path, model_dir=None, run_id=run)
    assert judge.asked == 2 * 2 * len(calibration_pairs())


def test_the_local_judge_calibrates_end_to_end(tiny_model_dir):
    from roleforge.models.base import load_model, load_tokenizer
    from roleforge.tasks.labelers.judge import LocalJudge

    judge = LocalJudge(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), batch_size=16)
    result = calibrate(judge, calibration_pairs(), margin=0.1, min_agreement=0.75)
    assert result.judge == "local_judge" and result.pairs == len(calibration_pairs())
    assert 0.0 <= result.agreement <= 1.0 and result.no_verdict == 0 and result.passed == (result.agreement >= 0.75)
