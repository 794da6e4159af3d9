"""A check's verdict on a role's batch, whatever ran it (a Great Expectations suite, the shift guard): one line per
expectation, and the one-line reason a held-back role gets."""

from __future__ import annotations

from pydantic import BaseModel


class ExpectationOutcome(BaseModel):
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    examples: list[str]


class ContractResult(BaseModel):
    """A role's contract verdict, one line per expectation."""

    role: str
    rows: int
    success: bool
    expectations: list[ExpectationOutcome]
    name: str = "contract"

    @property
    def failure_summary(self) -> str:
        failed = [f"{e.expectation}({e.column or ''}): {e.unexpected_count} unexpected"
                  + (f", e.g. {e.examples[0]}" if e.examples else "") for e in self.expectations if not e.success]
        return f"{self.name} failed: " + "; ".join(failed) if failed else ""
