"""The role evaluation prompts are written apart from the generated sample feedback: new topics, new phrasings."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from roleforge.sample import ROLE_EVAL
from roleforge.sample.generate import (
    ASKS,
    BREVITY,
    CONTEXTS,
    EXEC_ROLES,
    ROLE_ASKS,
    ROLE_SITUATIONS,
    ROLE_TOPICS,
    SITUATION_ASKS,
    TOPICS,
    exec_prompts,
)

ALL_ASKS = ASKS + [ask for asks in ROLE_ASKS.values() for ask in asks]
ALL_TOPICS = TOPICS + [topic for topics in ROLE_TOPICS.values() for topic in topics]
# Phrases of the generator that appear whole in its prompts: situations, the asks after them, requests for brevity.
ALL_PHRASES = ([statement for situations in ROLE_SITUATIONS.values() for statement, _ in situations]
               + [ask for asks in SITUATION_ASKS.values() for ask in asks] + BREVITY + CONTEXTS)

MIN_PER_ROLE = 45


def load() -> list[dict[str, str]]:
    return [json.loads(line) for line in ROLE_EVAL.read_text(encoding="utf-8").splitlines() if line.strip()]


def ask_patterns() -> list[re.Pattern[str]]:
    """Each generator template as a regex, with {topic} matching anything."""
    return [re.compile(".+".join(re.escape(part) for part in ask.split("{topic}") if part), re.IGNORECASE) for ask in ALL_ASKS]


def test_rows_are_well_formed() -> None:
    for row in load():
        assert set(row) == {"role", "prompt"}
        assert row["role"] in EXEC_ROLES
        assert isinstance(row["prompt"], str) and row["prompt"].strip()


def test_each_role_has_enough_prompts() -> None:
    counts = Counter(row["role"] for row in load())
    assert set(counts) == set(EXEC_ROLES)
    assert all(count >= MIN_PER_ROLE for count in counts.values()), counts


def test_no_duplicate_prompts() -> None:
    prompts = [" ".join(row["prompt"].lower().split()) for row in load()]
    assert [p for p, n in Counter(prompts).items() if n > 1] == []


def test_no_generator_phrasing_or_topic() -> None:
    patterns, topics = ask_patterns(), [topic.lower() for topic in ALL_TOPICS]
    for row in load():
        prompt = row["prompt"]
        assert not any(pattern.search(prompt) for pattern in patterns), prompt
        assert not any(topic in prompt.lower() for topic in topics), prompt
        assert not any(phrase.lower().rstrip('.?:') in prompt.lower() for phrase in ALL_PHRASES), prompt


def test_ask_patterns_catch_generator_prompts() -> None:
    patterns = ask_patterns()
    for ask in ALL_ASKS:
        assert any(pattern.search(ask.format(topic="a new thing")) for pattern in patterns)


def test_a_prompts_file_may_name_the_role_as_users_write_it(tmp_path) -> None:
    from roleforge.evaluation.contracts import OutputContract
    from roleforge.evaluation.role_report import role_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text('{"role": "CEO", "prompt": "Sell the unit?"}\n{"role": "chief-executive", "prompt": "Hire?"}\n'
                    '{"role": "cfo", "prompt": "Budget?"}\n{"prompt": "Anything?"}\n')
    spellings = {"ceo": "ceo", "chief-executive": "ceo", "cfo": "cfo"}
    assert [r["prompt"] for r in role_prompts("ceo", path, OutputContract(), spellings)] == ["Sell the unit?", "Hire?", "Anything?"]
    assert [r["prompt"] for r in role_prompts("ceo", path, OutputContract())] == ["Anything?"], "without spellings: exact names"


def test_a_prompts_file_may_be_plain_lines_or_json_with_a_byte_order_mark(tmp_path) -> None:
    from roleforge.evaluation.contracts import OutputContract
    from roleforge.evaluation.role_report import role_prompts
    from roleforge.ops.errors import RoleforgeError

    text = tmp_path / "prompts.txt"
    text.write_bytes("\ufeffShould we open a Lisbon office?\n\n2024\n  Cut the travel budget?  \n".encode())
    assert [r["prompt"] for r in role_prompts("ceo", text, OutputContract())] == [
        "Should we open a Lisbon office?", "2024", "Cut the travel budget?"]
    rows = tmp_path / "prompts.jsonl"
    rows.write_bytes('\ufeff{"request": "Sell the unit?", "role": "Ceo "}\n'.encode())
    assert [r["prompt"] for r in role_prompts("ceo", rows, OutputContract(), {"ceo": "ceo"})] == ["Sell the unit?"]
    rows.write_text('{"prompt": "  "}\n')
    with pytest.raises(RoleforgeError, match="prompts.jsonl:1: expected a JSON object with a string 'prompt' \\(or 'request'\\)"):
        role_prompts("ceo", rows, OutputContract())


def test_a_prompts_file_may_be_a_spreadsheet_or_a_json_array(tmp_path) -> None:
    """A CSV of test questions (its prompt column, or its only one) and a `.json` array are read as the prompts they
    hold, not line by line with their quotes, commas and header."""
    from roleforge.evaluation.contracts import OutputContract
    from roleforge.evaluation.role_report import role_prompts
    from roleforge.ops.errors import RoleforgeError

    def prompts(name: str, content: str, spellings: dict | None = None) -> list[str]:
        (tmp_path / name).write_text(content)
        return [r["prompt"] for r in role_prompts("ceo", tmp_path / name, OutputContract(), spellings)]

    assert prompts("questions.csv", 'Role,Question\nCEO,"Open an office in Lisbon, or in Porto?"\ncfo,Budget?\n\n',
                   {"ceo": "ceo", "cfo": "cfo"}) == ["Open an office in Lisbon, or in Porto?"]
    assert prompts("one.csv", 'Questions to ask\n"Hire now, or wait?"\nSell the unit?\n') == ["Hire now, or wait?", "Sell the unit?"]
    assert prompts("list.json", json.dumps(["Hire now, or wait?", "Sell the unit?"], indent=2)) == ["Hire now, or wait?", "Sell the unit?"]
    assert prompts("rows.json", json.dumps([{"question": "Hire?", "agent_role": "CEO"}, {"input": "Cut costs?"}]),
                   {"ceo": "ceo"}) == ["Hire?", "Cut costs?"]
    with pytest.raises(RoleforgeError, match="topics.csv:2: no text in a prompt column"):
        prompts("topics.csv", "role,topic\nceo,pricing\n")


def test_business_roles_train_on_situations_and_the_ways_users_type() -> None:
    import random

    for role in EXEC_ROLES:
        first = exec_prompts(random.Random(1), role)[:210]
        trained = [prompt for prompt, _ in first]
        subjects = {subject for _, subject in ROLE_SITUATIONS[role]}
        assert sum(topic in subjects for _, topic in first) == 70, role
        assert sum(p == p.lower() for p in trained) >= 10, "some typed in lowercase"
        assert sum(any(b in p for b in BREVITY) for p in trained) >= 10, "some ask for a short answer"
