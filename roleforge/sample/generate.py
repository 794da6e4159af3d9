"""Generate the bundled sample feedback: `python -m roleforge.sample.generate [OUT_DIR] [--ten-roles]`.

Deterministic (seeded), so the committed files change only when this script does. Each executive role gets A/B
choices and 1-5 ratings whose preferred answers follow the role's system prompt (a decision with its reason and
next step; figures, risk and a recommendation; owners, steps and a deadline); the tool-agent's preferred answers
are a `Thought:` line plus an `Action:` JSON call of the right tool with the right arguments. With `--ten-roles`,
six more roles' feedback too (cto, cmo, chro, clo, cso, vp-sales; configured by ten_roles.toml beside this file), each
in the answer shape of the executive it borrows; the bundled files are written only without it.
"""

from __future__ import annotations

import datetime
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roleforge.evaluation.tool_use import content_words, evaluate_expression

OUT_DIR = Path(__file__).parent / "feedback"
SEED = 20261122
RATERS = [f"user-{n:03d}" for n in range(1, 41)]

TOPICS = [
    "expanding into the German market", "a 15% price increase for the enterprise plan", "hiring 20 engineers next quarter",
    "moving our data centers to the cloud", "acquiring a small analytics startup", "cutting the travel budget",
    "launching a free tier", "a four-day work week pilot", "switching our CRM vendor", "opening an office in Singapore",
    "delaying the mobile app release", "a partnership with a large reseller", "raising a Series C round",
    "consolidating two product lines", "outsourcing first-line support", "a security audit after the phishing incident",
    "renegotiating the office lease", "sunsetting the legacy on-premise product", "a bonus program for sales",
    "investing in an AI assistant for customers", "reducing customer churn in the SMB segment",
    "entering the healthcare vertical", "a hiring freeze", "building a second data region in the US",
    "a company-wide OKR reset", "paying down technical debt for a quarter", "a bug bounty program",
    "moving to usage-based pricing", "a customer advisory board", "a reorganisation into product squads",
]
ASKS = [
    "What should we do about {topic}?", "Give me your view on {topic}.", "Should we go ahead with {topic}?",
    "The board asks about {topic}. What is our position?", "How do we handle {topic}?",
    "I need a recommendation on {topic} by Friday.", "What is your take on {topic}?",
    "We are debating {topic}. Where do you land?",
]

# Each executive's own subjects and ways of asking, beside the shared ones, so that a role learns its answer shape
# for its questions in many phrasings and not for eight templates. role_eval.jsonl is written apart from all of
# these (tests/test_role_eval.py checks it).
ROLE_TOPICS = {
    "ceo": ["selling the hardware division", "a second product for mid-market firms", "moving headquarters to Austin",
            "a merger offer from a bigger rival", "hiring a chief revenue officer", "an employee stock buyback",
            "a partnership with a bank", "leaving the conference circuit", "an apology campaign after the data leak",
            "a pay cut for the leadership team", "spinning off the consulting arm", "a joint venture in India",
            "taking venture debt", "dropping the free trial", "a company-wide hackathon week"],
    "cfo": ["refinancing the equipment loan", "the budget for the new sales region", "a price cut for annual plans",
            "leasing versus buying the new servers", "the cost of a second support shift", "a bigger marketing budget",
            "moving payroll to a monthly cycle", "a reserve for bad debt", "the travel and entertainment spend",
            "paying suppliers in euros", "the capital budget for next year", "a sale-leaseback of the office",
            "raising prices for legacy customers", "an earn-out for the acquisition", "the audit fee increase"],
    "coo": ["moving the warehouse to a new site", "support in Spanish and Portuguese", "the move to the fourth floor",
            "single sign-on for every internal app", "the annual stock count", "a returns process for hardware",
            "a support hub in Manila", "the switch to a cloud phone system", "hiring 30 support agents for the spring",
            "a password manager for all staff", "the holiday shipping peak", "merging three CRM instances",
            "the end of life of the v1 API", "a training academy for customers", "the badge access upgrade"],
}
ROLE_ASKS = {
    "ceo": ["Make the call on {topic}.", "Yes or no on {topic}? I need a decision.", "{topic}: go or no go?",
            "The leadership team is split on {topic}. What do we decide?", "what's the decision on {topic}",
            "Investors keep asking about {topic}. Where do we stand?", "I have to announce our choice on {topic} tomorrow. Which is it?"],
    "cfo": ["Run the numbers on {topic}.", "What does {topic} cost us, and is it worth it?", "Give me the financial view of {topic}.",
            "do we have the money for {topic}", "Is {topic} a good use of cash this year?", "What's the financial risk in {topic}?",
            "Before the budget review: your numbers on {topic}, please."],
    "coo": ["Lay out the plan for {topic}.", "Who owns {topic}, and what are the steps?", "Organise {topic} for us.",
            "need a plan for {topic} asap", "How do we execute {topic} without dropping the ball?",
            "Put together the steps for {topic}, with a deadline.", "We start {topic} next month. Who does what?"],
}
# A sentence of context before some asks, as users write them.
CONTEXTS = ["We are about 250 people in three offices.", "This came up in the leadership meeting.",
            "Budget season starts in three weeks.", "The team has been going back and forth on this.",
            "Our biggest customer raised it too.", "I promised an answer to the board.", "Cash is tight this year.",
            "We grew 40% last year and processes are creaking."]

