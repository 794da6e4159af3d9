"""The poisoning guard: a rater, source or prompt that suddenly dominates a role's new feedback holds it back."""

from __future__ import annotations

import pytest

from roleforge.config.settings import ShiftGuardConfig
from roleforge.validation.shift_guard import shift_guard


def rows(count: int, start: int = 1, rater=lambda i: f"user-{i % 40}", source=lambda i: None, prompt=lambda i: f"q{i}"):
    return [{"id": start + i, "rater": rater(i), "prompt": prompt(i),
             "metadata": {"source": source(i)} if source(i) else None} for i in range(count)]


def tripped(result) -> dict[str, list[str]]:
    return {f"{e.expectation}({e.column})": e.examples for e in result.expectations if not e.success}


def test_ordinary_feedback_passes_first_time_and_after_training():
    history = rows(300, source=lambda i: "web" if i % 3 else "slack")
    assert shift_guard("ceo", history, 0, ShiftGuardConfig()).success
    new = rows(120, start=301, source=lambda i: "web" if i % 3 else "slack")
    assert shift_guard("ceo", history + new, 300, ShiftGuardConfig()).success


def test_one_rater_flooding_new_rows_is_named():
    history = rows(300)
    flood = rows(100, start=301, rater=lambda i: "user-7" if i < 70 else f"user-{i}")
    result = shift_guard("ceo", history + flood, 300, ShiftGuardConfig())
    assert not result.success
    assert tripped(result)["rows_share(rater)"] == ["rater user-7 gave 70% of 100 new rows (limit 50%)"]
    assert "rater user-7: 70% of 100 new rows, 3% of 300 before" in result.failure_summary
    assert result.failure_summary.startswith("shift guard failed:")


def test_a_source_whose_share_jumps_trips_the_shift_rule_only_against_history():
    history = rows(300, source=lambda i: "web")
    new = rows(100, start=301, source=lambda i: "api-key-9" if i < 60 else "web")
    result = shift_guard("ceo", history + new, 300, ShiftGuardConfig())
    assert list(tripped(result)) == ["rows_share_shift(source)"]
    # The same rows as a first batch: nothing to shift from, and one source alone is normal.
    assert shift_guard("ceo", new, 0, ShiftGuardConfig()).success


def test_one_prompt_repeated_across_new_rows_trips():
    flood = rows(200, prompt=lambda i: "what is our refund policy?" if i < 30 else f"q{i}")
    result = shift_guard("ceo", flood, 0, ShiftGuardConfig())
    assert tripped(result) == {"prompt_repeats(prompt)": ["prompt 'what is our refund policy?' is 30 of 200 new rows"]}


@pytest.mark.parametrize("count", [5, 19])
def test_too_few_new_rows_are_not_judged_on_shares(count):
    assert shift_guard("ceo", rows(count, rater=lambda i: "user-1"), 0, ShiftGuardConfig()).success


def test_sample_feedback_passes_the_guard(home):
    from roleforge.cli import main
    from roleforge.config.settings import load_settings
    from roleforge.tasks.label import label_stored
    from tests.conftest import SAMPLE

    assert main(["ingest", str(SAMPLE)]) == 0
    settings = load_settings()
    for role in settings.roles:
        _, (_, guard) = label_stored(role, settings)
        assert guard.success, guard.failure_summary


def test_a_flood_after_the_sample_is_reported_by_label(home, capsys, tmp_path):
    import json

    from roleforge.cli import main
    from tests.conftest import SAMPLE

    flood = tmp_path / "flood.jsonl"
    flood.write_text("".join(json.dumps({"agent_role": "ceo", "prompt": f"Should we cut prices? ({i})", "response": "Yes.",
                                         "rating": 5, "rater": "bot-1"}) + "\n" for i in range(400)))
    assert main(["ingest", str(SAMPLE), str(flood)]) == 0
    capsys.readouterr()
    assert main(["label", "--roles", "ceo,cfo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "rater bot-1 gave 55% of 730 new rows (limit 50%)" in result["ceo"]["shift_guard"]
    assert result["cfo"]["shift_guard"] == "passed"
