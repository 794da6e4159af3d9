"""The tool agent's sample requests: many phrasings of arithmetic, search and calendar requests, each with the call
that answers it and a typical wrong call, for the sample feedback (generate.py) and the tests that check them."""

from __future__ import annotations

import datetime
import json
import math
import random
from dataclasses import dataclass

from roleforge.evaluation.tool_use import content_words, evaluate_expression

# Refusals, a worse answer for any role.
REFUSALS = ["I cannot help with that.", "I'm sorry, but I can't give advice on this topic.", "As an AI, I cannot make business decisions."]

# Tool-use requests in many phrasings. The evaluation sets (tool_use_heldout.jsonl, tool_use_eval.jsonl) were written
# separately, with other phrasings, entities and numbers: the point is that format, tool choice and arguments generalise.
# A calculator template: (request, the expression that answers it, a typical wrong one: operands swapped, the wrong
# operator or base, a product for a power), so that preferences teach the arguments and not only the format.
CALC = [("What is {a} times {b}?", "{a} * {b}", "{a} + {b}"), ("Compute {a} plus {b}.", "{a} + {b}", "{a} * {b}"),
        ("How much is {a} divided by {b}?", "{a} / {b}", "{b} / {a}"), ("I need {a} minus {b}.", "{a} - {b}", "{b} - {a}"),
        ("What's {p}% of {a}?", "{a} * {p} / 100", "{a} * {p}"), ("Multiply {a} by {b}.", "{a} * {b}", "{a} / {b}"),
        ("Add up {a} and {b}.", "{a} + {b}", "{a} - {b}"), ("Subtract {b} from {a}.", "{a} - {b}", "{b} - {a}"),
        ("What does {a} over {b} come to?", "{a} / {b}", "{b} / {a}"), ("Work out {p} percent of {a}.", "{a} * {p} / 100", "{a} / {p}"),
        ("What is the product of {a} and {b}?", "{a} * {b}", "{a} + {b}"),
        ("{a} shared equally by {b} people: how much per person?", "{a} / {b}", "{a} * {b}"),
        ("What is {b} squared?", "{b} ** 2", "{b} * 2"), ("How many minutes are in {b} hours?", "{b} * 60", "{b} / 60"),
        ("Total of {a}, {b} and {c}?", "{a} + {b} + {c}", "{a} + {b}"), ("Convert {b} kilometers to meters.", "{b} * 1000", "{b} / 1000"),
        ("Figure out the difference between {a} and {b}.", "{a} - {b}", "{a} + {b}"), ("Calc: {a} * {b}", "{a} * {b}", "{a} + {b}"),
        ("What's {a} + {b} + {c}?", "{a} + {b} + {c}", "{a} + {b} * {c}"),
        ("Take {p} percent off {a}.", "{a} * (1 - {p} / 100)", "{a} - {p}"),
        ("If I save {b} a week, how much after {c} weeks?", "{b} * {c}", "{b} + {c}"),
        ("Average of {a}, {b} and {c}, please.", "({a} + {b} + {c}) / 3", "{a} + {b} + {c} / 3"),
        ("whats {p}% of {a}", "{a} * {p} / 100", "{a} * {p}"), ("convert {b} hrs to mins", "{b} * 60", "{b} / 60"),
        ("how much is {a} plus {p}% tax", "{a} * (1 + {p} / 100)", "{a} + {p}"),
        ("By what percent did the price change from {a} to {n}?", "({n} - {a}) / {a} * 100", "({a} - {n}) / {n} * 100"),
        ("Sales went from {a} to {n}. What is the growth rate in percent?", "({n} - {a}) / {a} * 100", "({n} - {a}) / {n} * 100"),
        ("{a} is what percent of {n}?", "{a} / {n} * 100", "{n} / {a} * 100"),
        ("I earned {a} dollars for {b} hours of work. What is that per hour?", "{a} / {b}", "{b} / {a}"),
        ("A machine makes {b} parts per hour. How many in {c} hours?", "{b} * {c}", "{b} / {c}"),
        ("What is the average speed if I drive {a} km in {b} hours?", "{a} / {b}", "{a} * {b}"),
        ("Convert {b} miles to kilometers.", "{b} * 1.609344", "{b} / 1.609344"),
        ("How many pounds is {b} kg?", "{b} * 2.20462", "{b} / 2.20462"),
        ("What is {b} degrees Fahrenheit in Celsius?", "({b} - 32) * 5 / 9", "{b} - 32 * 5 / 9"),
        ("What is {b} to the power of {e}?", "{b} ** {e}", "{b} * {e}"), ("What is {b} cubed?", "{b} ** 3", "{b} * 3"),
        ("If {a} grows {p}% a year, how much is it after {e} years?", "{a} * (1 + {p} / 100) ** {e}", "{a} * (1 + {p} / 100) * {e}"),
        ("What is the ratio of {a} to {b}?", "{a} / {b}", "{b} / {a}"),
        ("We have {a} users and {b} support agents. How many users per agent?", "{a} / {b}", "{b} / {a}"),
        ("Square root of {q}, please.", "{q} ** 0.5", "{q} / 2"), ("{a} mod {b}?", "{a} % {b}", "{a} / {b}"),
        ("How much is left after splitting {a} into groups of {b}?", "{a} % {b}", "{a} // {b}"),
        ("Change {b} °C to °F.", "{b} * 9 / 5 + 32", "({b} - 32) * 5 / 9"),
        ("{b} inches in centimetres, please.", "{b} * 2.54", "{b} / 2.54"),
        ("I have {b} liters. How many US gallons is that?", "{b} / 3.785411784", "{b} * 3.785411784"),
        ("The plan is {a} per month. Yearly cost?", "{a} * 12", "{a} / 12"),
        ("Yearly salary {n} - monthly?", "{n} / 12", "{n} * 12"),
        ("How many seconds are in {b} minutes?", "{b} * 60", "{b} / 60")]
