"""Tool-call arguments: the safe calculator, the calculator/calendar/search checks, the rates that report them, and
the sample data that teaches and measures them."""

import json
import math
import random
import re
from pathlib import Path

import pytest

from roleforge.sample.generate import tool_agent_rows
from roleforge.sample.tool_requests import (
    CALC,
    CALENDAR,
    CALENDAR_CANCELS,
    CALENDAR_INFORMAL,
    CALENDAR_MOVES,
    CALENDAR_QUERIES,
    CALENDAR_RANGES,
    SEARCH,
    operation,
    tool_call,
    tool_request,
)
from roleforge.evaluation.tool_use import ExpressionError, check_arguments, check_tool_use, evaluate_expression, parse_action
from roleforge.models.generation import read_tool_use_prompts, tool_use_rates
from roleforge.tasks.labelers import preferred
from roleforge.tasks.labelers.generator import rejected_variant

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "roleforge" / "sample"
EVAL_FILES = [SAMPLE_DIR / "tool_use_eval.jsonl", SAMPLE_DIR / "tool_use_heldout.jsonl"]


def call(tool, **args):
    return {"tool": tool, "args": args}


def answer(tool, **args):
    return tool_call("I will use a tool.", tool, args)


@pytest.mark.parametrize(("expression", "value"), [
    ("1,284 * 37", 47508), ("(97580 - 82000) / 82000 * 100", 19), ("-3 + 4 * (2 - 1)", 1), ("7 // 2", 3), ("1000 % 7", 6),
    ("5000 * (1 + 4 / 100) ** 8", 6842.845252026369), ("1764 ** 0.5", 42), ("12,000.5 - 0.5", 12000),
])
def test_calculator_computes_plain_arithmetic(expression, value):
    assert math.isclose(evaluate_expression(expression), value, rel_tol=1e-12)


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')", "abs(-3)", "(1).real", "x * 2", "9 ** 9 ** 9", "2 ** 101", "10 ** -200",
    "1e200 ** 2", "1 / 0", "5 % 0", "(-8) ** (1 / 3)", "2 ^ 3", "True + 1", "[1, 2]", "1,2 * 3", "12,34,567",
    "1 if 1 else 2", "'3' * 3", "1 + " * 60 + "1", "",
])
def test_calculator_refuses_anything_but_bounded_arithmetic(expression):
    with pytest.raises(ExpressionError):
        evaluate_expression(expression)


def test_calculator_arguments():
    row = {"request": "What is 2 to the power of 10?", "tool": "calculator", "answer": 1024}
    assert check_arguments(row, call("calculator", expression="2 ** 10")) is True
    assert check_arguments(row, call("calculator", expression="1024.0000000001")) is True, "within the tolerance"
    assert check_arguments(row, call("calculator", expression="2 * 10")) is False, "a product for a power"
    assert check_arguments(row, call("calculator", expression="10 ** 2")) is False, "operands swapped"
    assert check_arguments(row, call("calculator", expression="pow(2, 10)")) is False
    assert check_arguments(row, call("calculator", expression=1024)) is False, "the expression is a string"
    assert check_arguments(row, call("search", query="2 ** 10")) is False, "another tool"
    assert check_arguments(row, None) is False, "no call at all"
    assert check_arguments({"request": "What is 2 to the power of 10?", "tool": "calculator"}, call("calculator", expression="1")) is None


def test_calendar_arguments():
    create = {"request": "can u add dentist thu 3pm", "tool": "calendar", "action": "create", "title": "Dentist",
              "date": "thursday", "time": "15:00"}
    assert check_arguments(create, call("calendar", action="create", title="Dentist appointment", date="Thursday", time="15:00"))
    assert not check_arguments(create, call("calendar", action="create", date="thursday", time="15:00")), "no title"
    assert not check_arguments(create, call("calendar", action="create", title="Dentist", time="3pm")), "time not HH:MM"
    assert not check_arguments(create, call("calendar", action="create", title="Dentist", date="thursday", time="16:00"))
    assert not check_arguments(create, call("calendar", action="list", date="thursday")), "a listing for a new event"
    listing = {"request": "what's on my calendar tomorrow?", "tool": "calendar", "action": "list"}
    assert check_arguments(listing, call("calendar", action="query", date="tomorrow"))
    assert check_arguments(listing, call("calendar", action="find", start_date="2027-03-01", end_date="2027-03-05"))
    assert not check_arguments(listing, call("calendar", action="list")), "a listing needs a day or a range"
    assert not check_arguments(listing, call("calendar", action="list", date="2027-02-30")), "no such day"
    move = {"request": "Move the standup to 09:15.", "tool": "calendar", "action": "update", "title": "Standup", "time": "09:15"}
    assert check_arguments(move, call("calendar", action="update", title="standup", time="09:15"))
    assert not check_arguments(move, call("calendar", action="create", title="standup", time="09:15"))
    assert not check_arguments(move, call("calendar", action="update", title="standup")), "a move needs the new day or time"
    cancel = {"request": "cancel my haircut", "tool": "calendar", "action": "delete", "title": "haircut"}
    assert check_arguments(cancel, call("calendar", action="delete", title="Haircut"))
    assert not check_arguments(cancel, call("calendar", action="delete", date="today"))
    assert check_arguments({"request": "Add lunch.", "tool": "calendar"}, call("calendar", action="create")) is None


