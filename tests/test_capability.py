"""The retained-capability set, its answer checks, and the McNemar guardrail that reads both models' outcomes."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from roleforge.config.settings import GateConfig
from roleforge.evaluation.capability import CHECKS, capability_items, mcnemar_p_value, measure_guardrails, passes
from roleforge.ops.errors import RoleforgeError
from roleforge.sample import GENERAL_PROMPTS


def general_prompts() -> list[str]:
    return [json.loads(line)["prompt"] for line in GENERAL_PROMPTS.read_text().splitlines() if line.strip()]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def shingles(text: str, n: int = 4) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def test_the_bundled_capability_set_has_every_category_and_each_item_is_checkable():
    items = capability_items()
    counts = Counter(item["category"] for item in items)
    assert len(items) >= 160 and set(counts) == {"fact", "arithmetic", "reasoning", "instruction"}
    assert counts["fact"] >= 60 and counts["arithmetic"] >= 40 and counts["reasoning"] >= 30 and counts["instruction"] >= 30
    for item in items:
        assert item["question"].strip() and (item.get("answers") or item.get("check")), item
        assert "check" not in item or item["check"]["kind"] in CHECKS, item
        assert item["category"] == "instruction" or "check" not in item, item
    assert len({" ".join(words(item["question"])) for item in items}) == len(items), "no question asked twice"


def test_the_arithmetic_answers_are_right():
    operations = {"+": int.__add__, "plus": int.__add__, "Add": int.__add__, "-": int.__sub__, "minus": int.__sub__,
                  "Subtract": int.__sub__, "*": int.__mul__, "times": int.__mul__, "Multiply": int.__mul__}
    for item in (i for i in capability_items() if i["category"] == "arithmetic"):
        if match := re.fullmatch(r"What is (\d+) (\S+) (\d+)\?", item["question"]):
            a, operation, b = int(match[1]), match[2], int(match[3])
        elif match := re.fullmatch(r"(Add|Multiply) (\d+) (?:and|by) (\d+)\. .*", item["question"]):
            operation, a, b = match[1], int(match[2]), int(match[3])
        else:
            match = re.fullmatch(r"(Subtract) (\d+) from (\d+)\. .*", item["question"])
            assert match, f"an arithmetic question this test cannot read: {item['question']!r}"
            operation, b, a = match[1], int(match[2]), int(match[3])
        assert item["answers"][0] == str(operations[operation](a, b)), item


def test_the_general_prompts_are_disjoint_from_the_capability_set():
    prompts, questions = general_prompts(), [item["question"] for item in capability_items()]
    assert len(prompts) >= 200 and all(p.strip() for p in prompts)
    assert len({" ".join(words(p)) for p in prompts}) == len(prompts), "no general prompt given twice"
    assert not {" ".join(words(p)) for p in prompts} & {" ".join(words(q)) for q in questions}
    shared = set().union(*map(shingles, prompts)) & set().union(*map(shingles, questions))
    assert not shared, f"4-word phrases in both files: {sorted(shared)[:5]}"


def test_a_malformed_item_fails_at_load_with_the_fix(tmp_path):
    path = tmp_path / "capabilities.jsonl"
    path.write_text(json.dumps({"question": "Say hi.", "category": "instruction"}) + "\n")
    with pytest.raises(RoleforgeError, match="neither accepted answers nor a check"):
        capability_items(path)
    path.write_text(json.dumps({"question": "Say hi.", "check": {"kind": "rhymes"}}) + "\n")
    with pytest.raises(RoleforgeError, match="'rhymes'; use one of contains, excludes"):
        capability_items(path)


@pytest.mark.parametrize(("check", "answer", "expected"), [
    ({"kind": "contains", "text": "river"}, "We swam in the River at noon.", True),
    ({"kind": "contains", "text": "river"}, "The riverbank was muddy.", False),
    ({"kind": "excludes", "text": "white"}, "Snow is cold and soft.", True),
    ({"kind": "excludes", "text": "white"}, "Snow is White and cold.", False),
    ({"kind": "excludes", "text": "white"}, "  ", False),
    ({"kind": "regex", "pattern": r"^\W*12\W*$"}, " 12. ", True),
    ({"kind": "regex", "pattern": r"^\W*12\W*$"}, "twelve is 12", False),
    ({"kind": "uppercase"}, "THE SKY IS BLUE!", True),
    ({"kind": "uppercase"}, "THE SKY IS Blue", False),
    ({"kind": "uppercase"}, "42", False),
    ({"kind": "lowercase"}, "june, of course", True),
    ({"kind": "lowercase"}, "June", False),
    ({"kind": "starts_with", "text": "Sure"}, '**Sure**, it is Santiago.', True),
    ({"kind": "starts_with", "text": "Sure"}, "Surely it is Santiago.", False),
    ({"kind": "starts_with", "text": "Sure"}, "Of course. Sure.", False),
    ({"kind": "ends_with", "text": "done"}, "All the work is done.", True),
    ({"kind": "ends_with", "text": "done"}, "Done, and now we rest.", False),
    ({"kind": "max_words", "n": 1}, "Cow.", True),
    ({"kind": "max_words", "n": 1}, "A cow.", False),
    ({"kind": "max_words", "n": 1}, "", False),
    ({"kind": "items", "n": 3, "separator": ","}, "apple, pear, plum", True),
    ({"kind": "items", "n": 3, "separator": ","}, "apple, pear, plum, fig", False),
    ({"kind": "items", "n": 4, "separator": "\n"}, "dog\ncat\n\nhorse\nowl\n", True),
    ({"kind": "items", "n": 4, "separator": "\n"}, "dog, cat, horse, owl", False),
])
def test_each_check_kind_accepts_what_it_asks_and_nothing_else(check, answer, expected):
    assert passes({"question": "q", "check": check}, answer) is expected


def test_accepted_answers_are_whole_words_and_an_item_with_both_must_meet_both():
    assert passes({"question": "q", "answers": ["7", "seven"]}, "It is Seven.")
    assert not passes({"question": "q", "answers": ["7", "seven"]}, "It is 17 or seventy.")
    both = {"question": "Answer in all capital letters: what colour is grass?", "answers": ["green"], "check": {"kind": "uppercase"}}
    assert passes(both, "GREEN") and not passes(both, "Green") and not passes(both, "BLUE")


def test_mcnemar_is_the_one_sided_exact_binomial_tail_over_the_disagreements():
    assert mcnemar_p_value(0, 0) is None
    assert mcnemar_p_value(1, 0) == pytest.approx(0.5)
    assert mcnemar_p_value(12, 1) == pytest.approx(14 / 2**13)
    assert mcnemar_p_value(3, 3) > 0.5 and mcnemar_p_value(0, 5) == pytest.approx(1.0)


def outcomes(lost: int, gained: int, total: int, category: str = "fact"):
    """Guardrails of a candidate that fails `lost` items its opponent passes and passes `gained` it fails, of `total`."""
    items = [{"question": f"Question {i}?", "category": category, "answers": ["right"]} for i in range(total)]
    ours = ["wrong"] * lost + ["right"] * gained + ["right"] * (total - lost - gained)
    theirs = ["right"] * lost + ["wrong"] * gained + ["right"] * (total - lost - gained)
    return measure_guardrails([], [], items, ours, theirs)


def test_one_lost_question_of_nine_is_not_evidence():
    guardrails = outcomes(lost=1, gained=0, total=9)
    assert guardrails.capability_total == 9 and guardrails.capability_lost == ["Question 0?"]
    assert guardrails.capability_p_value == pytest.approx(0.5) and guardrails.broken(GateConfig()) == []


def test_twelve_lost_and_one_gained_of_150_breaks_the_guardrail_and_says_why():
    guardrails = outcomes(lost=12, gained=1, total=150)
    assert guardrails.capability_gained == ["Question 12?"]
    assert guardrails.capability_by_category == {"fact": {"total": 150, "lost": 12, "gained": 1}}
    [reason] = guardrails.broken(GateConfig(confidence=0.95))
    assert reason == "lost 12 and gained 1 of 150 general questions (McNemar p=0.0017 < 0.05), e.g. 'Question 0?'"
    assert guardrails.broken(GateConfig(confidence=0.999)) == [], "p=0.0017 is not below 0.001"
    assert guardrails.broken(GateConfig(max_capability_loss=11)) == [], "a net loss of 11 is allowed"


def test_gains_offset_losses():
    assert outcomes(lost=12, gained=12, total=150).broken(GateConfig()) == []
    assert outcomes(lost=12, gained=6, total=150).broken(GateConfig()) == [], "net 6 of 18 disagreements: p=0.12"


def test_capability_counts_every_item_per_category_and_keep_their_json_keys():
    items = [{"question": "What is 3 + 4?", "category": "arithmetic", "answers": ["7", "seven"]},
             {"question": "Reply with only the word no.", "category": "instruction", "answers": ["no"], "check": {"kind": "max_words", "n": 1}},
             {"question": "Who wrote Hamlet?", "category": "fact", "answers": ["Shakespeare"]}]
    guardrails = measure_guardrails(["Sure."], ["Sure."], items, ["3 + 4 = 7", "No, I will not.", "Marlowe"],
                                    ["It is 8.", "No", "Marlowe"])
    assert guardrails.capability_total == 3
    assert guardrails.capability_lost == ["Reply with only the word no."] and guardrails.capability_gained == ["What is 3 + 4?"]
    assert guardrails.capability_by_category == {"arithmetic": {"total": 1, "lost": 0, "gained": 1},
                                                 "instruction": {"total": 1, "lost": 1, "gained": 0},
                                                 "fact": {"total": 1, "lost": 0, "gained": 0}}
    dumped = guardrails.model_dump()
    assert {"capability_total", "capability_lost", "capability_gained", "capability_p_value"} <= set(dumped)
    assert dumped["capability_p_value"] == pytest.approx(0.75)
    assert type(guardrails).model_validate(dumped) == guardrails
