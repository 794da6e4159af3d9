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
