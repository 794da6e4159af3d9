"""The tool-use answer format: a `Thought:` line, then `Action:` and a ```json block with a known tool call; and
whether the call's arguments do what the request asked, where the request row says what a right call does."""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

TOOLS = ("calculator", "search", "calendar")
# The system prompt of the tool-agent role (sample data, training, evaluation): the format checked below.
TOOL_AGENT_SYSTEM_PROMPT = (
    "You are a tool-using agent. Tools: calculator (args: expression), search (args: query), "
    "calendar (args: action, title, date, time). Answer every request with one line that starts with "
    '"Thought:", then a line "Action:", then a ```json block holding {"tool": ..., "args": {...}}.'
)
JSON_BLOCK = re.compile(r"```json\s*\n(.*?)\n?```", re.DOTALL)


@dataclass(frozen=True)
class ToolUseCheck:
    """What an answer gets right about the format, from the weakest requirement to full compliance."""

    thought: bool  # the answer starts with a `Thought:` line
    json_valid: bool  # an `Action:` followed by a ```json block holding an object with `tool` and `args`
    tool: str | None  # the tool it calls, when the JSON is valid
    known_tool: bool
    args: dict[str, Any] | None = None  # the call's arguments, when the JSON is valid

    def compliant(self, expected_tool: str | None = None) -> bool:
        return self.thought and self.json_valid and self.known_tool and (expected_tool is None or self.tool == expected_tool)

    def args_valid(self, request_row: Mapping[str, Any]) -> bool | None:
        """`check_arguments` of this answer's call against the request row."""
        return check_arguments(request_row, {"tool": self.tool, "args": self.args} if self.json_valid else None)


def parse_action(text: str) -> dict[str, Any] | None:
    """The JSON action after `Action:`, or None when there is none or it does not parse."""
    _, found, after = text.partition("Action:")
    match = JSON_BLOCK.search(after) if found else None
    if match is None:
        return None
    try:
        action = json.loads(match.group(1))
    except json.JSONDecodeError:
        return None
    if not isinstance(action, dict) or not isinstance(action.get("tool"), str) or not isinstance(action.get("args"), dict):
        return None
    return action


def check_tool_use(text: str, tools: tuple[str, ...] = TOOLS) -> ToolUseCheck:
    action = parse_action(text)
    tool = action["tool"] if action else None
    return ToolUseCheck(thought=text.lstrip().startswith("Thought:"), json_valid=action is not None, tool=tool,
                        known_tool=tool in tools, args=action["args"] if action else None)


class ExpressionError(ValueError):
    """A calculator expression that is not plain arithmetic, or too big or undefined to compute."""


MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 100
BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
# A number with thousand separators: 1-3 digits, then groups of exactly three ("1,284", "12,000.5"). Anything else
# with a comma ("1,2", "12,34,567") stays a comma, which Python reads as a tuple, so it is refused.
THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])")


def evaluate_expression(expression: str) -> float:
    """The value of an arithmetic expression: numbers, + - * / // % **, unary minus and parentheses, nothing else.

    Commas as thousand separators are accepted ("1,284 * 37"); any other comma is refused. The expression is walked
    as an `ast` tree, never evaluated as code; arithmetic runs in floats, so nothing grows without bound.

    Raises:
        ExpressionError: names, calls, attributes or any other syntax; over MAX_EXPRESSION_CHARS characters; an
            exponent above MAX_EXPONENT in size; division by zero; an overflow or a complex result.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), expression.strip()), mode="eval")
    except (SyntaxError, ValueError) as error:
        raise ExpressionError(f"not arithmetic: {expression!r}") from error
    return _value(tree.body)


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        result = float(node.value)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        result = -_value(node.operand)
    elif isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ExpressionError(f"exponent {right:g} is larger than {MAX_EXPONENT}")
        try:
            result = BINARY[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError) as error:
            raise ExpressionError(str(error)) from error
    else:
        what = node.op if isinstance(node, (ast.BinOp, ast.UnaryOp)) else node  # "BitXor" says more than "BinOp" for 2^3
        raise ExpressionError(f"{type(what).__name__} is not allowed in a calculator expression")
    if not isinstance(result, float) or not math.isfinite(result):  # a negative base to a fractional power is complex
        raise ExpressionError(f"no finite real value: {result!r}")
    return result


# Words of a request that do not say what to search for: function words and the asking itself ("find", "news").
STOP_WORDS = frozenset({
    "a", "about", "after", "all", "am", "an", "and", "any", "anything", "are", "as", "at", "be", "been", "before",
    "by", "can", "check", "could", "did", "do", "does", "fetch", "find", "for", "from", "get", "give", "had", "has",
    "have", "how", "i", "if", "in", "info", "information", "internet", "into", "is", "it", "its", "just", "know",
    "latest", "let", "like", "look", "me", "more", "most", "my", "need", "new", "news", "no", "of", "on", "online",
    "or", "out", "over", "please", "pls", "pull", "read", "recent", "right", "search", "show", "some", "tell",
    "than", "that", "the", "their", "them", "then", "there", "these", "this", "to", "up", "us", "want", "was", "we",
    "web", "what", "whats", "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
})
RELATIVE_DAYS = frozenset({"today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"})
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
CLOCK_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
# The verbs a calendar call may use, each with the one it means: a request states the canonical one.
CALENDAR_ACTIONS = {"create": "create", "add": "create", "schedule": "create", "update": "update", "move": "update",
                    "reschedule": "update", "delete": "delete", "cancel": "delete", "remove": "delete",
                    "list": "list", "query": "list", "find": "list"}
CALENDAR_FIELDS = ("title", "date", "time", "start_date", "end_date")


def content_words(text: str) -> set[str]:
    """The words of text that carry meaning: lowercase, stop words and one-letter words dropped, a plural `s` cut."""
    words = (w for w in re.findall(r"\w+", text.casefold()) if len(w) > 1 and w not in STOP_WORDS)
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words}


def is_calendar_date(value: Any) -> bool:
    """YYYY-MM-DD of a real day, or a day the calendar resolves itself (today, tomorrow, [next] weekday): the agent
    does not know today's date, so "what's on tomorrow" can only be passed on."""
    if not isinstance(value, str):
        return False
    text = value.strip().casefold()
    if text.removeprefix("next ") in RELATIVE_DAYS:
        return True
    try:
        return ISO_DATE.fullmatch(text) is not None and date.fromisoformat(text) is not None
    except ValueError:
        return False


