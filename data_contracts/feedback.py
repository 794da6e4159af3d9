"""The feedback row contract: one JSON object per line, as users' agents emit it."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson
from pydantic import (BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from roleforge.data_contracts.feedback_spellings import (NAME_SEPARATORS, feedback_fields, field_key, metadata_value,
                                                        thumbs_rating, timestamp_text)

MAX_TEXT_CHARS = 32_000
CONFIDENCE_LEVELS = {"low": 0.5, "medium": 0.75, "high": 1.0}
NUL = "\x00"

Text = Field(min_length=1, max_length=MAX_TEXT_CHARS)


# The choice of an A/B row as users' tools write it: "A", " b", or the field name of the chosen answer.
PREFERENCES = {"a": "a", "b": "b", "response_a": "a", "response_b": "b"}


def role_key(name: str) -> str:
    """A role name as names are matched: case, blanks around it and the separators between its words ignored."""
    return NAME_SEPARATORS.sub("-", name.strip().casefold())


def preference_choice(value: Any) -> Any:
    """An A/B choice as `a` or `b`, from any of the ways users' tools write it (a pydantic before-validator: a
    value of another type is left to the field's own check)."""
    if not isinstance(value, str):
        return value
    choice = PREFERENCES.get(field_key(value))
    if choice is None:
        raise ValueError(f"must be a or b (response_a or response_b), not {value!r}")
    return choice


class RoleSpellings(dict[str, str]):
    """Every way a row may name a role -> the role's configured name: names and aliases as written, case-folded and
    as role_key gives them. The contract's checks take the roles in this form (role_spellings)."""


def role_spellings(roles: Iterable[str], aliases: Mapping[str, Iterable[str]] | None = None) -> RoleSpellings:
    """The spellings of configured roles; a ValueError when two roles answer to the same name.

    Args:
        roles: the configured role names, or their RoleSpellings (returned as they are).
        aliases: role name -> the other names rows may give it (`[roles.R] aliases`).
    """
    if isinstance(roles, RoleSpellings):
        return roles
    spellings = RoleSpellings()
    for name in roles:
        for spelling in (name, *(aliases or {}).get(name, ())):
            for key in (spelling, spelling.casefold(), role_key(spelling)):
                if spellings.setdefault(key, name) != name:
                    raise ValueError(f"roles {spellings[key]!r} and {name!r} both answer to {spelling!r} (role names "
                                     "and aliases match ignoring case, spaces, hyphens and underscores)")
    return spellings


def canonical_role(role: str, spellings: Mapping[str, str]) -> str | None:
    """The configured name of the role a row names, None for an unknown one (the bulk paths inline its first two
    lookups and leave the rest to the model)."""
    return spellings.get(role) or spellings.get(role.casefold()) or spellings.get(role_key(role))