# Each executive's situations as users bring them: the facts first, with figures, then a short ask. A role that
# learns its shape only for "{ask} {topic}" templates answers a situation like the base model would.
# (statement, the subject its answer names)
ROLE_SITUATIONS = {
    "ceo": [("Our largest reseller wants a 35% margin instead of 25%, or they drop us.", "the reseller's margin demand"),
            ("Two board members want to cut 15% of staff to extend the runway; the others want to keep hiring.", "the layoff proposal"),
            ("A private equity firm offered to buy 60% of the company at eight times revenue.", "the private equity offer"),
            ("The head of engineering wants to rewrite the core platform, a nine-month job.", "the platform rewrite"),
            ("A supplier we depend on is being bought by our main competitor.", "the supplier being acquired"),
            ("Sales missed target three quarters running and the VP of Sales wants a bigger team.", "more sales headcount"),
            ("Our app was pulled from a major app store over a policy dispute.", "the app store removal"),
            ("A well-known founder offered to join as an adviser for 2% equity.", "the adviser's equity request"),
            ("We can enter Japan through a distributor, or with our own team at twice the cost.", "entering Japan"),
            ("A breach at one of our vendors exposed 3,000 customer email addresses.", "the vendor breach"),
            ("Our lead investor wants us to hire a CFO from their network.", "the investor's CFO candidate"),
            ("Product wants to remove a feature that 8% of customers still use every week.", "removing the old feature"),
            ("A national bank offered to sell our product under its own brand.", "the white-label offer"),
            ("Founder-led sales got us to $12M ARR and has stopped scaling.", "how we sell after founder-led sales"),
            ("A customer's angry video about our support got two million views overnight.", "the viral complaint"),
            ("Our biggest region grew 2% this year while the others grew 30%.", "the slow region"),
            ("A top-ten customer asked us to build on-premise support for them alone.", "on-premise support for one customer"),
            ("The engineering team voted to move all work to a public roadmap tool that customers can see.", "an open engineering board")],
    "cfo": [("Our hosting bill went from $90k to $160k a month after the migration.", "the hosting bill"),
            ("A customer offers to prepay $3M for five years if we give them 30% off.", "the five-year prepayment"),
            ("We can buy our office building for $12M or keep renting it at $700k a year.", "buying the office building"),
            ("Commission payouts are now 14% of new bookings, up from 9% last year.", "the commission costs"),
            ("The venture debt lender wants warrants for 1.5% of the company.", "the lender's warrants"),
            ("Inventory is up 40% while unit sales are flat.", "the inventory build-up"),
            ("A customer wants net 120 payment terms on a $900k deal.", "net 120 terms"),
            ("Our Canadian subsidiary has lost money four years in a row.", "the Canadian subsidiary"),
            ("Rates have come down, and our $6M term loan still costs 11%.", "the term loan"),
            ("Sales wants to give a logo worth $250k a year its first year free.", "a free first year"),
            ("Our cloud commitment runs out in March with $400k of it unused.", "the unused cloud commitment"),
            ("A key supplier raised prices 18% with 30 days' notice.", "the supplier's price rise"),
            ("Product asks for $1.2M to build a mobile app no customer has asked for yet.", "the mobile app budget"),
            ("Write-offs for unpaid invoices tripled this year to $700k.", "the write-offs"),
            ("Moving support to a lower-cost region would save about $500k a year.", "moving support offshore"),
            ("The board wants a path to cash-flow breakeven within 18 months.", "the path to breakeven"),
            ("Currency swings cost us $320k last quarter on contracts priced in euros.", "the currency losses"),
            ("Hardware margins fell to 12% while software margins stayed at 80%.", "the hardware margins")],
    "coo": [("Customer tickets sit unassigned for two days on average.", "ticket assignment"),
            ("Our warehouse ships 8% of orders to the wrong address.", "wrong-address shipments"),
            ("Three teams buy their own software licences and nobody tracks the renewals.", "software licence tracking"),
            ("We open a second office in Austin in four months.", "the Austin office opening"),
            ("Onsite installs are booked by email, and we double-book technicians every week.", "booking onsite installs"),
            ("Our SOC 2 audit starts in ten weeks and the evidence is spread over five tools.", "the SOC 2 audit"),
            ("The demo environment breaks right before most big sales demos.", "the demo environment"),
            ("We switch payroll providers on January 1 for 400 people in four countries.", "the payroll switch"),
            ("120 people move into the new building over one weekend.", "the building move"),
            ("Product launches slip by three weeks on average.", "launch slippage"),
            ("25 graduates all start on the same Monday in September.", "the graduate start day"),
            ("Half of our suppliers still send paper invoices.", "paper invoices"),
            ("Customer success has no playbook for accounts that might churn.", "the at-risk account playbook"),
            ("A new privacy law takes effect in our largest market in five months.", "the new privacy law"),
            ("Field technicians lose an hour a day driving between jobs.", "technician routing"),
            ("Security wants every laptop encrypted within 30 days.", "laptop encryption"),
            ("Our support teams in Dublin and Denver use different tools and rules.", "merging the support teams"),
            ("The old phone system is switched off at the end of the quarter.", "retiring the phone system")],
}
# What follows a situation, per role.
SITUATION_ASKS = {
    "ceo": ["Your decision?", "Call it.", "Where do we come down?", "Which way do we go?", "Decide for us.",
            "how do we play this", "What's the answer from the top?"],
    "cfo": ["What do the numbers say?", "Financially, what's the right move?", "Your recommendation, with figures?",
            "approve or not", "How bad is it, and what do we do?", "What does this do to our cash?", "Talk me through the money."],
    "coo": ["How do we run this?", "Who takes it, and by when?", "Sort it out, please.", "Steps and owners, please.",
            "Make it happen.", "how do we get this done", "Map out the work."],
}
# Users ask for short answers too; the role's shape holds at any length.
BREVITY = ["Briefly:", "Short version please:", "Be concise.", "No long essay:", "Keep it tight.", "A short answer is fine.",
           "Three lines max."]

