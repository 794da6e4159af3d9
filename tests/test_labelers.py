"""Every labeler, the position-swap abstain rule, mixing caps and the flood guard."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from roleforge.data_contracts.preference import PreferencePair
from roleforge.evaluation.tool_use import check_tool_use
from roleforge.tasks.label import cap_automated, label_rows
from roleforge.tasks.labelers.generator import FORMAT_FAILURE_MODES, RejectedResponseGenerator, rejected_variant
from roleforge.tasks.labelers.heuristics import HeuristicLabeler, is_refusal
from roleforge.tasks.labelers.human import HumanChoiceLabeler
from roleforge.tasks.labelers.judge import HttpJudge, JudgeLabeler, LocalJudge, combine
from roleforge.tasks.validate import validate_pairs

GOOD_CALL = 'Thought: arithmetic, so the calculator.\nAction:\n```json\n{"tool": "calculator", "args": {"expression": "6 * 7"}}\n```'


def rated(id_, prompt, response, rating, role="tool-agent"):
    return {"id": id_, "agent_role": role, "kind": "rating", "prompt": prompt, "response": response, "rating": rating,
            "confidence": None, "rater": f"u{id_}"}


def pair(i, source="human_ab", rater="u1", confidence=1.0):
    return PreferencePair(role="ceo", prompt=f"p{i}", chosen=f"good {i}", rejected=f"bad {i}", source=source,
                          labeler="test", confidence=confidence, feedback_ids=(i,), rater=rater)


def test_heuristics_rank_refusals_format_and_detail():
    rows = [rated(1, "6 times 7?", GOOD_CALL, 4), rated(2, "6 times 7?", "I cannot help with that.", 4),
            rated(3, "Plan?", "Owner: HR. Steps: hire, train, review. Deadline: Friday, with weekly check-ins.", 3, "coo"),
            rated(4, "Plan?", "Soon.", 3, "coo"), rated(5, "Tie?", "Answer one", 3, "coo"), rated(6, "Tie?", "Answer two", 3, "coo")]
    result = HeuristicLabeler(["tool_format", "refusal", "detail"]).label(rows)
    by_prompt = {p.prompt: p for p in result.pairs}
    assert by_prompt["6 times 7?"].chosen == GOOD_CALL and by_prompt["6 times 7?"].labeler == "heuristics:tool_format"
    assert by_prompt["Plan?"].rejected == "Soon." and by_prompt["Plan?"].source == "heuristic"
    assert result.abstained == 1 and "Tie?" not in by_prompt


def test_refusal_and_tool_format_checks():
    assert is_refusal("I'm sorry, but I can't help with that request.") and not is_refusal("I can help with that.")
    check = check_tool_use(GOOD_CALL)
    assert check.compliant("calculator") and not check.compliant("search")
    assert not check_tool_use("Thought: x\nAction:\n```json\n{'tool': 'search'}\n```").json_valid


@pytest.mark.parametrize("mode", FORMAT_FAILURE_MODES)
def test_generated_rejections_fail_the_format_check(mode):
    bad = rejected_variant("What is 6 times 7?", GOOD_CALL, mode)
    assert bad != GOOD_CALL and not check_tool_use(bad).compliant("calculator")


def test_generator_bootstraps_pairs_from_good_examples_only():
    rows = [rated(1, "6 times 7?", GOOD_CALL, 5), rated(2, "hello", "plain prose", 5), rated(3, "6 times 8?", GOOD_CALL, 2)]
    pairs = RejectedResponseGenerator(per_response=3).label(rows).pairs
    assert len(pairs) == 3 and {p.chosen for p in pairs} == {GOOD_CALL} and all(p.source == "generated" for p in pairs)
    assert RejectedResponseGenerator(per_response=3).label(rows).pairs == pairs, "reruns make the same pairs"


@pytest.mark.parametrize(("forward", "backward", "expected"), [
    (0.9, 0.2, (True, 0.85)),  # "A" when first is A, "B" when first is B: first wins either way
    (0.2, 0.9, (False, 0.85)),
    (0.9, 0.9, "abstain: the two orders disagree"),  # always "A": pure position bias
    (0.58, 0.45, "abstain: too close to call"),
    ("http 503", 0.1, "http 503"),
])
def test_both_orders_must_agree(forward, backward, expected):
    verdict = combine(forward, backward, abstain_margin=0.1)
    assert verdict == expected if isinstance(expected, str) else (verdict[0], round(verdict[1], 2)) == expected


class ScriptedJudge:
    """Answers "first is better" for prompts in `favour_first`, always "A" otherwise (position bias)."""

    name = "scripted"

    def __init__(self, favour_first):
        self.favour_first = favour_first

    def prefer_a(self, system_prompt, items):
        return [(0.9 if a.startswith("first") else 0.1) if prompt in self.favour_first else 0.9 for prompt, a, b in items]


def test_judge_labeler_judges_only_undecided_pairs_and_abstains_on_position_bias():
    rows = [rated(1, "p1", "first answer", 3, "ceo"), rated(2, "p1", "second answer", 3, "ceo"),
            rated(3, "p2", "first x", 3, "ceo"), rated(4, "p2", "second x", 4, "ceo"),
            rated(5, "p3", "first y", 5, "ceo"), rated(6, "p3", "second y", 1, "ceo")]
    result = JudgeLabeler(ScriptedJudge({"p1"}), "sys").label(rows)
    assert [(p.prompt, p.chosen, p.source) for p in result.pairs] == [("p1", "first answer", "teacher")]
    assert result.abstained == 1  # p2: the judge said "A" whatever the order; p3 was decided by ratings


def test_local_judge_gives_probabilities(tiny_model_dir):
    from roleforge.models.base import load_model, load_tokenizer

    judge = LocalJudge(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), batch_size=2)
    probabilities = judge.prefer_a("You are the CEO.", [("Grow?", "Yes.", "No."), ("Hire?", "Decision: hire two.", "Maybe.")] * 2)
    assert len(probabilities) == 4 and all(0.0 < p < 1.0 for p in probabilities)
    assert probabilities[0] == pytest.approx(probabilities[2], abs=1e-5), "batching must not change a verdict"


def test_the_local_judge_borrows_the_processs_generating_copy_of_the_model(tiny_model_dir):
    """The default A/B judge keeps no model of its own: each call borrows the copy evaluation generates with from the
    pool (one copy in the process, not two), gives it back clean, and its verdicts are the loaded model's."""
    from roleforge.models.base import BASE_MODELS, inference_dtype, load_model, load_tokenizer
    from roleforge.tasks.label import local_judge

    items = [("Grow?", "Yes.", "No."), ("Hire?", "Decision: hire two.", "Maybe.")]
    with BASE_MODELS.lend(tiny_model_dir, dtype=inference_dtype()):
        pass  # the generating copy exists, as after an evaluation's answers
    loads = BASE_MODELS.loads
    judge = local_judge(tiny_model_dir, 2)
    borrowed = [judge.prefer_a("You are the CEO.", items) for _ in range(2)]
    assert BASE_MODELS.loads == loads, "the judge loaded a copy of its own"
    assert not hasattr(judge.model, "parameters"), "a model directory, not a model"
    with BASE_MODELS.lend(tiny_model_dir, dtype=inference_dtype()) as model:
        assert model.training is False and not hasattr(model, "peft_config"), "handed back clean"
    own = LocalJudge(load_model(tiny_model_dir, inference_dtype()).eval(), load_tokenizer(tiny_model_dir), 2)
    assert borrowed[0] == borrowed[1]
    assert borrowed[0] == pytest.approx(own.prefer_a("You are the CEO.", items), abs=2e-3)


class JudgeEndpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint: prefers the answer containing "good"; answers 503 once, or babbles, on cue."""

    attempts: dict[str, int] = {}

    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        message = body["messages"][0]["content"]
        JudgeEndpoint.attempts[message] = JudgeEndpoint.attempts.get(message, 0) + 1
        assert self.headers["Authorization"] == "Bearer sk-test"
        if "flaky" in message and JudgeEndpoint.attempts[message] == 1:  # every first attempt fails
            self.send_response(503)
            self.end_headers()
            return
        a = message.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
        content = "maybe?" if "babble" in message else ("A" if "good" in a else "B")
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_http_judge_against_a_real_server(endpoint):
    rows = [rated(1, "plain", "a good answer", 3, "ceo"), rated(2, "plain", "a weak answer", 3, "ceo"),
            rated(3, "flaky", "the good one", 3, "ceo"), rated(4, "flaky", "the other", 3, "ceo"),
            rated(5, "babble", "good", 3, "ceo"), rated(6, "babble", "bad", 3, "ceo")]
    judge = HttpJudge(url=endpoint, model="judge", api_key="sk-test", retries=2, backoff_s=0.01)
    result = JudgeLabeler(judge, "You are the CEO.").label(rows)
    assert sorted((p.prompt, p.chosen) for p in result.pairs) == [("flaky", "the good one"), ("plain", "a good answer")]
    assert result.skipped == {"unparseable answer": 1}


def test_unreachable_judge_is_skipped_not_fatal():
    judge = HttpJudge(url="http://127.0.0.1:9/v1", model="judge", retries=1, backoff_s=0.01, timeout_s=1)
    result = JudgeLabeler(judge, "sys").label([rated(1, "p", "x", 3, "ceo"), rated(2, "p", "y", 3, "ceo")])
    assert result.pairs == [] and sum(result.skipped.values()) == 1


def test_automated_sources_are_capped_by_share_and_humans_kept():
    pairs = [pair(i) for i in range(80)] + [pair(100 + i, "generated", confidence=0.5 + i / 1000) for i in range(100)]
    kept, capped = cap_automated(pairs, {"generated": 0.2})
    generated = [p for p in kept if p.source == "generated"]
    assert len(kept) - len(generated) == 80 and len(generated) == 20 and capped == {"generated": 80}
    assert min(p.confidence for p in generated) > 0.5 + 79 / 1000, "the most confident are kept"


def test_label_rows_counts_conflicts_between_sources():
    rows = [{"id": 1, "agent_role": "ceo", "kind": "ab", "prompt": "p", "response_a": "I cannot help with that.",
             "response_b": "Decision: go.", "preference": "a", "confidence": None, "rater": "u1"}]
    outcome = label_rows(rows, [HumanChoiceLabeler(), HeuristicLabeler(["refusal"])], {"heuristic": 0.5})
    assert outcome.conflicts == 1 and [p.source for p in outcome.pairs] == ["human_ab"]


def test_flood_guard_fails_the_pair_contract():
    flooded = [pair(i, rater="bot") for i in range(8)] + [pair(10 + i, rater=f"u{i}") for i in range(4)]
    result = validate_pairs("ceo", flooded, max_rater_share=0.5, min_pairs_for_rater_share=12)
    assert not result.success and "rater_share" in result.failure_summary
    assert validate_pairs("ceo", flooded, max_rater_share=0.7, min_pairs_for_rater_share=12).success


def test_flood_guard_waits_for_enough_pairs():
    assert validate_pairs("ceo", [pair(0, rater="u1")], max_rater_share=0.5, min_pairs_for_rater_share=20).success
    flooded = [pair(i, rater="bot") for i in range(19)] + [pair(100, rater="u1")]
    assert validate_pairs("ceo", flooded[:-1], max_rater_share=0.5, min_pairs_for_rater_share=20).success
    result = validate_pairs("ceo", flooded, max_rater_share=0.5, min_pairs_for_rater_share=20)
    assert not result.success and "rater_share" in result.failure_summary


def test_one_pair_from_one_rater_passes_the_configured_pair_contract(home, tmp_path, monkeypatch):
    from roleforge.config.settings import load_settings
    from roleforge.tasks.ingest import ingest_configured
    from roleforge.tasks.label import label_stored

    feedback = tmp_path / "one.jsonl"
    feedback.write_text(json.dumps({"agent_role": "ceo", "prompt": "Expand to Germany?", "response_a": "Decision: go.",
                                    "response_b": "It depends.", "preference": "a", "rater": "u1"}) + "\n")
    ingest_configured(load_settings(), [str(feedback)])
    _, (pair_contract, _) = label_stored("ceo", load_settings())
    assert pair_contract.rows == 1 and pair_contract.success, "the default minimum (20 pairs) is not reached"
    monkeypatch.setenv("ROLEFORGE_ROLES__CEO__LABELING__MIN_PAIRS_FOR_RATER_SHARE", "1")
    _, (pair_contract, _) = label_stored("ceo", load_settings())
    assert not pair_contract.success and "rater_share" in pair_contract.failure_summary
