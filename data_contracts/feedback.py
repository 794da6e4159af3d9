"""The feedback row contract: one JSON object per line, as users' agents emit it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

MAX_TEXT_CHARS = 32_000
CONFIDENCE_LEVELS = {"low": 0.5, "medium": 0.75, "high": 1.0}

Text = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class FeedbackRow(BaseModel):
    """One piece of feedback on a role's answer: a 1-5 rating of one response, or an A/B choice of two."""

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

    @field_validator("agent_role")
    @classmethod
    def _known_role(cls, role: str, info: ValidationInfo) -> str:
        roles = (info.context or {}).get("roles")
        if roles is not None and role not in roles:
            raise ValueError(f"unknown role {role!r} (configured: {', '.join(sorted(roles))})")
        return role

    @field_validator("prompt", "response", "response_a", "response_b")
    @classmethod
    def _not_blank(cls, text: str | None) -> str | None:
        if text is not None and not text.strip():
            raise ValueError("must not be blank")
        return text

    @field_validator("rating", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # JSON gives ints, CSV gives digit strings; a bool or a fraction is a mistake, not a rating.
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be an integer from 1 to 5")
        return value

    @field_validator("confidence", mode="before")
    @classmethod
    def _confidence(cls, value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            if value.lower() not in CONFIDENCE_LEVELS:
                raise ValueError("must be low, medium, high or a number in [0, 1]")
            return CONFIDENCE_LEVELS[value.lower()]
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


def describe_error(error: ValidationError) -> str:
    """One line that says what is wrong with a row, naming the field."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"