def test_search_arguments():
    row = {"request": "Any recent headlines about the Mars sample return mission?", "tool": "search"}
    assert check_arguments(row, call("search", query="Mars sample return news"))
    assert not check_arguments(row, call("search", query="chocolate cake recipe")), "shares no word with the request"
    assert not check_arguments(row, call("search", query="latest news")), "stop words do not count"
    assert not check_arguments(row, call("search", query=""))
    terms = {**row, "query_terms": ["mars", "sample return"]}
    assert check_arguments(terms, call("search", query="Mars sample return mission"))
    assert not check_arguments(terms, call("search", query="Mars mission")), "a stated term is missing"
    assert check_arguments({"tool": "search"}, call("search", query="x")) is None, "no request to compare with"


def test_tool_use_rates_count_arguments_only_where_rows_state_them():
    good_calc, wrong_calc = answer("calculator", expression="3 ** 4"), answer("calculator", expression="3 * 4")
    rows = [{"request": "3 to the 4th?", "tool": "calculator", "answer": 81}] * 2 + [{"request": "Search cats.", "tool": "search"},
                                                                                   {"request": "What is 1 + 1?", "tool": "calculator"}]
    rates = tool_use_rates([good_calc, wrong_calc, answer("calculator", expression="cats"), good_calc], rows)
    assert rates["full_compliance_rate"] == 0.75 and rates["args_checked"] == 3
    assert rates["args_valid_rate"] == pytest.approx(1 / 3), "a wrong product, and the wrong tool for the search"
    by_name = tool_use_rates([good_calc, wrong_calc], ["calculator", "calculator"])
    assert by_name["full_compliance_rate"] == 1.0 and by_name["args_checked"] == 0 and by_name["args_valid_rate"] == 0.0


def test_check_tool_use_hands_the_arguments_on():
    check = check_tool_use(answer("calculator", expression="6 * 7"))
    assert check.args == {"expression": "6 * 7"} and check.args_valid({"tool": "calculator", "answer": 42}) is True
    assert check_tool_use("Plain prose.").args is None


def evaluation_rows():
    return [row for path in EVAL_FILES for row in read_tool_use_prompts(path)]


def test_evaluation_sets_state_a_right_call_and_compute_correctly():
    rows = evaluation_rows()
    eval_rows = read_tool_use_prompts(EVAL_FILES[0])
    assert len(eval_rows) >= 60 and len(read_tool_use_prompts(EVAL_FILES[1])) == 30
    assert {r["tool"] for r in eval_rows} == {"calculator", "calendar", "search"}
    assert {r["action"] for r in eval_rows if r["tool"] == "calendar"} == {"create", "list", "update", "delete"}
    for row in rows:
        if row["tool"] == "calculator":
            assert math.isclose(evaluate_expression(row["expression"]), row["answer"], rel_tol=1e-9), row["request"]
            assert check_arguments(row, call("calculator", expression=row["expression"])) is True
        assert check_arguments(row, None) is False, f"every row states something checkable: {row['request']}"


def test_evaluation_requests_share_no_template_with_the_generator():
    templates = ([t for t, _, _ in CALC] + SEARCH + CALENDAR + CALENDAR_INFORMAL + CALENDAR_QUERIES + CALENDAR_RANGES
                 + [t for t, _ in CALENDAR_MOVES] + CALENDAR_CANCELS)
    patterns = [re.compile(".+?".join(re.escape(part) for part in re.split(r"\{\w+\}", t)), re.IGNORECASE) for t in templates]
    assert patterns[0].fullmatch("what is 12 times 7?"), "the patterns do match the generator's own requests"
    for row in evaluation_rows():
        assert not [p.pattern for p in patterns if p.fullmatch(row["request"])], row["request"]


def test_generated_requests_pass_and_their_wrong_arguments_fail():
    rng = random.Random(7)
    asked = [tool_request(rng) for _ in range(300)]
    assert sum(a.wrong_args is not None for a in asked) > 280
    for a in asked:
        assert check_arguments(a.row, call(a.tool, **a.args)) is True, a.request
        if a.wrong_args is not None:
            assert check_arguments(a.row, call(a.tool, **a.wrong_args)) is False, (a.request, a.wrong_args)
    calendar_actions = {a.args["action"] for a in asked if a.tool == "calendar"}
    assert calendar_actions == {"create", "list", "update", "delete"}