class FeedbackRow(BaseModel):
    """One piece of feedback on a role's answer: a 1-5 rating of one response, or an A/B choice of two. Rows written
    in other tools' fields and shapes are read first (feedback_spellings.py); fields it does not know go to metadata."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)

    agent_role: str = Field(min_length=1, max_length=128)
    prompt: str = Text
    response: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    rating: int | None = Field(default=None, ge=1, le=5)
    response_a: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    response_b: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    preference: Literal["a", "b"] | None = None
    event_id: str | None = Field(default=None, max_length=256)
    rater: str | None = Field(default=None, max_length=256)
    confidence: float | None = None
    metadata: dict[str, Any] | None = None
    timestamp: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, value: Any) -> Any:
        return feedback_fields(value, FIELDS)

    @field_validator("agent_role")
    @classmethod
    def _known_role(cls, role: str, info: ValidationInfo) -> str:
        roles = (info.context or {}).get("roles")
        if roles is None:
            return role
        spellings = role_spellings(roles)
        name = canonical_role(role, spellings)
        if name is None:
            raise ValueError(f"unknown role {role!r} (configured: {', '.join(sorted(set(spellings.values())))})")
        return name  # the row is stored under the role's configured name, however it was spelled

    @field_validator("preference", mode="before")
    @classmethod
    def _choice(cls, value: Any) -> Any:
        return preference_choice(value)

    @field_validator("prompt", "response", "response_a", "response_b")
    @classmethod
    def _not_blank(cls, text: str | None) -> str | None:
        if text is not None and not text.strip():
            raise ValueError("must not be blank")
        return text

    @field_validator("agent_role", "prompt", "response", "response_a", "response_b", "event_id", "rater", mode="after")
    @classmethod
    def _no_nul(cls, text: str | None) -> str | None:
        # No feedback text holds one but corrupted data, and PostgreSQL's text cannot: refused for every store, so
        # that the same file stores the same rows whatever the database.
        if text is not None and NUL in text:
            raise ValueError("must not contain a NUL character (\\u0000)")
        return text

    @field_validator("rating", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # JSON gives ints, CSV gives digit strings; a bool or a fraction is a mistake, not a rating.
        value = thumbs_rating(value)
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer from 1 to 5")
        number = int(value) if isinstance(value, str) and value.strip().isdigit() else value  # a CSV cell's text
        if isinstance(number, (int, float)) and number > 5:  # a score on another scale, which only the writer knows
            raise ValueError(f"must be from 1 to 5, not {number:g} (a score on another scale: give it as {number:g}/10)")
        return value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> Any:
        return timestamp_text(value)

    @field_validator("event_id", "rater", mode="before")
    @classmethod
    def _id(cls, value: Any) -> Any:
        # Platforms number their users and events: an integer id is that id's text.
        return str(value) if type(value) is int else value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return metadata_value(value)  # a CSV cell holds an object only as its JSON text

    @field_validator("confidence", mode="before")
    @classmethod
    def _confidence(cls, value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            level = CONFIDENCE_LEVELS.get(value.strip().lower())
            if level is None:  # a CSV cell holds a number as its text
                try:
                    level = float(value)
                except ValueError:
                    raise ValueError("must be low, medium, high or a number in [0, 1]") from None
            value = level
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError("must be low, medium, high or a number in [0, 1]")
        return float(value)

    @model_validator(mode="after")
    def _one_kind(self) -> FeedbackRow:
        rated = self.response is not None or self.rating is not None
        compared = any(v is not None for v in (self.response_a, self.response_b, self.preference))
        if rated and compared:
            raise ValueError("give either response + rating or response_a + response_b + preference, not both")
        if rated and (self.response is None or self.rating is None):
            raise ValueError("a rated row needs both response and rating")
        if compared and None in (self.response_a, self.response_b, self.preference):
            raise ValueError("an A/B row needs response_a, response_b and preference")
        if not rated and not compared:
            raise ValueError("missing feedback: give response + rating or response_a + response_b + preference")
        if compared and self.response_a == self.response_b:
            raise ValueError("response_a and response_b are identical")
        return self

    @property
    def kind(self) -> Literal["rating", "ab"]:
        return "rating" if self.rating is not None else "ab"


FIELDS = frozenset(FeedbackRow.model_fields)
RATED_ONLY, COMPARED_ONLY = ("response", "rating"), ("response_a", "response_b", "preference")


EMPTY_ROW = dict.fromkeys(FeedbackRow.model_fields)


@functools.cache
def _timestamp_adapter() -> TypeAdapter[datetime | None]:
    return TypeAdapter(datetime | None)


def fast_fields(value: dict[str, Any], roles: RoleSpellings) -> dict[str, Any] | None:
    """The row's fields exactly as `FeedbackRow.model_validate(value, context={"roles": roles})` would give them
    (`roles`: role_spellings'), for rows whose values already have their canonical JSON types; None for
    anything else, which then goes through the model (and its error message). Ingest calls it for every row: it is
    the bulk path's contract check, a sufficient condition of the model's (tests/test_contract.py checks the two
    agree). The checks are written out rather than calling helpers: a Python call per field was a third of its
    time."""
    if type(value) is not dict or not FIELDS.issuperset(value):
        return None
    get = value.get
    role, prompt = get("agent_role"), get("prompt")
    if type(role) is not str or not 0 < len(role) <= 128:
        return None
    name = roles.get(role) or roles.get(role.casefold())  # canonical_role, inlined
    if (name is None or type(prompt) is not str or not 0 < len(prompt) <= MAX_TEXT_CHARS or prompt.isspace()):
        return None
    event_id, rater = get("event_id"), get("rater")
    if ((event_id is not None and (type(event_id) is not str or len(event_id) > 256))
            or (rater is not None and (type(rater) is not str or len(rater) > 256))):
        return None
    rating, response = get("rating"), get("response")
    if rating is not None or response is not None:
        if (type(rating) is not int or not 1 <= rating <= 5 or type(response) is not str
                or not 0 < len(response) <= MAX_TEXT_CHARS or response.isspace()):
            return None
        if get("response_a") is not None or get("response_b") is not None or get("preference") is not None:
            return None  # COMPARED_ONLY, spelled out: this runs for every row
    else:
        first, second, preference = get("response_a"), get("response_b"), get("preference")
        if (type(first) is not str or not 0 < len(first) <= MAX_TEXT_CHARS or first.isspace()
                or type(second) is not str or not 0 < len(second) <= MAX_TEXT_CHARS or second.isspace()
                or first == second or preference not in ("a", "b")):
            return None
    confidence = get("confidence")
    if type(confidence) is str:
        confidence = CONFIDENCE_LEVELS.get(confidence.lower())
        if confidence is None:
            return None
    elif confidence is not None:
        if type(confidence) not in (int, float) or not 0.0 <= confidence <= 1.0:
            return None
        confidence = float(confidence)
    metadata = get("metadata")
    if metadata is not None and type(metadata) is not dict:
        return None
    timestamp = get("timestamp")
    if timestamp is not None:
        try:
            timestamp = _timestamp_adapter().validate_python(timestamp)
        except ValidationError:
            return None
    if any(NUL in text for text in (role, prompt, event_id, rater, response, get("response_a"), get("response_b"))
           if text is not None):
        return None
    fields = {**EMPTY_ROW, **value}
    fields["agent_role"], fields["confidence"], fields["timestamp"] = name, confidence, timestamp
    return fields


ShortText = Annotated[str, msgspec.Meta(max_length=256)]
LongText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_CHARS)]
NO_METADATA = msgspec.Raw(b"null")


class FeedbackRecord(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A feedback row in the bulk form ingest works with: decoded from a JSON line by msgspec, in C, with the
    contract's field names, types, lengths and ranges checked on the way (`decode_record`), and the model's field
    values once `decode_record` or `record_of` returns it. msgspec counts lengths in characters, as the model does, and
    is strict about types where the model is lax (a rating of 5.0, a timestamp given as a number): such rows, and
    every other row it refuses, go through the model. Metadata is kept as its raw JSON text and decoded by orjson, so
    that what the bulk path accepts there is exactly what orjson accepts."""

    agent_role: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    prompt: LongText
    response: LongText | None = None
    rating: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None
    response_a: LongText | None = None
    response_b: LongText | None = None
    preference: Literal["a", "b"] | None = None
    event_id: ShortText | None = None
    rater: ShortText | None = None
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | str | None = None
    metadata: msgspec.Raw = NO_METADATA
    timestamp: str | None = None


_decode = msgspec.json.Decoder(FeedbackRecord).decode
_NOT_DECODED = (msgspec.MsgspecError, UnicodeDecodeError)


def decode_record(line: bytes, roles: RoleSpellings) -> FeedbackRecord | None:
    """The line's row with the model's field values, as `FeedbackRow.model_validate(orjson.loads(line), context=
    {"roles": roles})` would give them, for a line that orjson reads and whose values have their canonical JSON
    types; None for any other line, which then goes through orjson and the model (and its error message). Ingest's
    bulk path, two to three times cheaper than orjson and `fast_fields` (tests/test_contract.py checks that the two
    paths agree)."""
    try:
        record = _decode(line)
    except _NOT_DECODED:
        return None
    role = record.agent_role
    name = roles.get(role) or roles.get(role.casefold())  # canonical_role, inlined
    if name is None or record.prompt.isspace():
        return None
    # Written out, as in fast_fields: a third of the cost of searching each line's bytes for the escape "\u0000"
    # (docs/perf-notes.md).
    if (NUL in role or NUL in record.prompt or (record.response is not None and NUL in record.response)
            or (record.response_a is not None and NUL in record.response_a)
            or (record.response_b is not None and NUL in record.response_b)
            or (record.event_id is not None and NUL in record.event_id)
            or (record.rater is not None and NUL in record.rater)):
        return None
    if record.rating is not None or record.response is not None:
        if (record.rating is None or record.response is None or record.response.isspace()
                or record.response_a is not None or record.response_b is not None or record.preference is not None):
            return None
    else:
        first, second = record.response_a, record.response_b
        if (first is None or second is None or record.preference is None or first == second or first.isspace()
                or second.isspace()):
            return None
    if type(record.confidence) is str:
        record.confidence = CONFIDENCE_LEVELS.get(record.confidence.lower())
        if record.confidence is None:
            return None
    if record.metadata is NO_METADATA:
        record.metadata = None
    else:
        try:  # orjson's reading of the text, not msgspec's: the two differ at the edges (integers past 64 bits)
            record.metadata = orjson.loads(memoryview(record.metadata))
        except orjson.JSONDecodeError:
            return None
        if record.metadata is not None and type(record.metadata) is not dict:
            return None
    if record.timestamp is not None:
        try:
            record.timestamp = _timestamp_adapter().validate_python(record.timestamp)
        except ValidationError:
            return None
    record.agent_role = name
    return record


def record_of(fields: dict[str, Any]) -> FeedbackRecord:
    """The bulk form of a row's fields as the model (or `fast_fields`) gives them."""
    return FeedbackRecord(**fields)


def describe_error(error: ValidationError) -> str:
    """One line that says what is wrong with a row, naming the field."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"
