"""Generate the bundled sample feedback: `python -m roleforge.sample.generate [OUT_DIR] [--ten-roles]`.

Deterministic (seeded), so the committed files change only when this script does. Each executive role gets A/B
choices and 1-5 ratings whose preferred answers follow the role's system prompt (a decision with its reason and
next step; figures, risk and a recommendation; owners, steps and a deadline); the tool-agent's preferred answers
are a `Thought:` line plus an `Action:` JSON call of the right tool with the right arguments. With `--ten-roles`,
six more roles' feedback too (cto, cmo, chro, clo, cso, vp-sales; configured by ten_roles.toml beside this file), each
in the answer shape of the executive it borrows; the bundled files are written only without it.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

from roleforge.sample.tool_requests import REFUSALS, tool_call, tool_rejected, tool_request

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


# A later day's feedback per role in `bench night --nights`: a day's worth beside the sample's history.
DAY_ROWS = 60


def day_rows(role: str, day: int) -> list[dict[str, object]]:
    """A later day's feedback rows of `role` (A/B choices first, then ratings), drawn from the day's own seed; [] for a
    role the generator does not write."""
    rng = random.Random(SEED + 1000 * day + sum(map(ord, role)))
    if role == "tool-agent":
        return tool_agent_rows(rng)
    good = EXEC_ROLES.get(role) or EXEC_ROLES.get(EXTRA_ROLES.get(role, ""))
    return exec_rows(rng, role, good) if good is not None else []


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