SEARCH = ["Find the latest news about {q}.", "Search for {q}.", "Look up {q} for me.", "Who won {q}?", "What do people say about {q}?",
          "Search the web for {q}.", "Can you find information on {q}?", "Get me the latest on {q}.", "What's new with {q}?",
          "Look for articles about {q}.", "I want to read about {q}.", "Find out about {q}.", "Show me recent reports on {q}.",
          "Any updates on {q}?", "Fetch news on {q}.", "What is known about {q}?", "Pull up sources on {q}.", "Tell me the facts about {q}.",
          "I'm curious about {q}, what can you find?", "Find me guides on {q}.", "Where can I read up on {q}?",
          "Give me background on {q}.", "Check the internet for {q}.", "Investigate {q}.", "any news on {q}", "look up {q} pls",
          "can u search {q}"]
QUERIES = ["the Champions League final", "electric car sales in Norway", "the weather in Lisbon", "quantum computing startups",
           "the best hiking trails in Austria", "inflation in Japan", "the James Webb telescope", "open source licenses",
           "the Tour de France winner", "lithium prices", "the population of Nairobi", "the author of Dune", "Python 3.14 features",
           "coral reef bleaching", "the Nobel Prize in Physics", "housing prices in Toronto", "the Louvre ticket prices",
           "solar panel efficiency records", "the Olympic marathon record", "the stock price of ASML", "train strikes in France",
           "vegan restaurants in Berlin", "the history of the printing press", "the largest desert on Earth",
           "who painted the Girl with a Pearl Earring", "learning Kotlin coroutines", "the director of Spirited Away",
           "reviews of the Pixel 10 phone", "the tallest building in Africa", "cheap flights to Reykjavik"]
CALENDAR = ["Schedule a meeting called {t} on {d} at {h}.", "Put {t} in my calendar for {d} at {h}.", "Book {t} on {d}, {h}.",
            "Add an event {t} on {d} at {h}.", "Create a calendar event {t} on {d} at {h}.", "Set a meeting {t} for {d} at {h}.",
            "Add {t} to my schedule on {d} at {h}.", "Schedule {t}: {d}, {h}.", "I need {t} booked for {d} at {h}.",
            "Make an appointment for {t} on {d} at {h}.", "Pencil in {t} on {d} at {h}.", "Arrange {t} for {d} at {h}.",
            "Could you set up {t} on {d} at {h}?", "Save {d} at {h} for {t}.", "Calendar entry: {t}, {d} {h}.",
            "Organize {t} on {d} starting {h}.", "Let's have {t} on {d} at {h}, add it please.", "Hold {d} {h} for {t} in my calendar."]
