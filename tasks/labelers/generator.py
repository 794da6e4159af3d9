"""Generated labels for tool-use roles: from one good tool call, several typical bad answers to reject.

A role can bootstrap from a handful of good examples: each compliant response (rated 4+ or preferred in an
A/B choice) yields pairs against a refusal, prose without JSON, malformed JSON, a call to the wrong tool and a call
of the right tool with wrong arguments, so that the pairs teach what to pass a tool and not only the format.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from roleforge.data_contracts.preference import PreferencePair
from roleforge.tasks.labelers import LabelResult, preferred
from roleforge.evaluation.tool_use import (
    TOOLS,
    ExpressionError,
    check_tool_use,
    content_words,
    evaluate_expression,
    parse_action,
)

FORMAT_FAILURE_MODES = ("refusal", "prose", "malformed_json", "wrong_tool")
FAILURE_MODES = (*FORMAT_FAILURE_MODES, "wrong_args")
# Queries for the wrong-argument search call: the first that shares no word with the request is used.
UNRELATED_QUERIES = ("chocolate cake recipe", "football transfer rumours", "cheap hotels in Lima", "knitting patterns for beginners")
# The mistakes tried on a calculator expression, most typical first: a power written as a product, the operands of
# an order-sensitive operator swapped, then the wrong operator.
POWER_AS_PRODUCT = {ast.Pow: ast.Mult}
WRONG_OPERATOR = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
                  ast.Mod: ast.Mult, ast.Pow: ast.Mult}


def rejected_variant(prompt: str, chosen: str, mode: str) -> str:
    """A plausible wrong answer to prompt of the given failure mode, derived from the good answer."""
    action = parse_action(chosen) or {"tool": "search", "args": {}}
    thought = chosen.split("\n", 1)[0]
    args = ", ".join(f"{k}={v}" for k, v in action["args"].items())
    if mode == "refusal":
        return "I'm sorry, but I can't help with that request."
    if mode == "prose":
        return f"Sure! To handle \"{prompt.strip()}\" I would use the {action['tool']} with {args or 'the details you gave'}."
    if mode == "malformed_json":
        return f"{thought}\nAction:\n```json\n{{'tool': '{action['tool']}', 'args': {action['args']}\n```"
    if mode == "wrong_tool":
        wrong = TOOLS[(TOOLS.index(action["tool"]) + 1) % len(TOOLS)] if action["tool"] in TOOLS else TOOLS[0]
        return f"{thought}\nAction:\n```json\n{json.dumps({'tool': wrong, 'args': action['args']})}\n```"
    if mode == "wrong_args":
        return f"{thought}\nAction:\n```json\n{json.dumps({'tool': action['tool'], 'args': wrong_arguments(prompt, action)})}\n```"
    raise ValueError(f"unknown failure mode {mode!r}")


def wrong_arguments(prompt: str, action: dict[str, Any]) -> dict[str, Any]:
    """The args of a right-tool call that does not do what prompt asks: another value of the expression, a calendar
    call without its title (without its day, for a listing), or a search for something unrelated."""
    args = dict(action["args"])
    if action["tool"] == "calculator":
        return {**args, "expression": wrong_expression(str(args.get("expression", "")))}
    if action["tool"] == "calendar":
        listing = str(args.get("action", "")).casefold() in ("list", "query", "find")
        drop = ("date", "start_date", "end_date") if listing else ("title",)
        return {k: v for k, v in args.items() if k not in drop}
    asked = content_words(prompt)
    return {**args, "query": next((q for q in UNRELATED_QUERIES if not content_words(q) & asked), "")}


def wrong_expression(expression: str) -> str:
    """An expression of another value than expression, by the most typical mistake that changes the value."""
    try:
        right = evaluate_expression(expression)
        tree = ast.parse(expression.replace(",", ""), mode="eval")  # evaluate_expression accepted it: commas are separators
    except (ExpressionError, SyntaxError):
        return f"{expression} + 1"
    candidates = [_mutated(tree, POWER_AS_PRODUCT, swap=False), _mutated(tree, {}, swap=True), _mutated(tree, WRONG_OPERATOR, swap=False),
                  _first_number_plus_one(tree)]
    for candidate in candidates:
        try:
            if candidate is not None and not math.isclose(evaluate_expression(candidate), right, rel_tol=1e-6, abs_tol=1e-9):
                return candidate
        except ExpressionError:
            continue
    return f"{expression} + 1"


def _mutated(tree: ast.Expression, operators: dict[type[ast.operator], type[ast.operator]], swap: bool) -> str | None:
    """The expression with its first binary operation changed: its operator replaced, or its operands swapped where
    their order matters; None when no operation can be."""
    copy = ast.parse(ast.unparse(tree), mode="eval")
    for node in ast.walk(copy):
        if not isinstance(node, ast.BinOp):
            continue
        if swap and not isinstance(node.op, (ast.Add, ast.Mult)):
            node.left, node.right = node.right, node.left
            return ast.unparse(copy)
        if type(node.op) in operators:
            node.op = operators[type(node.op)]()
            return ast.unparse(copy)
    return None


def _first_number_plus_one(tree: ast.Expression) -> str | None:
    copy = ast.parse(ast.unparse(tree), mode="eval")
    number = next((n for n in ast.walk(copy) if isinstance(n, ast.Constant) and type(n.value) in (int, float)), None)
    if number is None:
        return None
    number.value += 1
    return ast.unparse(copy)


@dataclass
class RejectedResponseGenerator:
    modes: tuple[str, ...] = FAILURE_MODES
    per_response: int = 2  # failure modes per good response, picked by a hash so reruns pick the same ones
    name: str = "rejected_generator"
    confidence: float = 0.9

    def label(self, rows: list[dict[str, Any]]) -> LabelResult:
        result = LabelResult()
        seen: set[tuple[str, str]] = set()
        for row, response in _good_tool_calls(rows):
            if (row["prompt"], response) in seen:
                continue
            seen.add((row["prompt"], response))
            start = int(hashlib.sha256(f"{row['prompt']}\x00{response}".encode()).hexdigest()[:8], 16)
            for offset in range(min(self.per_response, len(self.modes))):
                mode = self.modes[(start + offset) % len(self.modes)]
                result.pairs.append(PreferencePair(
                    role=row["agent_role"], prompt=row["prompt"], chosen=response,
                    rejected=rejected_variant(row["prompt"], response, mode), source="generated",
                    labeler=f"{self.name}:{mode}", confidence=self.confidence, feedback_ids=(row["id"],), rater=row["rater"]))
        return result


def _good_tool_calls(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    good = []
    for row in rows:
        if row["kind"] == "rating" and row["rating"] >= 4:
            response = row["response"]
        elif row["kind"] == "ab":
            response = preferred(row)[0]
        else:
            continue
        if check_tool_use(response).compliant():
            good.append((row, response))
    return good