def is_clock_time(value: Any) -> bool:
    return isinstance(value, str) and CLOCK_TIME.fullmatch(value.strip()) is not None


def check_arguments(request_row: Mapping[str, Any], action: Mapping[str, Any] | None) -> bool | None:
    """Whether a tool call does what the request row says a right call does; None when the row says nothing checkable.

    Args:
        request_row: `request` and `tool`, and what a right call does: calculator `answer` (the expression must
            compute it within a relative 1e-6 / absolute 1e-9); calendar `action` (create, update, delete, list)
            and any of `title`, `date`, `time`, `start_date`, `end_date`; search `query_terms` that the query must
            contain (any search row with a `request` is checked: its query must share a content word with it).
        action: the parsed call (`tool`, `args`), or None when the answer holds none: then False, as for a call of
            another tool.
    """
    tool = request_row.get("tool")
    checkable = {"calculator": "answer" in request_row, "search": isinstance(request_row.get("request"), str),
                 "calendar": any(k in request_row for k in ("action", *CALENDAR_FIELDS))}
    if not checkable.get(tool):
        return None
    if action is None or action.get("tool") != tool or not isinstance(action.get("args"), Mapping):
        return False
    args = action["args"]
    if tool == "calculator":
        return _calculator_ok(request_row, args)
    return _search_ok(request_row, args) if tool == "search" else _calendar_ok(request_row, args)


def request_row_problem(row: Mapping[str, Any]) -> str | None:
    """What is wrong with what a request row says a right call does, or None: read before any answer is checked,
    so that a typo in an evaluation file fails at once instead of counting every answer as wrong."""
    if "answer" in row and (isinstance(row["answer"], bool) or not isinstance(row["answer"], (int, float))):
        return f"`answer` must be a number, not {row['answer']!r}"
    terms = row.get("query_terms", [])
    if not isinstance(terms, list) or not all(isinstance(t, str) and t.strip() for t in terms):
        return f"`query_terms` must be a list of words, not {terms!r}"
    if "action" in row and row["action"] not in set(CALENDAR_ACTIONS.values()):
        return f"`action` must be one of {sorted(set(CALENDAR_ACTIONS.values()))}, not {row['action']!r}"
    if any(k in row and not is_calendar_date(row[k]) for k in ("date", "start_date", "end_date")):
        return "calendar dates must be YYYY-MM-DD, today, tomorrow or a weekday"
    if "time" in row and not is_clock_time(row["time"]):
        return f"`time` must be HH:MM, not {row['time']!r}"
    return None


def _calculator_ok(row: Mapping[str, Any], args: Mapping[str, Any]) -> bool:
    expression = args.get("expression")
    if not isinstance(expression, str):
        return False
    try:
        value = evaluate_expression(expression)
    except ExpressionError:
        return False
    return math.isclose(value, float(row["answer"]), rel_tol=1e-6, abs_tol=1e-9)


def _search_ok(row: Mapping[str, Any], args: Mapping[str, Any]) -> bool:
    query = args.get("query")
    if not isinstance(query, str) or not content_words(query) & content_words(row["request"]):
        return False
    return all(term.casefold() in query.casefold() for term in row.get("query_terms", ()))



def _calendar_ok(row: Mapping[str, Any], args: Mapping[str, Any]) -> bool:
    action = CALENDAR_ACTIONS.get(str(args.get("action", "")).strip().casefold())
    if action is None or ("action" in row and CALENDAR_ACTIONS.get(row["action"]) != action):
        return False
    present = {k: args[k] for k in CALENDAR_FIELDS if args.get(k) not in (None, "")}
    if any(not is_calendar_date(present[k]) for k in ("date", "start_date", "end_date") if k in present):
        return False
    if "time" in present and not is_clock_time(present["time"]):
        return False
    has_title = isinstance(present.get("title"), str) and bool(present["title"].strip())
    needs = {"create": has_title and ("date" in present or "time" in present),
             "update": has_title and ("date" in present or "time" in present), "delete": has_title,
             "list": "date" in present or ("start_date" in present and "end_date" in present)}
    if not needs[action]:
        return False
    return all(_same_field(key, row[key], present.get(key)) for key in CALENDAR_FIELDS if key in row)


def _same_field(key: str, expected: Any, given: Any) -> bool:
    if given is None:
        return False
    if key == "title":  # the call may say more ("Dentist appointment" for "dentist"), never leave a word out
        return content_words(str(expected)) <= content_words(str(given))
    return str(expected).strip().casefold() == str(given).strip().casefold()
