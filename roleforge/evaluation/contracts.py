"""Output contracts: the shape a role's answers must take (required lines, regular expressions, a JSON schema, or a
tool call), checked on generated answers so that evaluation sees behaviour, not only log-probabilities."""

from __future__ import annotations

import json
import re
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A required line may carry markdown emphasis or a heading mark ("**Decision:**", "## Risk:"), as chat models write.
_DECORATION = r"[\s>*_#-]*"


class OutputContract(BaseModel):
    """What every answer of a role must contain; `[roles.R.output]` in roleforge.toml. Empty: no contract."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key would leave the role without the check it meant

    required_lines: list[str] = Field(
        default=[], description="Labels that must each start a line, in this order, e.g. ['Decision:', 'Reason:', 'Next step:'] "
                                "(case-insensitive; markdown emphasis around a label is accepted).")
    patterns: list[str] = Field(default=[], description="Regular expressions that must each match somewhere (multiline).")
    min_matches: dict[str, int] = Field(
        default={}, description="Regular expressions that must match at least this many times, e.g. {'^\\\\s*\\\\d+[.)]': 2} "
                                "for a numbered list of two steps or more.")
    json_schema: dict[str, Any] | None = Field(
        default=None, description="A JSON schema the answer (or its ```json block) must validate against.")
    tool_call: bool = Field(default=False, description="The answer is a tool call: a Thought line, Action: and a JSON "
                                                       "block naming a known tool (roleforge/evaluation/tool_use.py).")

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            _compile(pattern)
        return patterns

    @field_validator("min_matches")
    @classmethod
    def _counts(cls, counts: dict[str, int]) -> dict[str, int]:
        for pattern, count in counts.items():
            _compile(pattern)
            if count < 1:
                raise ValueError(f"min_matches[{pattern!r}] = {count}: must be at least 1")
        return counts

    @model_validator(mode="after")
    def _schema_valid(self) -> OutputContract:
        if self.json_schema is not None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                Draft202012Validator.check_schema(self.json_schema)
            except SchemaError as error:
                raise ValueError(f"json_schema is not a valid JSON schema: {error.message}") from error
        return self

    @property
    def empty(self) -> bool:
        return not (self.required_lines or self.patterns or self.min_matches or self.json_schema is not None or self.tool_call)

    @cached_property
    def _line_labels(self) -> list[re.Pattern[str]]:
        def line_start(label: str) -> re.Pattern[str]:
            text = label.strip()
            # "Reason:" also matches "**Reason**:" and "**Reason:**": emphasis may close before or after the colon.
            body = rf"{re.escape(text[:-1])}[*_]*\s*:" if text.endswith(":") else re.escape(text)
            return re.compile(rf"^{_DECORATION}{body}", re.IGNORECASE | re.MULTILINE)

        return [line_start(label) for label in self.required_lines]

    def violations(self, answer: str) -> list[str]:
        """What the answer misses, one short reason each; an empty list is a compliant answer."""
        missing: list[str] = []
        position = 0
        for label, compiled in zip(self.required_lines, self._line_labels):
            found = compiled.search(answer, position)
            if found is None:
                missing.append(f"no line starting with {label!r}" + (" after the previous one" if compiled.search(answer) else ""))
            else:
                position = found.end()
        missing.extend(f"no match for /{pattern}/" for pattern in self.patterns if not _compile(pattern).search(answer))
        for pattern, count in self.min_matches.items():
            seen = len(_compile(pattern).findall(answer))
            if seen < count:
                missing.append(f"/{pattern}/ matches {seen} time(s), fewer than {count}")
        if self.json_schema is not None:
            missing.extend(_schema_violations(answer, self.json_schema))
        if self.tool_call:
            from roleforge.evaluation.tool_use import check_tool_use

            check = check_tool_use(answer)
            if not check.compliant():
                missing.append("not a tool call (Thought line, Action: and a JSON block with a known tool)")
        return missing

    def complies(self, answer: str) -> bool:
        return not self.violations(answer)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.MULTILINE | re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"pattern {pattern!r} is not a regular expression: {error}") from error


_JSON_BLOCK = re.compile(r"```(?:json)?\s*\n(.*?)\n?```", re.DOTALL)


def _schema_violations(answer: str, schema: dict[str, Any]) -> list[str]:
    from jsonschema import Draft202012Validator

    block = _JSON_BLOCK.search(answer)
    text = block.group(1) if block else answer.strip()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        return [f"no JSON document ({error.msg})"]
    problem = next(iter(Draft202012Validator(schema).iter_errors(document)), None)
    return [] if problem is None else [f"JSON schema: {problem.message}"]


class Compliance(BaseModel):
    """How often one model's answers follow the role's contract, with a Wilson interval."""

    answers: int
    compliant: int
    rate: float
    low: float
    high: float
    # The most common violation and how often it was seen: what to look at first when the rate is low.
    top_violation: str | None = None


def compliance(contract: OutputContract, answers: list[str], confidence: float = 0.95) -> Compliance:
    """The share of answers that follow the contract, and the interval of that share."""
    from collections import Counter

    from roleforge.evaluation.ab import wilson_interval

    problems = [contract.violations(answer) for answer in answers]
    compliant = sum(not found for found in problems)
    low, high = wilson_interval(compliant, len(answers), confidence)
    seen = Counter(problem for found in problems for problem in found[:1])
    top = seen.most_common(1)
    return Compliance(answers=len(answers), compliant=compliant, rate=compliant / len(answers) if answers else 0.0,
                      low=low, high=high, top_violation=f"{top[0][0]} ({top[0][1]}x)" if top else None)