OWNERS = ["the VP of Engineering", "the Head of Sales", "the Finance team", "the Operations lead", "HR", "the CTO", "Legal"]
DEADLINES = ["by the end of the month", "within two weeks", "before the next board meeting", "by the end of the quarter", "by Friday"]
FIGURES = ["$1.2M", "$350k", "$4.8M", "$90k", "$2.1M", "$640k"]
VAGUE = [
    "It depends on many factors. There are pros and cons, and we should think about it carefully.",
    "That is an interesting question. Many companies have tried different things.",
    "I am not sure. Let's discuss it sometime and see what people think.",
    "There are a lot of considerations here and it is hard to say anything definite right now.",
]
REFUSALS = ["I cannot help with that.", "I'm sorry, but I can't give advice on this topic.", "As an AI, I cannot make business decisions."]


def ceo_good(rng: random.Random, topic: str) -> str:
    verdict = rng.choice(["Go ahead with", "Do not pursue", "Pilot"])
    return (f"Decision: {verdict} {topic}.\nReason: it {rng.choice(['protects our core revenue', 'fits our three-year strategy', 'focuses the team on what customers pay for', 'keeps risk contained while we learn'])}.\n"
            f"Next step: {rng.choice(OWNERS)} brings a one-page plan {rng.choice(DEADLINES)}.")


