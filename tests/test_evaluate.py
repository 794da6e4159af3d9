"""Evaluation on the tiny model: held-out scoring with an interval, generation A/B judged in both orders,
guardrails and the tool-use task metrics, all logged as flat metrics."""

from __future__ import annotations

from roleforge.tasks.evaluate import evaluate_candidate, evaluation_metrics
from roleforge.training.candidate import Candidate
from tests.conftest import SAMPLE


def random_adapter(model_dir, target):
    from peft import LoraConfig, get_peft_model

    from roleforge.models.base import load_model

    model = get_peft_model(load_model(model_dir), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(str(target))
    return target


def test_evaluation_scores_generates_judges_and_guards(home, tiny_model_dir, tmp_path):
    from roleforge.cli import main
    from roleforge.config.settings import load_settings
    from roleforge.evaluation.capability import capability_items
    from roleforge.evaluation.judging import JudgeCalibration
    from roleforge.models.base import load_model, load_tokenizer
    from roleforge.tasks.label import label_stored
    from roleforge.tasks.labelers.judge import LocalJudge

    assert main(["ingest", str(SAMPLE / "tool-agent.jsonl")]) == 0
    settings = load_settings()
    dataset, _ = label_stored("tool-agent", settings)
    candidate = candidate_of(random_adapter(tiny_model_dir, tmp_path / "adapter"), dataset, "tool-agent")
    role = settings.role("tool-agent")
    # The tool agent's own configuration measures no drift: asked for here, so that the drift path runs too.
    config = role.evaluation.model_copy(update={"generation_prompts": 3, "contract_prompts": 3, "max_new_tokens": 8, "max_task_prompts": 4,
                                                "capability_checks": True, "drift_prompts": 4})
    judge = LocalJudge(load_model(tiny_model_dir), load_tokenizer(tiny_model_dir), batch_size=4)
    trusted = JudgeCalibration(judge="local_judge", agreement=0.9, pairs=40, order_flips=0, min_agreement=0.75, passed=True)
    evaluation = evaluate_candidate(candidate, role.system_prompt, tiny_model_dir, None, None, 8, None, config, judge,
                                    contract=role.output, cache_dir=tmp_path / "reference-answers", judge_calibration=trusted)

    ab = evaluation.generation
    assert ab.judge == "local_judge" and ab.prompts == 3 and ab.wins + ab.losses + ab.ties + ab.no_verdict == 3
    assert 0.0 <= ab.win_rate_low <= ab.win_rate <= ab.win_rate_high <= 1.0
    assert evaluation.accuracy_gain_low <= evaluation.accuracy_gain <= evaluation.accuracy_gain_high
    assert evaluation.guardrails.length_ratio > 0 and evaluation.guardrails.capability_total == len(capability_items())
    assert set(evaluation.task_metrics) == {"candidate", "opponent"} and evaluation.task_metrics["candidate"]["n"] == 4
    metrics = evaluation_metrics(evaluation)
    assert {"eval_ab_win_rate", "eval_ab_win_rate_low", "eval_accuracy_gain_low", "eval_length_ratio",
            "eval_candidate_full_compliance_rate", "eval_opponent_thought_rate"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())

    # Every generated answer, both sides, for the evaluation/answers.json artifact; not in reports.
    sheet = evaluation.answers
    assert len(sheet["ab"]) == 3 and [e["verdict"] for e in sheet["ab"]].count("win") == ab.wins
    assert len(sheet["capability"]) == evaluation.guardrails.capability_total and len(sheet["tasks"]) == 4
    assert all(e["tool"] for e in sheet["tasks"])
    assert [e["question"] for e in sheet["capability"] if e["reference_correct"] and not e["candidate_correct"]] == \
        evaluation.guardrails.capability_lost
    assert [e["question"] for e in sheet["capability"] if e["candidate_correct"] and not e["reference_correct"]] == \
        evaluation.guardrails.capability_gained
    assert "answers" not in evaluation.model_dump() and "verdicts" not in ab.model_dump()
    # The contract on the held-out answers of both models, and the drift from the base on general prompts.
    assert set(evaluation.contract) == {"candidate", "opponent"} and evaluation.contract["candidate"].answers == 3
    assert all("candidate_misses" in e for e in sheet["ab"])
    assert evaluation.drift_kl is not None and evaluation.drift_kl >= 0.0 and "eval_drift_kl" in metrics
    # The reference's answers to the fixed sets are kept: a second evaluation reads them instead of generating.
    assert any((tmp_path / "reference-answers").iterdir())


def test_the_answer_sheet_sets_each_prompt_beside_both_answers_and_what_was_made_of_them():
    from roleforge.evaluation.ab import GenerationAB
    from roleforge.evaluation.capability import measure_guardrails
    from roleforge.tasks.evaluate import answer_sheet

    asked = {"ab": ["Cut costs?", "Hire now?"], "capability": ["What is the capital of France?", "What is 2 + 2?"],
             "tasks": ["What is 17 * 3?"]}
    answers = {"candidate": {"ab": ["Yes.", "No."], "capability": ["Paris.", "Five."], "tasks": ["Thought: math"]},
               "opponent": {"ab": ["Maybe.", "Later."], "tasks": ["51"]}, "reference": {"capability": ["paris", "4"]}}
    items = [{"question": "What is the capital of France?", "answers": ["Paris"]},
             {"question": "What is 2 + 2?", "answers": ["4", "four"]}]
    generation = GenerationAB(judge="j", prompts=2, wins=1, losses=0, ties=0, no_verdict=1, win_rate=1.0, win_rate_low=0.2,
                              win_rate_high=1.0, length_controlled_win_rate=1.0,
                              verdicts=["win", "no verdict: the judge answered neither"])
    sheet = answer_sheet(answers, asked, generation, items, [{"request": "What is 17 * 3?", "tool": "calculator"}])

    assert sheet["ab"] == [
        {"prompt": "Cut costs?", "candidate": "Yes.", "opponent": "Maybe.", "verdict": "win"},
        {"prompt": "Hire now?", "candidate": "No.", "opponent": "Later.", "verdict": "no verdict: the judge answered neither"}]
    assert [(e["question"], e["candidate_correct"], e["reference_correct"]) for e in sheet["capability"]] == [
        ("What is the capital of France?", True, True), ("What is 2 + 2?", False, True)]
    guardrails = measure_guardrails(answers["candidate"]["ab"], answers["opponent"]["ab"], items,
                                    answers["candidate"]["capability"], answers["reference"]["capability"])
    assert guardrails.capability_lost == [e["question"] for e in sheet["capability"] if e["reference_correct"] and not e["candidate_correct"]]
    assert sheet["tasks"] == [{"request": "What is 17 * 3?", "tool": "calculator", "candidate": "Thought: math", "opponent": "51"}]
    assert answer_sheet(answers, asked, None, items, [{"request": "x", "tool": "search"}])["ab"][0]["verdict"] is None


def test_the_ab_chart_is_a_png(tmp_path):
    from roleforge.tasks.evaluate import write_chart
    from tests.test_ab import FINE, ab, evaluation

    ev = evaluation(ab=ab(5, 2, 1), guardrails=FINE).model_copy(update={"task_metrics": {
        side: {"n": 4, "thought_rate": 0.5, "json_valid_rate": 0.25, "full_compliance_rate": 0.25} for side in ("candidate", "opponent")}})
    chart = write_chart(ev, tmp_path / "chart.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5_000


def candidate_of(adapter, dataset, role):
    return Candidate(role=role, adapter_path=str(adapter), mlflow_experiment_id="0", mlflow_run_id="r",
                     snapshot_hash=dataset.snapshot_hash, dataset_path=dataset.path, train_pairs=dataset.train_pairs,
                     steps=1, resumed_from_step=None, train_seconds=0.0, train_metrics={})


def test_a_later_evaluation_scores_only_the_new_candidate_on_pairs_it_has_seen(home, tiny_model_dir, tmp_path, monkeypatch):
    """Held-out log-probs are kept by the model's files: the reference's, and a candidate's, which the next night's
    champion (the registry's copy of it) finds. The scores read from the store are the ones computed."""
    import shutil

    from roleforge.cli import main
    from roleforge.config.settings import load_settings
    from roleforge.tasks.evaluate import NO_GENERATION
    from roleforge.tasks.label import label_stored
    from roleforge.training import fast_dpo
    from roleforge.training.reference_store import ReferenceStore

    assert main(["ingest", str(SAMPLE / "ceo.jsonl")]) == 0
    settings = load_settings()
    dataset, _ = label_stored("ceo", settings)
    system_prompt = settings.role("ceo").system_prompt
    last_night = random_adapter(tiny_model_dir, tmp_path / "last-night")
    tonight = candidate_of(random_adapter(tiny_model_dir, tmp_path / "tonight"), dataset, "ceo")
    scored: list[str] = []
    real = fast_dpo.reference_logps

    def counted(model, prefix, examples, *args, what="", **kwargs):
        scored.append(what)
        return real(model, prefix, examples, *args, what=what, **kwargs)

    monkeypatch.setattr(fast_dpo, "reference_logps", counted)
    store = ReferenceStore(tmp_path / "kept.db")
    evaluate_candidate(candidate_of(last_night, dataset, "ceo"), system_prompt, tiny_model_dir, None, None, 8, None,
                       NO_GENERATION, kept_logps=store)
    assert sorted(scored) == ["held-out log-probs (base)", "held-out log-probs (candidate)"]
    champion = shutil.copytree(last_night, tmp_path / "registry-cache" / "ceo" / "1")  # promoted, and downloaded
    kept = evaluate_candidate(tonight, system_prompt, tiny_model_dir, champion, "1", 8, None, NO_GENERATION, kept_logps=store)
    assert scored[2:] == ["held-out log-probs (candidate)"], "the base and the champion were kept"
    computed = evaluate_candidate(tonight, system_prompt, tiny_model_dir, champion, "1", 8, None, NO_GENERATION)
    assert (kept.candidate, kept.opponent_score) == (computed.candidate, computed.opponent_score), \
        "kept values are the ones computed"