# Informal requests: a lowercase title, a short day ("thu", "tmrw") and a 12-hour time the call must spell out.
CALENDAR_INFORMAL = ["can u add {t} {day} {h12}", "add {t} {day} at {h12} pls", "put {t} in the cal {day} {h12}"]
CALENDAR_QUERIES = ["What's on my calendar {when}?", "what do i have {when}", "Anything scheduled {when}?", "am i free {when}?",
                    "Which events do I have {when}?", "List my appointments {when}."]
CALENDAR_RANGES = ["What's on my calendar between {d} and {d2}?", "List everything from {d} to {d2}."]
# A move: (request, which of date and time it sets).
CALENDAR_MOVES = [("Move {t} to {d} at {h}.", ("date", "time")), ("Reschedule {t} to {d}, {h}.", ("date", "time")),
                  ("push {t} to {h12} pls", ("time",)), ("Can you shift {t} to {weekday}?", ("date",))]
CALENDAR_CANCELS = ["Cancel {t} {when}.", "Delete {t} from my calendar.", "call off {t} {when}"]
TITLES = ["Budget review", "Team sync", "Dentist", "Customer call", "Quarterly planning", "Lunch with Maria", "Yoga class",
          "Interview with Priya", "Car service", "Design review", "Haircut", "Standup", "Dinner with Tom", "Tax deadline",
          "Piano lesson", "Release planning", "Doctor visit", "Gym session", "Call with the bank", "Book club"]
