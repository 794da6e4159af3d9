"""The preference-pair contract: what a labeler produces and what DPO trains on."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from roleforge.data_contracts.feedback import MAX_TEXT_CHARS

Source = Literal["human_ab", "rating", "teacher", "heuristic", "generated"]
HUMAN_SOURCES: tuple[Source, ...] = ("human_ab", "rating")
Split = Literal["train", "held_out"]
# When two sources disagree on the same pair, the one earlier in this list wins.
SOURCE_PRIORITY: tuple[Source, ...] = ("human_ab", "rating", "teacher", "heuristic", "generated")


class PreferencePair(BaseModel):
    """One DPO example: for this role and prompt, `chosen` is preferred over `rejected`."""

    model_config = ConfigDict(frozen=True)

    role: str
    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    chosen: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    rejected: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    source: Source
    labeler: str
    confidence: float = Field(ge=0.0, le=1.0)
    feedback_ids: tuple[int, ...]
    rater: str | None = None

    @model_validator(mode="after")
    def _distinct(self) -> PreferencePair:
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are identical")
        return self

    @property
    def pair_id(self) -> str:
        """Identity of the judgement, independent of who made it."""
        return hashlib.sha256(json.dumps([self.role, self.prompt, self.chosen, self.rejected]).encode()).hexdigest()[:20]

    @property
    def unordered_key(self) -> tuple[str, frozenset[str]]:
        """Two pairs with the same key judge the same two responses, possibly in opposite directions."""
        return self.prompt, frozenset((self.chosen, self.rejected))
