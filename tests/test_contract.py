"""The feedback row contract: what a good row is, and one clear reason for each bad one."""

import json

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from roleforge.ingest.rows import parse_records

from roleforge.data_contracts.feedback import (MAX_TEXT_CHARS, FeedbackRow, decode_record, describe_error, fast_fields,
                                               role_spellings)

ROLES = {"roles": role_spellings(["ceo", "tool-agent"], {"ceo": ["chief-executive"]})}


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
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 6}, "rating: must be from 1 to 5, not 6 (a score on another scale"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": " 8"}, "rating: must be from 1 to 5, not 8 (a score on another scale"),
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
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "colour": "red", "metadata": {"colour": "blue"}},
     "colour: given as a field and in metadata with another value"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "thumbs": "sideways"}, "thumbs: must be up or down"),
    ({"agent_role": "ceo", "messages": [{"role": "assistant", "content": "Hi."}]}, "messages: no user turn"),
    ({"agent_role": "ceo", "messages": [{"role": "user"}], "rating": 4}, "messages: message 1 must be an object"),
    ({"agent_role": "ceo", "messages": "Expand?", "response": "r", "rating": 4}, "messages: must be a list"),
    ({"agent_role": "ceo", "prompt": "p", "chosen": {"role": "user", "content": "x"}, "rejected": "y"}, "chosen: must be"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "timestamp": "yesterday"}, "timestamp"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r\x00", "rating": 3}, "response: must not contain a NUL"),
    ({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "rater": "\x00"}, "rater: must not contain a NUL"),
])
def test_bad_rows_get_one_line_reason(row, expected):
    message = reason(row)
    assert expected in message and "\n" not in message