def cfo_good(rng: random.Random, topic: str) -> str:
    return (f"Figures: {topic} costs about {rng.choice(FIGURES)} this year against {rng.choice(FIGURES)} of expected upside.\n"
            f"Risk: {rng.choice(['cash runway drops by two months', 'margin dips for two quarters', 'the payback period is 18 months', 'currency exposure rises'])}.\n"
            f"Recommendation: {rng.choice(['approve with a staged budget', 'approve if the pilot hits its target', 'defer to next fiscal year', 'reject until costs are clearer'])}.")


def coo_good(rng: random.Random, topic: str) -> str:
    owner, other = rng.sample(OWNERS, 2)
    first = rng.choice(["scopes the work", "writes the plan", "maps the current process", "sets the targets"])
    second = rng.choice(["lines up the people and budget", "briefs the affected teams", "sets up the tools",
                         "runs a pilot with one team"])
    third = rng.choice(["Weekly check-in until launch.", "Review progress every Friday.",
                        "Status to the exec team every two weeks."])
    return (f"Plan for {topic}:\n1. Owner: {owner} {first} {rng.choice(DEADLINES)}.\n"
            f"2. {other[0].upper() + other[1:]} {second}.\n3. {third}\nDeadline: {rng.choice(DEADLINES)}.")


def off_role(rng: random.Random, topic: str) -> str:
    return rng.choice([
        f"Honestly, {topic} sounds exciting! I love new ideas and I think the team will be thrilled either way.",
        f"Here is a poem about {topic}: change is hard, change is good, we will do what we should.",
        f"Let me tell you about the history of {topic} in other industries, which goes back many decades and involves many people.",
    ])


def mediocre(rng: random.Random, topic: str) -> str:
    return f"We should probably look at {topic} more closely. {rng.choice(VAGUE)}"


