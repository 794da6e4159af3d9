"""The Great Expectations feedback suite passes clean batches and names what fails in bad ones."""

from roleforge.tasks.validate import validate_feedback


def row(hash_, **extra):
    return {"agent_role": "ceo", "kind": "rating", "prompt": "p", "response": "r", "rating": 4, "content_hash": hash_, **extra}


def test_clean_batch_passes():
    result = validate_feedback("ceo", [row("a"), row("b", kind="ab", rating=None, response_a="x", response_b="y", preference="a")])
    assert result.success and result.rows == 2 and all(e.success for e in result.expectations)


def test_mixed_roles_and_duplicates_fail_with_names():
    result = validate_feedback("ceo", [row("a"), row("a"), row("c", agent_role="cfo")])
    failed = {(e.expectation, e.column) for e in result.expectations if not e.success}
    assert failed == {("expect_column_values_to_be_unique", "content_hash"), ("expect_column_values_to_be_in_set", "agent_role")}
    assert "agent_role" in result.failure_summary


def test_empty_batch_fails_saying_so():
    result = validate_feedback("ceo", [])
    assert not result.success and result.failure_summary == "contract failed: no rows to check"