HOURS = ["07:45", "08:30", "09:00", "10:30", "11:15", "12:00", "13:30", "14:00", "15:20", "16:15", "17:00", "18:45", "20:00"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
# A calculator call's Thought names its operation instead (calculator_request).
THOUGHTS = {"search": "The user needs current information, so I will search.",
            "create": "The user wants an event, so I will use the calendar.",
            "list": "The user asks what is on the calendar, so I will list the events.",
            "update": "The user wants to move an event, so I will update it in the calendar.",
            "delete": "The user wants to cancel an event, so I will delete it from the calendar."}


@dataclass(frozen=True)
class ToolRequest:
    """One generated request, the call that answers it, and a call of the same tool with wrong arguments (None where
    the typical mistake happens to give the right result, e.g. 2 * 2 for 2 ** 2)."""

    request: str
    tool: str
    args: dict[str, object]
    wrong_args: dict[str, object] | None
    thought: str

    @property
    def row(self) -> dict[str, object]:
        """What a right call does, as an evaluation row states it for `check_arguments`."""
        if self.tool == "calculator":
            return {"request": self.request, "tool": self.tool, "answer": evaluate_expression(str(self.args["expression"]))}
        return {"request": self.request, "tool": self.tool, **(self.args if self.tool == "calendar" else {})}


def random_date(rng: random.Random) -> str:
    return f"{rng.choice([2026, 2027])}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def random_day(rng: random.Random) -> tuple[str, str]:
    """(how a request names a day, the date the calendar call passes): an ISO date, or a day the calendar resolves."""
    kind = rng.choice(["date", "date", "today", "tomorrow", "weekday"])
    if kind in ("today", "tomorrow"):
        return kind, kind
    day = random_date(rng) if kind == "date" else rng.choice(WEEKDAYS)
    return f"on {day}", day


def twelve_hour(clock: str) -> str:
    hour, minute = (int(part) for part in clock.split(":"))
    return f"{(hour - 1) % 12 + 1}{f':{minute:02d}' if minute else ''}{'am' if hour < 12 else 'pm'}"


# What a calculation is, named in the Thought line before the expression is written: the operation is decided in
# words first, where a small model tells a percentage from a percent change better than inside the JSON.
OPERATIONS = [("/ {a} * 100", "a percent change"), ("/ {n} * 100", "what percent one number is of another"),
              ("(1 + {p} / 100) **", "compound growth"), ("(1 - {p} / 100)", "a discount"), ("(1 + {p} / 100)", "a price with tax"),
              ("{p} / 100", "a percentage of a number"), ("32", "a temperature conversion"), ("1.609344", "a unit conversion"),
              ("2.20462", "a unit conversion"), ("2.54", "a unit conversion"), ("3.785411784", "a unit conversion"),
              ("1000", "a unit conversion"), ("60", "a unit conversion"), ("12", "a monthly or yearly amount"),
              ("/ 3", "an average"), ("** 0.5", "a square root"), ("**", "a power"), ("%", "a remainder"),
              ("+", "a sum"), ("-", "a difference"), ("*", "a product"), ("/", "a division")]


def operation(expression: str) -> str:
    """The kind of calculation a template's expression makes (its first match in OPERATIONS)."""
    return next(name for marker, name in OPERATIONS if marker in expression)


def miscopied(expression: str, numbers: dict[str, int | float], rng: random.Random) -> str | None:
    """The right expression with one operand copied wrong, the mistake a small model makes most: another number of
    the request repeated in its place, or a digit dropped or doubled. None where that would put another operand in
    an exponent's place (a power too large to compute)."""
    used = [key for key in "abcnpeq" if f"{{{key}}}" in expression]
    if not used:
        return None
    key = rng.choice(used)
    value, others = numbers[key], [numbers[k] for k in used if numbers[k] != numbers[key]]
    if others and rng.random() < 0.5:
        swapped = rng.choice(others)  # drawn even when unused, so that the bundled sample stays as measured
        return None if key == "e" else expression.format(**{**numbers, key: swapped})
    slip = rng.choice([value // 10, value * 10 + value % 10]) if isinstance(value, int) and value >= 10 else value * 10
    return expression.format(**{**numbers, key: slip})


def misread(clock: str) -> str:
    """Another time than the request's: an afternoon hour read as a morning one, or an hour off."""
    hour, minute = (int(part) for part in clock.split(":"))
    return f"{hour - 12 if hour > 12 else (hour + 1) % 24:02d}:{minute:02d}"


def calculator_request(rng: random.Random) -> ToolRequest:
    template, expression, wrong = rng.choice(CALC)
    large = rng.random() < 0.3  # users write big numbers with thousands separators; the expression has plain digits
    numbers = {"a": rng.randint(1000, 99999) if large else rng.randint(2, 999), "b": rng.randint(2, 99), "c": rng.randint(2, 52),
               "n": rng.randint(1000, 99999) if large else rng.randint(2, 999), "p": rng.choice([5, 7.5, 10, 12, 15, 18, 20, 25]),
               "e": rng.randint(3, 6), "q": rng.randint(2, 40) ** 2}
    shown = {key: f"{value:,}" if large and key in "an" else value for key, value in numbers.items()}
    right = expression.format(**numbers)
    # Half the wrong calls make the template's typical mistake of operation, half copy an operand wrong.
    mistaken = (rng.random() < 0.5 and miscopied(expression, numbers, rng)) or wrong.format(**numbers)
    same = math.isclose(evaluate_expression(right), evaluate_expression(mistaken), rel_tol=1e-6, abs_tol=1e-9)
    return ToolRequest(template.format(**shown), "calculator", {"expression": right}, None if same else {"expression": mistaken},
                       f"The user needs {operation(expression)}, so I will use the calculator.")


def search_request(rng: random.Random) -> ToolRequest:
    query = rng.choice(QUERIES)
    request = rng.choice(SEARCH).format(q=query)
    unrelated = [q for q in QUERIES if not content_words(q) & content_words(request)]
    return ToolRequest(request, "search", {"query": query}, {"query": rng.choice(unrelated)}, THOUGHTS["search"])


def calendar_request(rng: random.Random) -> ToolRequest:
    """A new event, a question about a day or a range, a move or a cancellation; each with a typical wrong call:
    the title or the day left out, or a new event where the request asks what is on, or to move or cancel one."""
    title, clock, (when, day) = rng.choice(TITLES), rng.choice(HOURS), random_day(rng)
    action = rng.choice(["create", "create", "list", "update", "delete"])
    if action == "create":
        if rng.random() < 0.2:
            short = rng.choice(WEEKDAYS[:5] + ["tomorrow"])
            request = rng.choice(CALENDAR_INFORMAL).format(t=title.lower(), day="tmrw" if short == "tomorrow" else short[:3],
                                                            h12=twelve_hour(clock))
            args: dict[str, object] = {"action": "create", "title": title, "date": short, "time": clock}
        else:
            date = random_date(rng)
            request = rng.choice(CALENDAR).format(t=title, d=date, h=clock)
            args = {"action": "create", "title": title, "date": date, "time": clock}
        wrong = rng.choice([{k: v for k, v in args.items() if k != "title"}, {"action": "create", "title": title},
                            {**args, "title": rng.choice([t for t in TITLES if t != title])}, {**args, "time": misread(clock)}])
    elif action == "list":
        if rng.random() < 0.25:
            start = random_date(rng)
            end = (datetime.date.fromisoformat(start) + datetime.timedelta(days=rng.randint(2, 13))).isoformat()
            request, args = rng.choice(CALENDAR_RANGES).format(d=start, d2=end), {"action": "list", "start_date": start, "end_date": end}
        else:
            request, args = rng.choice(CALENDAR_QUERIES).format(when=when), {"action": "list", "date": day}
        wrong = rng.choice([{"action": "list"}, {"action": "create", "title": "Calendar", "date": args.get("date", args.get("start_date"))}])
    elif action == "update":
        template, sets = rng.choice(CALENDAR_MOVES)
        weekday = rng.choice(WEEKDAYS)
        date = weekday if "{weekday}" in template else random_date(rng)
        request = template.format(t=title.lower() if template.islower() else title, d=date, h=clock, h12=twelve_hour(clock), weekday=weekday)
        args = {"action": "update", "title": title, **{k: v for k, v in (("date", date), ("time", clock)) if k in sets}}
        wrong = rng.choice([{k: v for k, v in args.items() if k != "title"}, {**args, "action": "create"},
                            {**args, "title": rng.choice([t for t in TITLES if t != title])}])
    else:
        template = rng.choice(CALENDAR_CANCELS)
        request = template.format(t=title.lower() if template.islower() else title, when=when)
        args = {"action": "delete", "title": title, **({"date": day} if "{when}" in template else {})}
        wrong = rng.choice([{k: v for k, v in args.items() if k != "title"}, {**args, "action": "create"}])
    return ToolRequest(request, "calendar", args, wrong, THOUGHTS[action])


def tool_request(rng: random.Random, kind: str | None = None) -> ToolRequest:
    """One random tool-use request (of `kind`, if given) with its right and its wrong-argument call."""
    kind = kind or rng.choice(["calculator", "search", "calendar"])
    return {"calculator": calculator_request, "search": search_request, "calendar": calendar_request}[kind](rng)


def tool_call(thought: str, tool: str, args: dict[str, object]) -> str:
    return f"Thought: {thought}\nAction:\n```json\n{json.dumps({'tool': tool, 'args': args})}\n```"


def tool_rejected(rng: random.Random, asked: ToolRequest) -> str:
    """A worse answer: a well-formed call of the wrong tool, or of the right tool with wrong arguments (so that
    preferences teach which tool a request needs and what to pass it, not only the format), otherwise prose, a
    refusal, broken JSON or a bare function call."""
    roll = rng.random()
    # Half are wrong arguments: format and tool choice are learnt early, what to pass the tool is the hard part.
    if roll < 0.25:
        wrong = rng.choice([t for t in ("calculator", "search", "calendar") if t != asked.tool])
        other = tool_request(rng, wrong)
        return tool_call(rng.choice([other.thought, "I will use a tool."]), wrong, rng.choice([asked.args, other.args]))
    if roll < 0.75 and asked.wrong_args is not None:
        return tool_call(asked.thought, asked.tool, asked.wrong_args)
    return rng.choice([
        f"Sure! {asked.request.rstrip('?.')} is something I can help with. Let me know if you need anything else.",
        rng.choice(REFUSALS),
        f"Thought: I should use a tool.\nAction:\n```json\n{{'tool': '{asked.tool}', 'args': {asked.args}}}\n```",
        f"Action: {asked.tool}({', '.join(str(v) for v in asked.args.values())})",
    ])