def test_calculator_thought_names_the_operation_and_half_the_wrong_calls_miscopy_an_operand():
    """The Thought line decides the operation in words; a wrong call keeps the operation and copies a number wrong
    about as often as it picks the wrong operation, the two mistakes that make a call not do the job."""
    rng = random.Random(11)
    asked = [tool_request(rng, "calculator") for _ in range(400)]
    thoughts = {a.thought for a in asked}
    assert {f"The user needs {name}, so I will use the calculator." for name in
            ("a percent change", "a percentage of a number", "a power", "a unit conversion", "an average")} <= thoughts
    shape = lambda e: re.sub(r"[\d.]+", "N", e)  # noqa: E731
    miscopies = [a for a in asked if a.wrong_args and shape(a.wrong_args["expression"]) == shape(a.args["expression"])]
    assert 120 <= len(miscopies) <= 280, len(miscopies)
    for a in miscopies:
        assert check_arguments(a.row, call("calculator", **a.wrong_args)) is False, (a.request, a.wrong_args)
    # Large generated files (the ingest benchmarks' 24,000 rows) draw rare combinations: every one must compute
    # (a request evaluates its right and its wrong expression; one that cannot be computed raises ExpressionError).
    for _ in range(20_000):
        tool_request(rng, "calculator")


@pytest.mark.parametrize(("expression", "name"), [
    ("({n} - {a}) / {a} * 100", "a percent change"), ("{a} * {p} / 100", "a percentage of a number"),
    ("{b} / 3.785411784", "a unit conversion"), ("({a} + {b} + {c}) / 3", "an average"),
    ("{a} * (1 + {p} / 100) ** {e}", "compound growth"), ("{q} ** 0.5", "a square root"), ("{a} - {b}", "a difference"),
])
def test_operation_names_what_the_expression_computes(expression, name):
    assert operation(expression) == name


@pytest.mark.parametrize(("template", "numbers", "value"), [
    ("By what percent did the price change from {a} to {n}?", {"a": 80, "n": 100}, 25),
    ("Sales went from {a} to {n}. What is the growth rate in percent?", {"a": 200, "n": 150}, -25),
    ("If {a} grows {p}% a year, how much is it after {e} years?", {"a": 100, "p": 10, "e": 2}, 121),
    ("What is {b} degrees Fahrenheit in Celsius?", {"b": 212}, 100),
    ("whats {p}% of {a}", {"p": 15, "a": 80}, 12),
    ("Convert {b} miles to kilometers.", {"b": 10}, 16.09344),
    ("What is {b} to the power of {e}?", {"b": 3, "e": 4}, 81),
])
def test_generator_expressions_compute_what_the_request_asks(template, numbers, value):
    expression, wrong = next((e, w) for t, e, w in CALC if t == template)
    assert math.isclose(evaluate_expression(expression.format(**numbers)), value)
    assert not math.isclose(evaluate_expression(wrong.format(**numbers)), value)


def test_sample_feedback_teaches_arguments():
    """In the committed A/B rows, a rejected call of the right tool is one whose arguments fail."""
    wrong_args = 0
    for line in (SAMPLE_DIR / "feedback" / "tool-agent.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "preference" not in row:
            continue
        chosen, rejected = (parse_action(a) for a in preferred(row))
        if rejected is None or rejected["tool"] != chosen["tool"] or not check_tool_use(preferred(row)[1]).compliant():
            continue
        wrong_args += 1
        expected = {"request": row["prompt"], "tool": chosen["tool"], **chosen["args"]}
        if chosen["tool"] == "calculator":
            expected = {"request": row["prompt"], "tool": "calculator", "answer": evaluate_expression(chosen["args"]["expression"])}
        elif chosen["tool"] == "search":
            expected = {"request": row["prompt"], "tool": "search"}
        assert check_arguments(expected, chosen) is True and check_arguments(expected, rejected) is False, row["prompt"]
    assert wrong_args >= 60, "about a third of the rejections are wrong arguments"


@pytest.mark.parametrize(("prompt", "good", "row"), [
    ("What is 12 squared?", answer("calculator", expression="12 ** 2"), {"tool": "calculator", "answer": 144}),
    ("Total of 2 and 2?", answer("calculator", expression="2 + 2"), {"tool": "calculator", "answer": 4}),
    ("Split 1,500 among 4.", answer("calculator", expression="1,500 / 4"), {"tool": "calculator", "answer": 375}),
    ("Look up Mars rovers.", answer("search", query="Mars rovers"), {"tool": "search"}),
    ("Book Dentist on 2027-01-05 at 09:00.", answer("calendar", action="create", title="Dentist", date="2027-01-05", time="09:00"),
     {"tool": "calendar", "action": "create", "title": "Dentist"}),
    ("What's on tomorrow?", answer("calendar", action="list", date="tomorrow"), {"tool": "calendar", "action": "list"}),
])
def test_labeler_wrong_argument_rejections_fail_the_check(prompt, good, row):
    bad = rejected_variant(prompt, good, "wrong_args")
    row = {"request": prompt, **row}
    assert check_tool_use(bad).compliant(row["tool"]), "the right tool, well-formed"
    assert check_arguments(row, parse_action(good)) is True and check_arguments(row, parse_action(bad)) is False


def test_tool_agent_sample_is_deterministic():
    rows = tool_agent_rows(random.Random(3))
    assert len(rows) == 1000 and rows == tool_agent_rows(random.Random(3))
