"""Great Expectations suites for a role's batch of stored feedback. Import lazily: GX costs seconds to import."""

from __future__ import annotations

from typing import Any

from roleforge.data_contracts.feedback import MAX_TEXT_CHARS


def feedback_suite(role: str) -> Any:
    """The contract a role's feedback batch must meet before any of it is labeled."""
    import great_expectations as gx

    expect = gx.expectations
    suite = gx.ExpectationSuite(name=f"feedback-{role}")
    for expectation in (
        expect.ExpectTableRowCountToBeBetween(min_value=1),
        expect.ExpectColumnValuesToBeInSet(column="agent_role", value_set=[role]),
        expect.ExpectColumnValuesToNotBeNull(column="prompt"),
        expect.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1, max_value=MAX_TEXT_CHARS),
        expect.ExpectColumnValuesToBeUnique(column="content_hash"),
        expect.ExpectColumnValuesToBeInSet(column="kind", value_set=["rating", "ab"]),
        expect.ExpectColumnValuesToBeBetween(column="rating", min_value=1, max_value=5),
        expect.ExpectColumnValuesToBeInSet(column="preference", value_set=["a", "b"]),
        expect.ExpectColumnValuesToBeBetween(column="confidence", min_value=0.0, max_value=1.0),
    ):
        suite.add_expectation(expectation)
    return suite


def preference_suite(role: str, max_rater_share: float) -> Any:
    """The contract a role's labeled pairs must meet before they are frozen into a training snapshot.

    Expects the derived columns `distinct` (chosen != rejected) and `rater_share` (the share of the role's pairs
    given by the same rater; empty where a pair has no single rater).
    """
    import great_expectations as gx

    expect = gx.expectations
    suite = gx.ExpectationSuite(name=f"preferences-{role}")
    for expectation in (
        expect.ExpectColumnValuesToBeInSet(column="role", value_set=[role]),
        expect.ExpectColumnValuesToBeInSet(column="distinct", value_set=[True]),
        expect.ExpectColumnValuesToBeUnique(column="pair_id"),
        expect.ExpectColumnValueLengthsToBeBetween(column="prompt", min_value=1, max_value=MAX_TEXT_CHARS),
        expect.ExpectColumnValueLengthsToBeBetween(column="chosen", min_value=1, max_value=MAX_TEXT_CHARS),
        expect.ExpectColumnValueLengthsToBeBetween(column="rejected", min_value=1, max_value=MAX_TEXT_CHARS),
        expect.ExpectColumnValuesToBeBetween(column="confidence", min_value=0.0, max_value=1.0),
        expect.ExpectColumnValuesToBeInSet(column="source", value_set=["human_ab", "rating", "teacher", "heuristic", "generated"]),
        expect.ExpectColumnValuesToBeBetween(column="rater_share", min_value=0.0, max_value=max_rater_share),
    ):
        suite.add_expectation(expectation)
    return suite
