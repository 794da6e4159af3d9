"""Output contracts: the shape a role's answers must take, checked on generated answers, labeled on, and gated."""

import pytest

from roleforge.config.settings import GateConfig, load_settings
from roleforge.evaluation.contracts import OutputContract, compliance
from roleforge.evaluation.scoring import ModelScore
from roleforge.tasks.evaluate import Evaluation
from roleforge.tasks.promote import gate

CEO = OutputContract(required_lines=["Decision:", "Reason:", "Next step:"])


def test_required_lines_in_order_with_markdown_emphasis_accepted():
    assert CEO.complies("Decision: pilot it.\nReason: low risk.\nNext step: HR drafts a plan by Friday.")
    assert CEO.complies("**Decision:** pilot it.\n**Reason**: low risk.\n## Next step: a plan")
    assert CEO.violations("Reason: low risk.\nDecision: pilot it.\nNext step: plan") == [
        "no line starting with 'Reason:' after the previous one"]
    assert CEO.violations("We should think about it.") == [
        "no line starting with 'Decision:'", "no line starting with 'Reason:'", "no line starting with 'Next step:'"]
    # A label inside a sentence is not a line of the answer's shape.
    assert not CEO.complies("My decision: yes. Reason: cost. Next step: none.")


def test_patterns_counts_json_schema_and_tool_calls():
    plan = OutputContract(min_matches={r"^\s*\d+[.)]\s": 2}, patterns=[r"\bowner\b"], required_lines=["Deadline:"])
    assert plan.complies("Plan:\n1. Owner: HR scopes it.\n2. Finance funds it.\nDeadline: June 1.")
    assert plan.violations("1. HR scopes it.\nDeadline: soon") == [
        "no match for /\\bowner\\b/", "/^\\s*\\d+[.)]\\s/ matches 1 time(s), fewer than 2"]
    schema = OutputContract(json_schema={"type": "object", "required": ["answer"], "properties": {"answer": {"type": "number"}}})
    assert schema.complies('{"answer": 4}') and schema.complies('Here:\n```json\n{"answer": 4}\n```')
    assert schema.violations('{"answer": "four"}') == ["JSON schema: 'four' is not of type 'number'"]
    assert schema.violations("four")[0].startswith("no JSON document")
    tool = OutputContract(tool_call=True)
    assert tool.complies('Thought: math.\nAction:\n```json\n{"tool": "calculator", "args": {"expression": "2 + 2"}}\n```')
    assert not tool.complies("The answer is 4.")
    assert OutputContract().empty and OutputContract().complies("anything")


@pytest.mark.parametrize("field", [{"patterns": ["(unclosed"]}, {"min_matches": {"x": 0}}, {"json_schema": {"type": 12}}])
def test_a_bad_contract_fails_when_the_configuration_is_read(field):
    with pytest.raises(ValueError):
        OutputContract(**field)


def test_contracts_come_from_roleforge_toml_and_the_bundled_roles_ship_one(tmp_path, monkeypatch):
    config = tmp_path / "roleforge.toml"
    config.write_text('[roles.legal]\nsystem_prompt = "You are the company lawyer."\n'
                      '[roles.legal.output]\nrequired_lines = ["Risk:", "Advice:"]\n')
    monkeypatch.setenv("ROLEFORGE_CONFIG", str(config))
    settings = load_settings()
    assert settings.role("legal").output.required_lines == ["Risk:", "Advice:"]
    assert all(not settings.role(role).output.empty for role in ("ceo", "cfo", "coo", "tool-agent"))


def test_compliance_counts_with_an_interval_and_names_the_commonest_miss():
    answers = ["Decision: a\nReason: b\nNext step: c"] * 6 + ["no shape"] * 2
    kept = compliance(CEO, answers)
    assert (kept.answers, kept.compliant, kept.rate) == (8, 6, 0.75)
    assert 0.0 < kept.low < 0.75 < kept.high < 1.0
    assert kept.top_violation == "no line starting with 'Decision:' (2x)"


def test_the_contract_rule_labels_the_compliant_answer_as_chosen():
    from roleforge.tasks.labelers.heuristics import contract_rule

    good, bad = "Decision: go.\nReason: cash.\nNext step: plan.", "Sounds exciting!"
    assert contract_rule(bad, good, {"contract": CEO}) is False and contract_rule(good, bad, {"contract": CEO}) is True
    assert contract_rule(good, good, {"contract": CEO}) is None and contract_rule(good, bad, {"contract": None}) is None


def _evaluation(ours: int, theirs: int, p: float | None, drift: float | None = None) -> Evaluation:
    scores = {side: compliance(CEO, ["Decision: a\nReason: b\nNext step: c"] * kept + ["no"] * (20 - kept))
              for side, kept in (("candidate", ours), ("opponent", theirs))}
    return Evaluation(role="ceo", held_out_pairs=20, opponent="champion", opponent_version="3",
                      candidate=ModelScore(preference_accuracy=0.9, reward_accuracy=0.9, reward_margin=1.0),
                      opponent_score=ModelScore(preference_accuracy=0.6, reward_accuracy=0.6, reward_margin=0.5),
                      accuracy_gain_low=0.1, accuracy_gain_high=0.4, contract=scores, contract_loss_p_value=p, drift_kl=drift)


def test_the_gate_refuses_a_candidate_that_follows_the_contract_less_often_with_confidence_and_one_that_drifts():
    promoted, reason = gate(_evaluation(8, 18, p=0.002), GateConfig())
    assert not promoted and "output contract followed in 8 of 20" in reason
    assert gate(_evaluation(17, 18, p=0.5), GateConfig())[0]  # one answer fewer is not evidence
    assert gate(_evaluation(20, 10, p=1.0), GateConfig())[0]
    promoted, reason = gate(_evaluation(20, 10, p=1.0, drift=0.9), GateConfig(max_drift_kl=0.25))
    assert not promoted and "drifted 0.900 nats/token" in reason
    assert gate(_evaluation(20, 10, p=1.0, drift=0.9), GateConfig(max_drift_kl=None))[0]
