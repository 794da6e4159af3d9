"""Labeling: human choices and rating gaps become pairs with provenance; conflicts and splits follow fixed rules."""

from roleforge.config.settings import LabelingConfig
from roleforge.storage.snapshots import load_split, split_of
from roleforge.tasks.label import build_dataset, resolve_pairs
from roleforge.tasks.labelers.human import HumanChoiceLabeler, RatingGapLabeler

CONFIG = LabelingConfig()


def human_choice_pairs(rows):
    return HumanChoiceLabeler().label(rows).pairs


def rating_pairs(rows, min_gap):
    return RatingGapLabeler(min_gap).label(rows).pairs


def ab(id_, prompt, a, b, pref, confidence=None):
    return {"id": id_, "agent_role": "ceo", "kind": "ab", "prompt": prompt, "response_a": a, "response_b": b,
            "preference": pref, "confidence": confidence, "rater": "u1"}


def rated(id_, prompt, response, rating, rater="u2"):
    return {"id": id_, "agent_role": "ceo", "kind": "rating", "prompt": prompt, "response": response, "rating": rating,
            "confidence": None, "rater": rater}


def test_human_choice_follows_preference():
    (pair,) = human_choice_pairs([ab(1, "p", "x", "y", "b", 0.75)])
    assert (pair.chosen, pair.rejected, pair.source, pair.confidence, pair.feedback_ids) == ("y", "x", "human_ab", 0.75, (1,))


def test_rating_pairs_need_the_minimum_gap():
    rows = [rated(1, "p", "good", 5), rated(2, "p", "ok", 4), rated(3, "p", "bad", 1), rated(4, "other", "lone", 5)]
    pairs = {(p.chosen, p.rejected): p for p in rating_pairs(rows, min_gap=2)}
    assert set(pairs) == {("good", "bad"), ("ok", "bad")}
    assert pairs[("good", "bad")].confidence == 1.0 and pairs[("good", "bad")].feedback_ids == (1, 3)


def test_a_middling_answer_rated_above_a_bad_one_is_not_chosen(tmp_path):
    rows = [rated(1, "p", "good", 5), rated(2, "p", "middling", 3), rated(3, "p", "bad", 1),
            rated(4, "q", "fine", 4), rated(5, "q", "fine", 5), rated(6, "q", "poor", 2)]
    result = RatingGapLabeler(2, min_chosen=4).label(rows)
    assert {(p.chosen, p.rejected) for p in result.pairs} == {("good", "middling"), ("good", "bad"), ("fine", "poor")}
    assert result.skipped == {"chosen answer rated below 4": 1}
    dataset = build_dataset(rows, "ceo", CONFIG, 0.5, 1, tmp_path)
    assert dataset.skipped == {"chosen answer rated below 4": 1}
    assert dataset.train_pairs + dataset.held_out_pairs == 3


def test_human_choice_wins_a_conflict_and_duplicates_collapse():
    rows = [ab(1, "p", "x", "y", "a"), ab(2, "p", "x", "y", "a"), rated(3, "p", "x", 1), rated(4, "p", "y", 5)]
    pairs, conflicts = resolve_pairs([*human_choice_pairs(rows), *rating_pairs(rows, 2)])
    assert conflicts == 1 and len(pairs) == 1 and (pairs[0].chosen, pairs[0].source) == ("x", "human_ab")


def test_equal_evidence_both_ways_is_dropped():
    pairs, conflicts = resolve_pairs(human_choice_pairs([ab(1, "p", "x", "y", "a"), ab(2, "p", "x", "y", "b")]))
    assert (pairs, conflicts) == ([], 1)


def test_split_is_stable_as_data_grows(tmp_path):
    rows = [ab(i, f"prompt {i}", f"good {i}", f"bad {i}", "a") for i in range(200)]
    first = build_dataset(rows[:100], "ceo", CONFIG, 0.2, 1, tmp_path)
    second = build_dataset(rows, "ceo", CONFIG, 0.2, 1, tmp_path)
    held_first = {p["prompt"] for p in load_split(first.path, "held_out")}
    held_second = {p["prompt"] for p in load_split(second.path, "held_out")}
    assert held_first <= held_second and first.snapshot_hash != second.snapshot_hash
    assert all(split_of("ceo", p, 0.2) == "held_out" for p in held_second)
    assert 20 <= second.held_out_pairs <= 60


def test_snapshot_is_content_addressed(tmp_path):
    rows = [ab(i, f"prompt {i}", f"good {i}", f"bad {i}", "a") for i in range(30)]
    assert build_dataset(rows, "ceo", CONFIG, 0.2, 1, tmp_path).snapshot_hash == build_dataset(rows[::-1], "ceo", CONFIG, 0.2, 1, tmp_path).snapshot_hash


def test_too_few_pairs_holds_the_role_back(tmp_path):
    dataset = build_dataset([ab(1, "p", "x", "y", "a")], "ceo", CONFIG, 0.2, 16, tmp_path)
    assert not dataset.ready and "too few pairs" in dataset.skip_reason
