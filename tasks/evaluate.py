"""Evaluate: A/B of a candidate adapter against the role's champion (or the base model) on held-out pairs."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from roleforge.config.settings import EvaluationConfig, load_settings
from roleforge.evaluation.ab import GenerationAB, paired_bootstrap
from roleforge.evaluation.capability import (Guardrails, capability_items, lost_and_gained, mcnemar_p_value,
                                             measure_guardrails, passes)
from roleforge.evaluation.contracts import Compliance, OutputContract, compliance
from roleforge.evaluation.drift import mean_token_kl
from roleforge.evaluation.judging import JudgeCalibration, judge_generation
from roleforge.evaluation.scoring import ModelScore, pair_correct, score
from roleforge.models.generation import answer_mixed
from roleforge.ops.progress import advance
from roleforge.ops.retries import retry_transient
from roleforge.ops.timing import STAGES
from roleforge.runtime import MODEL_MODULES, import_for_stages
from roleforge.storage.snapshots import load_split
from roleforge.training.candidate import Candidate
from roleforge.training.reference_store import KEPT_REFERENCES, ReferenceStore, reference_identity
from roleforge.training.replay import general_prompts, reference_answers

CANDIDATE, CHAMPION, REFERENCE = "candidate", "champion", "reference"


class Evaluation(BaseModel):
    """The A/B verdict inputs: the candidate's and its opponent's scores on the same held-out pairs."""

    role: str
    held_out_pairs: int
    opponent: str  # "champion"; without one, "sft" (the role's base adapter) or "base"
    opponent_version: str | None
    candidate: ModelScore
    opponent_score: ModelScore
    accuracy_gain_low: float | None = None  # paired-bootstrap interval of the gain over the held-out pairs
    accuracy_gain_high: float | None = None
    generation: GenerationAB | None = None
    judge_calibration: JudgeCalibration | None = None
    guardrails: Guardrails | None = None
    task_metrics: dict[str, dict[str, float]] = {}  # per model ("candidate", "opponent"), where the role has a checker
    contract: dict[str, Compliance] = {}  # per model ("candidate", "opponent"): the role's output contract followed
    contract_loss_p_value: float | None = None  # one-sided McNemar: the candidate follows the contract less often
    drift_kl: float | None = None  # mean KL from the reference's next-token distributions on general prompts (nats/token)
    # Every answer both models generated, side by side (answer_sheet): logged as evaluation/answers.json, to see why
    # a candidate won or was held back; not part of reports.
    answers: dict[str, list[dict[str, Any]]] = Field(default={}, exclude=True)

    @property
    def accuracy_gain(self) -> float:
        return self.candidate.preference_accuracy - self.opponent_score.preference_accuracy


NO_GENERATION = EvaluationConfig(generation_prompts=0, contract_prompts=0, capability_checks=False, drift_prompts=0)
NO_CONTRACT = OutputContract()
REFERENCE_ANSWERS = "reference-answers"  # under checkpoints/: the reference's answers to the fixed prompt sets
DRIFT_MAX_NEW_TOKENS = 96  # the reference's answers to the drift prompts: a plain answer's length
SCORING_MAX_LENGTH = 4096  # tokens of a held-out pair scored: the whole pair, as users wrote it


def evaluate_candidate(candidate: Candidate, system_prompt: str, base_model: Path, champion_adapter: Path | None,
                       champion_version: str | None, max_pairs: int, base_adapter: Path | None = None,
                       config: EvaluationConfig = NO_GENERATION, judge: Any = None, confidence: float = 0.95,
                       contract: OutputContract = NO_CONTRACT, cache_dir: Path | None = None,
                       judge_calibration: JudgeCalibration | None = None, kept_logps: ReferenceStore | None = None) -> Evaluation:
    """Score candidate and opponent (the champion adapter; else the reference: the role's SFT adapter or the base
    model) on the role's held-out pairs. Implicit rewards are log-ratios to that same reference. Then, as the
    configuration asks: both answer held-out prompts (the role's output contract, and the judge's A/B), the candidate
    and the reference answer the retained-capability questions, the candidate's logit drift from the reference is
    read on general prompts, and both answer the role's task prompts. The reference's answers to the fixed sets are
    kept in `cache_dir`: they never change. With `kept_logps`, every model's held-out log-probs are kept there by
    the model's files, so that a later night computes only the pairs and models new to it (the champion is usually
    a candidate of an earlier night)."""
    from roleforge.models.base import BASE_MODELS, attach_adapter, load_tokenizer
    from roleforge.models.generation import read_tool_use_prompts
    from roleforge.training.dpo_batches import tokenize_pairs
    from roleforge.training.fast_dpo import reference_logps

    pairs = sorted(load_split(candidate.dataset_path, "held_out"), key=lambda p: p["pair_id"])[:max_pairs]
    tokenizer = load_tokenizer(base_model)
    prefix, examples = tokenize_pairs(tokenizer, system_prompt, pairs, SCORING_MAX_LENGTH)
    opponent_adapter = CHAMPION if champion_adapter is not None else (REFERENCE if base_adapter is not None else None)
    reference_adapter = REFERENCE if base_adapter is not None else None
    held_out_prompts = list(dict.fromkeys(p["prompt"] for p in pairs))
    ab_count = max(config.generation_prompts, 0 if contract.empty else config.contract_prompts)
    items = capability_items() if config.capability_checks else []
    tasks = read_tool_use_prompts(config.tool_use_prompts)[:config.max_task_prompts] if config.tool_use_prompts else []
    asked = {"ab": held_out_prompts[:ab_count], "tasks": [t["request"] for t in tasks]}
    drift_kl = None
    questions = [item["question"] for item in items]
    general = general_prompts("drift")[:config.drift_prompts] if config.drift_prompts else []
    answers, general_answers = _answers(base_model, tokenizer, system_prompt, config, cache_dir, asked, questions, general,
                                        {CANDIDATE: candidate.adapter_path, CHAMPION: champion_adapter, REFERENCE: base_adapter},
                                        opponent_adapter, reference_adapter)
    with BASE_MODELS.lend(base_model) as base:
        model = attach_adapter(base, candidate.adapter_path, adapter_name=CANDIDATE)
        try:
            for name, path in ((CHAMPION, champion_adapter), (REFERENCE, base_adapter)):
                if path is not None:
                    attach_adapter(model, path, adapter_name=name)
            model.eval()

            dtype = str(next(model.parameters()).dtype)

            def logps(adapter: str | None, files: Path | str | None) -> tuple[list[tuple[float, int]], ...]:
                """(log-prob sum, tokens) of every pair's chosen and of its rejected answer, under `adapter` (None: the
                base model), whose files are `files` (None: the base model's alone). Kept: tonight's candidate may be
                tomorrow's champion, whose registry copy has the same contents."""
                def compute(subset: list[dict[str, Any]]) -> list[tuple[float, float]]:
                    if adapter is not None:
                        model.set_adapter(adapter)
                    with model.disable_adapter() if adapter is None else nullcontext():
                        return reference_logps(model, prefix, subset, tokenizer.pad_token_id,
                                               what=f"held-out log-probs ({adapter or 'base'})")

                identity = reference_identity(base_model, files and Path(files), dtype, model.device.type)
                sums = kept_logps.reference(identity, prefix, examples, compute) if kept_logps else compute(examples)
                return ([(chosen, len(e["chosen_ids"])) for e, (chosen, _) in zip(examples, sums)],
                        [(rejected, len(e["rejected_ids"])) for e, (_, rejected) in zip(examples, sums)])

            advance(message=f"scoring {len(pairs)} held-out pairs")
            reference = logps(reference_adapter, base_adapter)
            ours = logps(CANDIDATE, candidate.adapter_path)
            theirs = logps(CHAMPION, champion_adapter) if champion_adapter is not None else reference
            candidate_score = score(*ours, *reference)
            opponent_score = score(*theirs, *reference) if champion_adapter is not None else score(*reference, None, None)
            if general:
                drift_kl = mean_token_kl(model, tokenizer, system_prompt, general, [general_answers[p] for p in general],
                                         CANDIDATE, reference_adapter)
        finally:
            model.unload()
    asked["capability"] = [item["question"] for item in items]
    gain_low, gain_high = paired_bootstrap(pair_correct(*ours), pair_correct(*theirs), confidence)
    generation = guardrails = None
    ab_prompts = asked["ab"][:config.generation_prompts]
    if ab_prompts and judge is not None:
        advance(message=f"judging {len(ab_prompts)} answer pairs")
        generation = judge_generation(judge, judge_calibration, system_prompt, ab_prompts,
                                      answers["candidate"]["ab"][:len(ab_prompts)], answers["opponent"]["ab"][:len(ab_prompts)],
                                      config.judge_margin, confidence)
    if asked["ab"] or items:
        guardrails = measure_guardrails(answers["candidate"]["ab"], answers["opponent"]["ab"], items,
                                        answers["candidate"].get("capability", []),
                                        answers.get("reference", {}).get("capability", []))
    contract_scores = {} if contract.empty or not asked["ab"] else {
        side: compliance(contract, answers[side]["ab"], confidence) for side in ("candidate", "opponent")}
    contract_p = None
    if contract_scores:
        contract_p = mcnemar_p_value(*lost_and_gained([contract.complies(a) for a in answers["candidate"]["ab"]],
                                                      [contract.complies(a) for a in answers["opponent"]["ab"]]))
    task_metrics = {}
    if tasks:
        from roleforge.models.generation import tool_use_rates

        task_metrics = {side: tool_use_rates(answers[side]["tasks"], tasks) for side in ("candidate", "opponent")}
    return Evaluation(
        role=candidate.role, held_out_pairs=len(pairs),
        opponent=CHAMPION if champion_adapter is not None else ("sft" if base_adapter is not None else "base"),
        opponent_version=champion_version, candidate=candidate_score, opponent_score=opponent_score,
        accuracy_gain_low=gain_low, accuracy_gain_high=gain_high, generation=generation, guardrails=guardrails,
        task_metrics=task_metrics, contract=contract_scores, contract_loss_p_value=contract_p, drift_kl=drift_kl,
        judge_calibration=judge_calibration,
        answers=answer_sheet(answers, asked, generation, items, tasks, contract),
    )


def answer_sheet(answers: dict[str, dict[str, list[str]]], asked: dict[str, list[str]], generation: GenerationAB | None,
                 items: list[dict[str, Any]], tasks: list[dict[str, Any]],
                 contract: OutputContract = NO_CONTRACT) -> dict[str, list[dict[str, Any]]]:
    """The generated answers, one entry per prompt: the held-out prompts with both models' answers, the judge's
    verdict and what each answer misses of the output contract; the retained-capability questions with the
    candidate's and the reference's answers and whether each passes; the task requests with the tool each needs."""
    ours, theirs = answers["candidate"], answers["opponent"]
    verdicts = [*(generation.verdicts if generation is not None else []), *[None] * len(asked["ab"])]
    reference = answers.get("reference", {}).get("capability", [])
    return {
        "ab": [{"prompt": prompt, "candidate": mine, "opponent": other, "verdict": verdict}
               | ({} if contract.empty else {"candidate_misses": contract.violations(mine),
                                             "opponent_misses": contract.violations(other)})
               for prompt, mine, other, verdict in zip(asked["ab"], ours["ab"], theirs["ab"], verdicts)],
        "capability": [{"question": item["question"], "accepted": item.get("answers", []), "check": item.get("check"),
                        "candidate": mine, "reference": base,
                        "candidate_correct": passes(item, mine), "reference_correct": passes(item, base)}
                       for item, mine, base in zip(items, ours.get("capability", []), reference, strict=True)],
        "tasks": [{"request": task["request"], "tool": task["tool"], "candidate": mine, "opponent": other}
                  for task, mine, other in zip(tasks, ours["tasks"], theirs["tasks"], strict=True)],
    }


def evaluation_metrics(evaluation: Evaluation) -> dict[str, float]:
    """Every number of an evaluation, flat, as MLflow metrics."""
    metrics = {f"eval_{side}_{k}": v for side, scores in (("candidate", evaluation.candidate), ("opponent", evaluation.opponent_score))
               for k, v in scores.model_dump().items() if v is not None}
    metrics["eval_accuracy_gain"] = evaluation.accuracy_gain
    if evaluation.accuracy_gain_low is not None:
        metrics |= {"eval_accuracy_gain_low": evaluation.accuracy_gain_low, "eval_accuracy_gain_high": evaluation.accuracy_gain_high}
    if evaluation.generation is not None:
        metrics |= {f"eval_ab_{k}": float(v) for k, v in evaluation.generation.model_dump().items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if evaluation.guardrails is not None:
        g = evaluation.guardrails
        metrics |= {"eval_candidate_refusal_rate": g.candidate_refusal_rate, "eval_opponent_refusal_rate": g.opponent_refusal_rate,
                    "eval_length_ratio": g.length_ratio, "eval_capability_total": float(g.capability_total),
                    "eval_capability_lost": float(len(g.capability_lost))}
    for side, rates in evaluation.task_metrics.items():
        metrics |= {f"eval_{side}_{k}": float(v) for k, v in rates.items() if k != "n"}
    for side, kept in evaluation.contract.items():
        metrics |= {f"eval_{side}_contract_rate": kept.rate, f"eval_{side}_contract_low": kept.low,
                    f"eval_{side}_contract_high": kept.high}
    if evaluation.drift_kl is not None:
        metrics["eval_drift_kl"] = evaluation.drift_kl
    return metrics


def _answers(base_model: Path, tokenizer: Any, system_prompt: str, config: EvaluationConfig, cache_dir: Path | None,
             asked: dict[str, list[str]], questions: list[str], general: list[str], adapters: dict[str, Path | None],
             opponent_adapter: str | None, reference_adapter: str | None) -> tuple[dict[str, dict[str, list[str]]], dict[str, str]]:
    """Every answer the evaluation reads: candidate and opponent on the asked prompts and the candidate on the
    capability questions, all in the same batches (mixed adapters); the reference's capability and general answers,
    kept in `cache_dir`. Decoding a small model on a CPU is bound by reading the weights, so one batch of 32 costs
    little more per step than four of 8."""
    from roleforge.models.multilora import inference_adapters

    plan = [(side, group, adapter, question, config.max_new_tokens)
            for side, adapter in (("candidate", CANDIDATE), ("opponent", opponent_adapter))
            for group, group_questions in asked.items() for question in group_questions]
    plan += [("candidate", "capability", CANDIDATE, question, config.capability_max_new_tokens) for question in questions]
    answers: dict[str, dict[str, list[str]]] = {side: {group: [] for group in asked} for side in ("candidate", "opponent")}
    general_answers: dict[str, str] = {}
    with inference_adapters(base_model, adapters) as (model, lora):
        answered = answer_mixed(model, tokenizer, system_prompt, [(a, q, n) for _, _, a, q, n in plan], config.batch_size, lora)
        for (side, group, _, _, _), answer in zip(plan, answered):
            answers[side].setdefault(group, []).append(answer)
        identity = reference_identity(base_model, adapters[REFERENCE], str(next(model.parameters()).dtype), model.device.type)
        with lora.rows(reference_adapter):
            if questions:
                kept = reference_answers(model, tokenizer, system_prompt, questions, config.capability_max_new_tokens,
                                         cache_dir, identity)
                answers["reference"] = {"capability": [kept.get(q, "") for q in questions]}
            if general:
                general_answers = reference_answers(model, tokenizer, system_prompt, general, DRIFT_MAX_NEW_TOKENS,
                                                    cache_dir, identity)
    return answers, general_answers


def kept_log_probs(settings: Any) -> ReferenceStore:
    """The store the trainings keep reference log-probs in: evaluation keeps its fixed models' held-out ones there."""
    return ReferenceStore(settings.path("checkpoints") / KEPT_REFERENCES, settings.retention.reference_unused_days)


@task(name="evaluate-candidate", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@STAGES.timed("evaluate")
def evaluate_role(candidate: Candidate, profile: str) -> Evaluation:
    """A/B the candidate against the role's champion (or the base model) and log the scores to its MLflow run."""
    import_for_stages(MODEL_MODULES)
    from roleforge.config.recipes import role_recipe
    from roleforge.registry.tracking import champion_adapter, mlflow_client

    settings = load_settings()
    config = settings.role(candidate.role)
    client = mlflow_client(settings.resolved_tracking_uri)
    champion_path, champion_version = champion_adapter(
        client, settings.registered_model_name(candidate.role), settings.path("registry-cache"))
    judge, calibration = evaluation_judge(settings, config.evaluation) if config.evaluation.generation_prompts else (None, None)
    evaluation = evaluate_candidate(candidate, config.system_prompt, settings.resolved_base_model, champion_path,
                                    champion_version, role_recipe(profile, settings.role_training(candidate.role), candidate.role)["data"]["max_eval_pairs"],
                                    config.base_adapter, config.evaluation, judge, config.gate.confidence,
                                    config.output, settings.path("checkpoints", REFERENCE_ANSWERS), calibration,
                                    kept_log_probs(settings))
    for key, value in evaluation_metrics(evaluation).items():
        client.log_metric(candidate.mlflow_run_id, key, value)
    if any(evaluation.answers.values()):
        client.log_dict(candidate.mlflow_run_id, evaluation.answers, "evaluation/answers.json")
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        chart = write_chart(evaluation, Path(folder) / "ab-metrics.png")
        client.log_artifact(candidate.mlflow_run_id, str(chart), artifact_path="evaluation")
    return evaluation


def write_chart(evaluation: Evaluation, path: Path) -> Path:
    """A PNG bar chart of the A/B: each metric for the candidate beside its opponent, intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars: list[tuple[str, float, float | None, tuple[float, float] | None]] = [
        ("preference\naccuracy", evaluation.candidate.preference_accuracy, evaluation.opponent_score.preference_accuracy, None)]
    if evaluation.generation is not None:
        ab = evaluation.generation
        bars.append(("A/B win rate", ab.win_rate, 1 - ab.win_rate, (ab.win_rate - ab.win_rate_low, ab.win_rate_high - ab.win_rate)))
    if evaluation.guardrails is not None:
        g = evaluation.guardrails
        bars.append(("refusal rate", g.candidate_refusal_rate, g.opponent_refusal_rate, None))
    if evaluation.task_metrics:
        ours, theirs = evaluation.task_metrics["candidate"], evaluation.task_metrics["opponent"]
        bars.extend((key.removesuffix("_rate").replace("_", " "), ours[key], theirs[key], None)
                    for key in ("thought_rate", "json_valid_rate", "full_compliance_rate"))
    figure, axes = plt.subplots(figsize=(1.6 * len(bars) + 2, 3.6))
    positions = range(len(bars))
    axes.bar([p - 0.2 for p in positions], [b[1] for b in bars], 0.4, label="candidate")
    for position, (_, value, _, error) in zip(positions, bars):
        if error is not None:
            axes.errorbar(position - 0.2, value, yerr=[[error[0]], [error[1]]], color="black", capsize=4)
    axes.bar([p + 0.2 for p in positions], [b[2] or 0 for b in bars], 0.4, label=evaluation.opponent)
    axes.set_xticks(list(positions), [b[0] for b in bars])
    axes.set_ylim(0, 1.05)
    axes.set_title(f"{evaluation.role}: candidate vs {evaluation.opponent} ({evaluation.held_out_pairs} held-out pairs)")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def evaluation_judge(settings: Any, config: EvaluationConfig) -> tuple[Any, JudgeCalibration]:
    """The configured teacher judge (without one, a local judge on the base model) and its calibration, which decides
    whether its A/B counts (judge_generation). A local judge's calibration is kept on disk per model; a remote one's
    for the flow run."""
    from prefect.runtime import flow_run

    from roleforge.evaluation.judging import JUDGE_CALIBRATION, judge_calibration
    from roleforge.tasks.label import local_judge, teacher_judge

    base_model = settings.base_model_dir()
    judge = teacher_judge(settings.teacher, base_model) or local_judge(base_model, settings.teacher.batch_size)
    local_model = None if settings.teacher.kind == "http" else (
        settings.teacher.model if settings.teacher.kind == "local" and settings.teacher.model else base_model)
    calibration = judge_calibration(judge, config.judge_calibration_pairs or JUDGE_CALIBRATION, config.judge_margin,
                                    config.min_judge_agreement, settings.path("judge-calibration"), local_model, flow_run.id)
    return judge, calibration