def test_csv_digit_strings_are_ratings():
    row = FeedbackRow.model_validate({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": "5"}, context=ROLES)
    assert row.rating == 5


def test_csv_cells_and_numeric_ids_are_read_as_meant():
    # A CSV row's cells are all text; a platform's rater and event ids are often numbers.
    row = FeedbackRow.model_validate({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": "4", "confidence": "0.8",
                                      "metadata": '{"channel": "slack"}', "rater": 17, "event_id": 9001}, context=ROLES)
    assert (row.confidence, row.metadata, row.rater, row.event_id) == (0.8, {"channel": "slack"}, "17", "9001")
    assert reason({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 4, "metadata": "{oops"}) == (
        "metadata: must be an object (a CSV cell: its JSON text)")
    assert reason({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 4, "confidence": "1.5"}).startswith("confidence")
    assert reason({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 4, "rater": True}).startswith("rater")


def test_rows_in_other_tools_fields_and_shapes_are_read_as_meant():
    """Exports name fields their own way, carry fields of their own, and give feedback as thumbs, chosen/rejected
    pairs (TRL's preference datasets) or chat transcripts: each is the row it means, and nothing in it is dropped."""
    def row(value: dict) -> dict:
        return FeedbackRow.model_validate(value, context=ROLES).model_dump(exclude_none=True)

    assert row({"Role": "CEO", "question": "Expand?", "answer": "Decision: yes.", "score": "4/5", "session_id": "s-9",
                "latency_ms": 840}) == {"agent_role": "ceo", "prompt": "Expand?", "response": "Decision: yes.", "rating": 4,
                                        "metadata": {"session_id": "s-9", "latency_ms": 840}}
    # The contract's own field wins over an alias, which is kept.
    assert row({"agent_role": "ceo", "prompt": "p", "input": "q", "response": "r", "rating": 2})["metadata"] == {"input": "q"}
    ratings = [row({"agent_role": "ceo", "prompt": "p", "response": "r", **given})["rating"]
               for given in ({"thumbs": "up"}, {"thumbs": "Thumbs Down"}, {"thumbs": True}, {"thumbs": 0}, {"thumbs": "FALSE"},
                             {"rating": "\N{THUMBS UP SIGN}"}, {"rating": "down"}, {"rating": "8/10"}, {"stars": "2 stars"},
                             {"rating": "5 out of 10"})]
    assert ratings == [5, 1, 5, 1, 1, 5, 1, 4, 2, 3]
    pair = {"agent_role": "ceo", "response_a": "Decision: yes.", "response_b": "Maybe.", "preference": "a"}
    assert row({"role": "ceo", "prompt": "Expand?", "chosen": "Decision: yes.", "rejected": "Maybe."}) == {**pair, "prompt": "Expand?"}
    assert row({"agent_role": "ceo", "prompt": [{"role": "user", "content": "Expand?"}],
                "chosen": [{"role": "assistant", "content": "Decision: yes."}],
                "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "Maybe."}]}]}) == {**pair, "prompt": "Expand?"}
    stamps = [row({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "timestamp": given})["timestamp"].isoformat()
              for given in ("2026-11-02 09:30:00 UTC", "Mon, 02 Nov 2026 10:30:00 +0100")]
    assert stamps == ["2026-11-02T09:30:00+00:00", "2026-11-02T10:30:00+01:00"]
    assert reason({"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 3, "timestamp": "11/02/2026"}).startswith("timestamp")
    transcript = row({"agent_role": "ceo", "thumbs": "down", "messages": [
        {"role": "system", "content": "You are our CEO."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Expand?"},
        {"role": "assistant", "content": "Maybe."}]})
    assert transcript == {"agent_role": "ceo", "prompt": "Expand?", "response": "Maybe.", "rating": 1, "metadata": {
        "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
        "system_prompt": "You are our CEO."}}


# The bulk path's check (fast_fields) must never accept what the model rejects, nor change a value it accepts.
texts = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "\u2003", "ok", "x" * (MAX_TEXT_CHARS + 1)]))
anything = st.one_of(st.none(), st.booleans(), st.integers(-2, 7), st.floats(-1, 2), texts,
                     st.sampled_from(["low", "HIGH", "4", "2026-11-01T10:00:00Z", "2026-11-01", "yesterday", "2026-11-01 10:00 UTC",
                                      "Sun, 01 Nov 2026 10:00:00 GMT", "a", "B", " A ",
                                      "response_b", "Response A"]),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.lists(st.integers(), max_size=2))
candidate_rows = st.fixed_dictionaries(
    {"agent_role": st.sampled_from(["ceo", "CEO", "Chief-Executive", "tool-agent", "Tool-Agent", "Tool Agent", " ceo ",
                                    "tool_agent", "cmo", "", 3]),
     "prompt": anything},
    optional={name: anything for name in ("response", "rating", "response_a", "response_b", "preference", "event_id",
                                          "rater", "confidence", "metadata", "timestamp", "colour")},
)


@settings(max_examples=3000, deadline=None)
@given(candidate_rows)
def test_fast_path_agrees_with_the_model(row):
    fields = fast_fields(row, ROLES["roles"])
    try:
        expected = FeedbackRow.model_validate(row, context=ROLES).__dict__
    except ValidationError:
        assert fields is None
        return
    assert fields is None or fields == expected


# The bulk path proper (decode_record, from a line's bytes) likewise, and it takes only lines that orjson reads.
def assert_bulk_agrees(line: bytes) -> None:
    record = decode_record(line, ROLES["roles"])
    try:
        value = orjson.loads(line)
        expected = FeedbackRow.model_validate(value, context=ROLES).__dict__
    except (orjson.JSONDecodeError, ValidationError):
        assert record is None
        return
    assert record is None or msgspec.structs.asdict(record) == expected


@settings(max_examples=3000, deadline=None)
@given(candidate_rows)
def test_the_bulk_decoder_agrees_with_orjson_and_the_model(row):
    assert_bulk_agrees(json.dumps(row).encode())


RATED = b'{"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 4'


@pytest.mark.parametrize("line", [
    RATED + b', "prompt": "\\ud800"}',  # a lone surrogate
    RATED.replace(b'"r"', b'"caf\xe9"') + b"}",  # not UTF-8
    RATED + b', "metadata": {"k": 123456789012345678901234567890}}',  # past 64 bits
    RATED + b', "metadata": {"k": 1e400}}',  # infinite
    RATED + b', "metadata": {"k": 1, "k": [2]}}',
    RATED + b', "confidence": NaN}',
    RATED + b', "confidence": 1}',
    RATED + b', "confidence": 1e-400}',
    RATED + b', "confidence": " high"}',
    b"\xef\xbb\xbf" + RATED + b"}",  # a byte-order mark
    RATED + b"} {}",  # trailing content
    RATED + b"}\r\n",
    RATED + b', "rating": 5.0}',  # the model takes 5.0
    RATED + b', "timestamp": 1767225600}',  # the model takes seconds since the epoch
    RATED + b', "timestamp": "2026-11-01 10:00"}',
    RATED + b', "prompt": "\\u2003"}',  # blank
    RATED + b', "prompt": "a\\u0000b"}',  # a NUL character
    RATED + b', "prompt": "a\\\\u0000b"}',  # a backslash, then "u0000": no NUL
    RATED + b', "metadata": {"k": "\\u0000"}}',  # metadata is JSON, stored escaped
])
def test_the_bulk_decoder_agrees_at_the_edges(line):
    assert_bulk_agrees(line)


def test_the_bulk_decoder_reads_duplicate_keys_as_orjson_does():
    record = decode_record(RATED + b', "rating": 2, "response": "s"}', ROLES["roles"])
    assert (record.rating, record.response) == (2, "s") == (orjson.loads(RATED + b', "rating": 2, "response": "s"}')["rating"], "s")


def test_fast_path_takes_the_common_rows():
    rows = [{"agent_role": "ceo", "prompt": "p", "response": "r", "rating": 4, "rater": "u1", "confidence": "high"},
            {"agent_role": "ceo", "prompt": "p", "response_a": "x", "response_b": "y", "preference": "b",
             "timestamp": "2026-11-01T10:00:00Z", "metadata": {"k": 1}, "event_id": "e1", "confidence": 0.5},
            {"agent_role": "tool-agent", "prompt": "p", "response": "r", "rating": 1, "metadata": None,
             "confidence": "Low", "timestamp": "2026-11-01"}]
    for row in rows:
        expected = FeedbackRow.model_validate(row, context=ROLES).__dict__
        assert fast_fields(row, ROLES["roles"]) == expected
        assert msgspec.structs.asdict(decode_record(orjson.dumps(row), ROLES["roles"])) == expected


def test_roles_match_case_insensitively_and_by_alias_on_every_path():
    for spelling in ("ceo", "CEO", "Ceo", "chief-executive", "CHIEF-EXECUTIVE"):
        row = {"agent_role": spelling, "prompt": "p", "response": "r", "rating": 4}
        assert FeedbackRow.model_validate(row, context=ROLES).agent_role == "ceo"
        assert fast_fields(row, ROLES["roles"])["agent_role"] == "ceo"
        assert decode_record(orjson.dumps(row), ROLES["roles"]).agent_role == "ceo"
    # Other separators and blanks around the name: the bulk paths leave them to the model, and ingest stores them so.
    spellings = (" ceo ", "Chief Executive", "chief_executive", "CHIEF -  EXECUTIVE")
    lines = [(n, orjson.dumps({"agent_role": s, "prompt": "p", "response": "r", "rating": 4})) for n, s in enumerate(spellings)]
    batch = parse_records("f.jsonl", lines, ROLES["roles"])
    assert ([row["agent_role"] for row in batch.rows], batch.quarantined) == (["ceo"] * 4, [])
    assert "unknown role 'chief'" in reason({"agent_role": "chief", "prompt": "p", "response": "r", "rating": 4})


def test_a_b_choices_as_users_write_them_are_stored_as_a_or_b():
    for written, stored in (("A", "a"), (" b ", "b"), ("response_a", "a"), ("Response B", "b"), ("RESPONSE-A", "a")):
        row = {"agent_role": "Tool Agent", "prompt": "p", "response_a": "x", "response_b": "y", "preference": written}
        fields = FeedbackRow.model_validate(row, context=ROLES).__dict__
        assert (fields["agent_role"], fields["preference"]) == ("tool-agent", stored)
    assert reason({"agent_role": "ceo", "prompt": "p", "response_a": "x", "response_b": "y", "preference": "first"}) == (
        "preference: must be a or b (response_a or response_b), not 'first'")


def test_two_roles_answering_to_one_name_are_refused():
    with pytest.raises(ValueError, match="roles 'ceo' and 'cfo' both answer to 'CEO'"):
        role_spellings(["ceo", "cfo"], {"cfo": ["CEO"]})
    with pytest.raises(ValueError, match="roles 'vp-sales' and 'vp sales' both answer to 'vp sales'"):
        role_spellings(["vp-sales", "vp sales"])
    assert role_spellings(["ceo"], {"ceo": ["CEO", "ceo"]}) == {"ceo": "ceo", "CEO": "ceo"}
