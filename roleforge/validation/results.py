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
        failed = [self._failure(e) for e in self.expectations if not e.success]
        return f"{self.name} failed: " + "; ".join(failed) if failed else ""

    def _failure(self, outcome: ExpectationOutcome) -> str:
        if outcome.expectation == "expect_table_row_count_to_be_between":  # GX counts no unexpected values here
            return "no rows to check" if not self.rows else f"too few rows ({self.rows})"
        return (f"{outcome.expectation}({outcome.column or ''}): {outcome.unexpected_count} unexpected"
                + (f", e.g. {outcome.examples[0]}" if outcome.examples else ""))