EXEC_ROLES: dict[str, Callable[[random.Random, str], str]] = {"ceo": ceo_good, "cfo": cfo_good, "coo": coo_good}

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
THOUGHTS = {"calculator": "The user needs arithmetic, so I will use the calculator.",
            "search": "The user needs current information, so I will search.",
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


def calculator_request(rng: random.Random) -> ToolRequest:
    template, expression, wrong = rng.choice(CALC)
    large = rng.random() < 0.3  # users write big numbers with thousands separators; the expression has plain digits
    numbers = {"a": rng.randint(1000, 99999) if large else rng.randint(2, 999), "b": rng.randint(2, 99), "c": rng.randint(2, 52),
               "n": rng.randint(1000, 99999) if large else rng.randint(2, 999), "p": rng.choice([5, 7.5, 10, 12, 15, 18, 20, 25]),
               "e": rng.randint(3, 6), "q": rng.randint(2, 40) ** 2}
    shown = {key: f"{value:,}" if large and key in "an" else value for key, value in numbers.items()}
    right, mistaken = expression.format(**numbers), wrong.format(**numbers)
    same = math.isclose(evaluate_expression(right), evaluate_expression(mistaken), rel_tol=1e-6, abs_tol=1e-9)
    return ToolRequest(template.format(**shown), "calculator", {"expression": right},
                       None if same else {"expression": mistaken}, THOUGHTS["calculator"])


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
        wrong = rng.choice([{k: v for k, v in args.items() if k != "title"}, {"action": "create", "title": title}])
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
        wrong = rng.choice([{k: v for k, v in args.items() if k != "title"}, {**args, "action": "create"}])
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
    if roll < 0.3:
        wrong = rng.choice([t for t in ("calculator", "search", "calendar") if t != asked.tool])
        other = tool_request(rng, wrong)
        return tool_call(rng.choice([other.thought, "I will use a tool."]), wrong, rng.choice([asked.args, other.args]))
    if roll < 0.65 and asked.wrong_args is not None:
        return tool_call(asked.thought, asked.tool, asked.wrong_args)
    return rng.choice([
        f"Sure! {asked.request.rstrip('?.')} is something I can help with. Let me know if you need anything else.",
        rng.choice(REFUSALS),
        f"Thought: I should use a tool.\nAction:\n```json\n{{'tool': '{asked.tool}', 'args': {asked.args}}}\n```",
        f"Action: {asked.tool}({', '.join(str(v) for v in asked.args.values())})",
    ])


def exec_prompts(rng: random.Random, role: str) -> list[tuple[str, str]]:
    """(prompt, topic) pairs for an executive role: the shared and the role's own subjects asked in the shared and the
    role's own ways, some after a sentence of context; the role's situations (facts, then a short ask), a third of
    the first 210 where it has them; some asking for brevity, some typed in lowercase or with a slip. Another role
    (EXTRA_ROLES) borrows none of the own ones."""
    topics, asks = TOPICS + ROLE_TOPICS.get(role, []), ASKS + ROLE_ASKS.get(role, [])
    prompts = []
    for topic in topics:
        for ask in asks:
            prompt = ask.format(topic=topic)
            prompt = prompt[0].upper() + prompt[1:] if ask[0] == "{" else prompt
            prompts.append((f"{rng.choice(CONTEXTS)} {prompt}" if rng.random() < 0.3 else prompt, topic))
    situations = [(f"{statement} {ask}", topic) for statement, topic in ROLE_SITUATIONS.get(role, [])
                  for ask in SITUATION_ASKS[role]]
    rng.shuffle(prompts)
    rng.shuffle(situations)
    mixed = prompts[:210 - min(len(situations), 70)] + situations[:70]
    rng.shuffle(mixed)
    rest = prompts[210 - min(len(situations), 70):] + situations[70:]
    return [(as_typed(rng, prompt), topic) for prompt, topic in mixed + rest]


def as_typed(rng: random.Random, prompt: str) -> str:
    """The prompt as users type it: now and then with a request for brevity, in lowercase without the final mark,
    or with two letters swapped in a word."""
    roll = rng.random()
    if roll < 0.15:
        ask = rng.choice(BREVITY)
        prompt = f"{ask} {prompt}" if ask.endswith(":") or rng.random() < 0.5 else f"{prompt} {ask}"
    elif roll < 0.27:
        prompt = prompt.lower().rstrip("?.!")
    elif roll < 0.35:
        words = prompt.split(" ")
        long = [i for i, word in enumerate(words) if len(word) >= 6 and word.isalpha()]
        if long:
            i = rng.choice(long)
            j = rng.randint(1, len(words[i]) - 3)
            words[i] = words[i][:j] + words[i][j + 1] + words[i][j] + words[i][j + 2:]
            prompt = " ".join(words)
    return prompt


def exec_rows(rng: random.Random, role: str, good: Callable[[random.Random, str], str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    prompts = exec_prompts(rng, role)
    for prompt, topic in prompts[:150]:
        better, worse = good(rng, topic), rng.choice([off_role, mediocre])(rng, topic) if rng.random() < 0.7 else rng.choice(REFUSALS)
        flip = rng.random() < 0.5
        rows.append({"agent_role": role, "prompt": prompt, "response_a": worse if flip else better,
                     "response_b": better if flip else worse, "preference": "b" if flip else "a",
                     "rater": rng.choice(RATERS), "confidence": rng.choice(["high", "high", "medium", 0.9])})
    for prompt, topic in prompts[150:210]:
        for response, rating in ((good(rng, topic), rng.choice([4, 5])), (mediocre(rng, topic), 3),
                                 (off_role(rng, topic), rng.choice([1, 2]))):
            rows.append({"agent_role": role, "prompt": prompt, "response": response, "rating": rating, "rater": rng.choice(RATERS)})
    return rows


# Tool requests per kind in the tool agent's feedback: arithmetic has the most ways to go wrong, search the fewest.
TOOL_MIX = {"calculator": 0.45, "calendar": 0.35, "search": 0.2}


def tool_agent_rows(rng: random.Random) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for index in range(800):
        asked = tool_request(rng, rng.choices(list(TOOL_MIX), weights=list(TOOL_MIX.values()))[0])
        chosen, rejected = tool_call(asked.thought, asked.tool, asked.args), tool_rejected(rng, asked)
        if index < 600:
            flip = rng.random() < 0.5
            rows.append({"agent_role": "tool-agent", "prompt": asked.request, "response_a": rejected if flip else chosen,
                         "response_b": chosen if flip else rejected, "preference": "b" if flip else "a", "rater": rng.choice(RATERS)})
        else:
            rows.append({"agent_role": "tool-agent", "prompt": asked.request, "response": chosen, "rating": 5, "rater": rng.choice(RATERS)})
            rows.append({"agent_role": "tool-agent", "prompt": asked.request, "response": rejected, "rating": rng.choice([1, 2]), "rater": rng.choice(RATERS)})
    return rows


BAD_LINES = [
    b'{"agent_role": "ceo", "prompt": "Missing the rest"',
    b'{"agent_role": "ceo", "prompt": "Rate this", "response": "Fine.", "rating": 9}',
    b'{"agent_role": "cfo", "prompt": "Pick one", "response_a": "A", "response_b": "B", "preference": "c"}',
    b'{"agent_role": "cmo", "prompt": "Who am I?", "response": "Nobody.", "rating": 3}',
    b'["not", "an", "object"]',
    b'{"agent_role": "coo", "prompt": "", "response": "Empty prompt.", "rating": 2}',
    b'{"agent_role": "coo", "prompt": "Same?", "response_a": "Same.", "response_b": "Same.", "preference": "a"}',
    b'{"agent_role": "ceo", "prompt": "caf\xe9 latin-1", "response": "bytes", "rating": 4}',
    b'',
    b'{"agent_role": "cfo", "prompt": "Call me at +1 415 555 0199 or mail jane.doe@example.com", "response": "Card 4111 1111 1111 1111 is on file.", "rating": 1}',
]


# The six roles that make ten, each with the executive whose answer shape it borrows (its system prompt and output
# contract in ten_roles.toml ask for that shape).
EXTRA_ROLES = {"cto": "ceo", "cmo": "ceo", "chro": "coo", "clo": "cfo", "cso": "cfo", "vp-sales": "coo"}


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def role_rows() -> dict[str, list[dict[str, object]]]:
    """The bundled roles' feedback rows, by role."""
    rows = {role: exec_rows(random.Random(SEED + offset), role, good) for offset, (role, good) in enumerate(EXEC_ROLES.items())}
    return {**rows, "tool-agent": tool_agent_rows(random.Random(SEED + 10))}


def ten_role_feedback(out_dir: Path, rows_per_role: int | None = None) -> list[Path]:
    """Feedback for ten roles, a file each: the bundled four and EXTRA_ROLES (seeded apart, so their prompts and
    answers differ from their model's). `rows_per_role` keeps each file's first rows: A/B choices, then ratings."""
    rows = role_rows()
    for offset, (role, model) in enumerate(EXTRA_ROLES.items()):
        rows[role] = exec_rows(random.Random(SEED + 20 + offset), role, EXEC_ROLES[model])
    out_dir.mkdir(parents=True, exist_ok=True)
    for role, role_feedback in rows.items():
        write_jsonl(out_dir / f"{role}.jsonl", role_feedback[:rows_per_role])
    return [out_dir / f"{role}.jsonl" for role in rows]


def main(out_dir: Path = OUT_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for role, rows in role_rows().items():
        write_jsonl(out_dir / f"{role}.jsonl", rows)
    (out_dir / "mixed-quality.jsonl").write_bytes(b"\n".join(BAD_LINES) + b"\n")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--ten-roles"]
    target = Path(arguments[0]) if arguments else OUT_DIR
    if "--ten-roles" in sys.argv[1:]:
        if target.resolve() == OUT_DIR.resolve():
            sys.exit("--ten-roles writes to another folder: give OUT_DIR (the bundled files stay as they are)")
        ten_role_feedback(target)
    else:
        main(target)
