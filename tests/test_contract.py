"""The feedback row contract: what a good row is, and one clear reason for each bad one."""

import pytest
from pydantic import ValidationError

from roleforge.data_contracts.feedback import MAX_TEXT_CHARS, FeedbackRow, describe_error

ROLES = {"roles": {"ceo", "tool-agent"}}


def reason(value: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        FeedbackRow.model_validate(value, context=ROLES)
    return describe_error(caught.value)


def test_rating_and_ab_rows_are_accepted():
    rated = FeedbackRow.model_validate({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 4}, context=ROLES)
    compared = FeedbackRow.model_validate({"agent_role": "ceo", "prompt": "p", "response_a": "x", "response_b": "y",
                                           "preference": "b", "confidence": "medium", "timestamp": "2026-11-01T10:00:00Z",
                                           "metadata": {"k": 1}, "event_id": "e1", "rater": "u1"}, context=ROLES)
    assert (rated.kind, compared.kind, compared.confidence) == ("rating", "ab", 0.75)


@pytest.mark.parametrize(("row", "expected"), [
    ({"agent_role": "cmo", "prompt": "p", "response": "r", "rating": 3}, "unknown role 'cmo'"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 6}, "rating"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 4.5}, "integer"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": True}, "integer"),
    ({"agent_role": "ceo", "prompt": "p", "response_a": "x", "response_b": "y", "preference": "c"}, "preference"),
    ({"agent_role": "ceo", "prompt": "   ", "response": "r", "rating": 3}, "blank"),
    ({"agent_role": "ceo", "prompt": "p", "response_a": "same", "response_b": "same", "preference": "a"}, "identical"),
    ({"agent_role": "ceo", "prompt": "p" * (MAX_TEXT_CHARS + 1), "response": "r", "rating": 3}, "prompt"),
    ({"agent_role": "ceo", "prompt": "p"}, "missing feedback"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r"}, "needs both"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "preference": "a"}, "not both"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "confidence": 1.5}, "confidence"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "colour": "red"}, "colour"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "timestamp": "yesterday"}, "timestamp"),
])
def test_bad_rows_get_one_line_reason(row, expected):
    message = reason(row)
    assert expected in message and "\n" not in message


def test_csv_digit_strings_are_ratings():
    row = FeedbackRow.model_validate({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": "5"}, context=ROLES)
    assert row.rating == 5
