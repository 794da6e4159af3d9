"""Evaluate: A/B of a candidate adapter against the role's champion (or the base model) on held-out pairs."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from roleforge.tasks.errors import retry_transient
from roleforge.tasks.label import load_split
from roleforge.tasks.scoring import ModelScore, completion_logps, score
from roleforge.tasks.settings import load_settings
from roleforge.tasks.train import Candidate
from roleforge.tasks.timing import STAGES

CANDIDATE, CHAMPION, REFERENCE = "candidate", "champion", "reference"


class Evaluation(BaseModel):
    """The A/B verdict inputs: the candidate's and its opponent's scores on the same held-out pairs."""

    role: str
    held_out_pairs: int
    opponent: str  # "champion"; without one, "sft" (the role's base adapter) or "base"
    opponent_version: str | None
    candidate: ModelScore
    opponent_score: ModelScore

    @property
    def accuracy_gain(self) -> float:
        return self.candidate.preference_accuracy - self.opponent_score.preference_accuracy


def evaluate_candidate(candidate: Candidate, system_prompt: str, base_model: Path, champion_adapter: Path | None,
                       champion_version: str | None, max_pairs: int, base_adapter: Path | None = None) -> Evaluation:
    """Score candidate and opponent (the champion adapter; else the reference: the role's SFT adapter or the base
    model) on the role's held-out pairs. Implicit rewards are log-ratios to that same reference."""
    from roleforge.tasks.models import BASE_MODELS, attach_adapter, chat_prompts, load_tokenizer

    pairs = sorted(load_split(candidate.dataset_path, "held_out"), key=lambda p: p["pair_id"])[:max_pairs]
    tokenizer = load_tokenizer(base_model)
    prompts = chat_prompts(tokenizer, system_prompt, [p["prompt"] for p in pairs])
    chosen = [p["chosen"] + tokenizer.eos_token for p in pairs]
    rejected = [p["rejected"] + tokenizer.eos_token for p in pairs]
    with BASE_MODELS.lend(base_model) as base:
        model = attach_adapter(base, candidate.adapter_path, adapter_name=CANDIDATE)
        try:
            for name, path in ((CHAMPION, champion_adapter), (REFERENCE, base_adapter)):
                if path is not None:
                    attach_adapter(model, path, adapter_name=name)
            model.eval()

            def logps(adapter: str | None) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
                if adapter is not None:
                    model.set_adapter(adapter)
                with model.disable_adapter() if adapter is None else nullcontext():
                    return completion_logps(model, tokenizer, prompts, chosen), completion_logps(model, tokenizer, prompts, rejected)

            reference = logps(REFERENCE if base_adapter is not None else None)
            candidate_score = score(*logps(CANDIDATE), *reference)
            opponent_score = score(*logps(CHAMPION), *reference) if champion_adapter is not None else score(*reference, None, None)
        finally:
            model.unload()
    opponent = CHAMPION if champion_adapter is not None else ("sft" if base_adapter is not None else "base")
    return Evaluation(
        role=candidate.role, held_out_pairs=len(pairs), opponent=opponent,
        opponent_version=champion_version, candidate=candidate_score, opponent_score=opponent_score,
    )


@task(name="evaluate-candidate", retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
@STAGES.timed("evaluate")
def evaluate_role(candidate: Candidate, profile: str) -> Evaluation:
    """A/B the candidate against the role's champion (or the base model) and log the scores to its MLflow run."""
    from roleforge.tasks.promote import champion_adapter
    from roleforge.tasks.recipes import role_recipe
    from roleforge.tasks.tracking import mlflow_client

    settings = load_settings()
    config = settings.role(candidate.role)
    client = mlflow_client(settings.resolved_tracking_uri)
    champion_path, champion_version = champion_adapter(
        client, settings.registered_model_name(candidate.role), settings.path("registry-cache"))
    evaluation = evaluate_candidate(candidate, config.system_prompt, settings.resolved_base_model, champion_path,
                                    champion_version, role_recipe(profile, config.training, candidate.role)["data"]["max_eval_pairs"],
                                    config.base_adapter)
    metrics = {f"eval_{side}_{k}": v for side, scores in (("candidate", evaluation.candidate), ("opponent", evaluation.opponent_score))
               for k, v in scores.model_dump().items() if v is not None}
    for key, value in {**metrics, "eval_accuracy_gain": evaluation.accuracy_gain}.items():
        client.log_metric(candidate.mlflow_run_id, key, value)
    return evaluation
