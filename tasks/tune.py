"""Tune: search a role's training recipe with Optuna. Every trial trains an adapter on the role's snapshot, A/Bs it
against the base model on the held-out pairs and puts it to the role's promotion gate; the best recipe that passed
is saved where the role's next trainings read it (Settings.role_training)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from roleforge.config.settings import Settings, load_settings
from roleforge.ops.errors import Preempted
from roleforge.ops.retries import retry_transient
from roleforge.runtime import MODEL_MODULES, import_for_stages
from roleforge.storage.snapshots import PreferenceDataset
from roleforge.tasks.evaluate import Evaluation
from roleforge.training.preemption import shutdown_requested

# Each term of the objective is a difference of two rates, in [-1, 1], and there are at most three, so objectives
# span at most 6: a trial the gate refuses scores more than that below its own, under every trial that passed.
REFUSED_PENALTY = 7.0


class TrialResult(BaseModel):
    """One trial's verdict: the objective its adapter reached, and whether the promotion gate would take it."""

    trial: int
    mlflow_run_id: str
    objective: float
    passed: bool
    reason: str  # the gate's

    @property
    def score(self) -> float:
        """What the study maximizes: the objective, less REFUSED_PENALTY when the gate refused the adapter."""
        return self.objective if self.passed else self.objective - REFUSED_PENALTY


class TuneResult(BaseModel):
    """What a tune did: its trials, and the best passing recipe of the study, saved where the role's trainings read it."""

    role: str
    study: str
    trials: int  # run by this tune; the study keeps every earlier tune's too
    passed: int  # of this tune's trials, those the gate passed
    best_trial: int | None = None  # the best passing trial of the whole study
    best_objective: float | None = None
    best_overrides: dict[str, dict[str, Any]] | None = None
    saved_to: str | None = None  # None: no trial of the study passed the gate, nothing was saved
    reasons: list[str] = []  # per trial of this tune, the gate's reason or the error; why nothing was saved

    @classmethod
    def held_back(cls, dataset: PreferenceDataset, profile: str) -> TuneResult:
        return cls(role=dataset.role, study=study_name(dataset.role, profile), trials=0, passed=0,
                   reasons=[f"held back: {dataset.skip_reason}"])


def study_name(role: str, profile: str) -> str:
    return f"{role}-{profile}"


def objective(evaluation: Evaluation) -> float:
    """The held-out preference-accuracy gain over the opponent, plus the gain in output-contract compliance where
    the role has a contract, plus the gain in right tool-call arguments where the role has task metrics."""
    value = evaluation.accuracy_gain
    if evaluation.contract:
        value += evaluation.contract["candidate"].rate - evaluation.contract["opponent"].rate
    ours, theirs = evaluation.task_metrics.get("candidate", {}), evaluation.task_metrics.get("opponent", {})
    if "args_valid_rate" in ours and "args_valid_rate" in theirs:
        value += ours["args_valid_rate"] - theirs["args_valid_rate"]
    return value


def under_configuration(overrides: dict[str, dict[str, Any]], configured: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A trial's overrides under the role's configured training, as Settings.role_training will lay the saved recipe:
    what a trial measures is what the role's trainings will run."""
    from roleforge.config.settings import deep_merge

    return deep_merge(overrides, configured)


def run_trial(dataset: PreferenceDataset, profile: str, overrides: dict[str, dict[str, Any]], study: str,
              number: int) -> TrialResult:
    """Train one trial's adapter, A/B it against the base model (the role's evaluation config, output contract and
    confidence) and put it to the role's gate, all recorded in the trial's own MLflow run."""
    import_for_stages(MODEL_MODULES)
    from mlflow.entities import Metric, Param, RunTag

    from roleforge.config.recipes import role_recipe
    from roleforge.registry.tracking import current_flow_run, experiment_id, mlflow_client
    from roleforge.tasks.evaluate import (REFERENCE_ANSWERS, evaluate_candidate, evaluation_judge, evaluation_metrics,
                                          kept_log_probs)
    from roleforge.tasks.promote import gate
    from roleforge.training.backends import LocalTraining

    settings = load_settings()
    config = settings.role(dataset.role)
    recipe = role_recipe(profile, under_configuration(overrides, config.training), dataset.role)
    base_model = settings.base_model_dir()
    client = mlflow_client(settings.resolved_tracking_uri)
    tags = {"roleforge.stage": "tune", "roleforge.tune.study": study, "roleforge.tune.trial": str(number), **current_flow_run()}
    # The shared checkpoints folder: trials reuse the reference log-probs and replay answers of every training before.
    candidate = LocalTraining(settings).train(dataset, recipe, client, experiment_id(client, settings.path("mlartifacts")), tags)
    judge, calibration = evaluation_judge(settings, config.evaluation) if config.evaluation.generation_prompts else (None, None)
    evaluation = evaluate_candidate(candidate, config.system_prompt, base_model, None, None, recipe["data"]["max_eval_pairs"],
                                    config.base_adapter, config.evaluation, judge, config.gate.confidence, config.output,
                                    settings.path("checkpoints", REFERENCE_ANSWERS), calibration, kept_log_probs(settings))
    passed, reason = gate(evaluation, config.gate)
    result = TrialResult(trial=number, mlflow_run_id=candidate.mlflow_run_id, objective=objective(evaluation),
                         passed=passed, reason=reason)
    metrics = {**evaluation_metrics(evaluation), "tune_objective": result.objective, "tune_score": result.score}
    client.log_batch(
        candidate.mlflow_run_id, metrics=[Metric(k, float(v), int(time.time() * 1000), 0) for k, v in metrics.items()],
        params=[Param(f"tune.{section}.{key}", str(value)) for section, values in overrides.items() for key, value in values.items()],
        # A trial repeated after a killed tune continues its MLflow run: the tags say which trial it now is.
        tags=[RunTag(k, v) for k, v in {**tags, "roleforge.tune.passed": str(passed), "roleforge.tune.gate": reason[:5000],
                                        "mlflow.runName": f"{study}-trial-{number}"}.items()])
    return result


# A plain module-level function under the task, so that Dask pickles it by reference (flows/self_learning.py).
tune_trial = task(name="tune-trial", task_run_name="trial-{number}", retries=2, retry_delay_seconds=5,
                  retry_condition_fn=retry_transient, cache_policy=NO_CACHE)(run_trial)


def open_study(settings: Settings, role: str, profile: str, seed: int) -> Any:
    """The role's study in home (`tune.db`), created or resumed. The sampler's seed moves on by the trials already
    there, or a second tune would repeat the first one's random start. Trials a killed tune left running are failed
    and asked again first: the same recipe resumes its checkpoint and MLflow run."""
    import optuna
    from optuna.samplers import TPESampler
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are reported in the run's log, not by Optuna
    storage, name = f"sqlite:///{settings.home / 'tune.db'}", study_name(role, profile)
    settings.home.mkdir(parents=True, exist_ok=True)
    earlier = next((s.n_trials for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
                    if s.study_name == name), 0)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=TPESampler(seed=seed + earlier), load_if_exists=True)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)
        if stale.params:
            study.enqueue_trial(stale.params, user_attrs={"repeats_trial": stale.number})
    return study


def check_search_space(profile: str, configured: dict[str, dict[str, Any]], role: str, output_dir: Path) -> list[str]:
    """Both ends of the search space make valid TRL and PEFT configs for the role (else a one-line error before any
    compute); returns the searched fields the role's configuration fixes, which the search cannot move."""
    from roleforge.config.recipes import build_configs, role_recipe
    from roleforge.training.search import space_corners

    corners = space_corners()
    for overrides in corners:
        build_configs(role_recipe(profile, under_configuration(overrides, configured), role), str(output_dir))
    return sorted(f"{section}.{key}" for section, values in corners[0].items() for key in values
                  if key in configured.get(section, {}))


def tell(study: Any, trial: Any, future: Any) -> TrialResult | str:
    """Report a finished trial to the study: its score, or FAIL with the error kept (a preempted trial is queued to
    run again); returns the result, or the error."""
    from optuna.trial import TrialState

    try:
        result = future.result()
    except Exception as error:  # noqa: BLE001 - a failed trial is the study's news, not the tune's end
        message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        trial.set_user_attr("error", message)
        study.tell(trial, state=TrialState.FAIL)
        if isinstance(error, Preempted):
            study.enqueue_trial(trial.params, user_attrs={"repeats_trial": trial.number})
        return message
    for key, value in result.model_dump(exclude={"trial"}).items():
        trial.set_user_attr(key, value)
    study.tell(trial, result.score)
    return result


def verdict(outcome: TrialResult | str) -> str:
    """A trial's outcome in words: passed or refused, its objective and the gate's reason; or the error it failed with."""
    if isinstance(outcome, str):
        return f"failed: {outcome}"
    return f"{'passed' if outcome.passed else 'refused'}, objective {outcome.objective:+.3f}: {outcome.reason}"


def best_passing(study: Any) -> Any | None:
    """The study's best trial among those the gate passed (over every tune of the study), or None."""
    from optuna.trial import TrialState

    passing = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("passed")]
    return max(passing, key=lambda t: t.value, default=None)


def save_tuned_recipe(path: Path, trial: Any, study: str, profile: str) -> Path:
    """The trial's overrides with where they came from, replaced atomically (a reader sees the old file or the new)."""
    from roleforge.ops.files import write_atomic

    record = {"overrides": trial.user_attrs["overrides"], "objective": trial.user_attrs["objective"], "trial": trial.number,
              "study": study, "mlflow_run_id": trial.user_attrs["mlflow_run_id"],
              "tuned_at": datetime.now(UTC).isoformat(timespec="seconds"), "profile": profile}
    return write_atomic(path, json.dumps(record, indent=2) + "\n")


def search_recipe(dataset: PreferenceDataset, profile: str, trials: int, seed: int) -> TuneResult:
    """Run `trials` more trials of the role's study, max_parallel_roles at a time on the running flow's task runner,
    then save the study's best passing recipe. Call it inside a flow (flows/tune.py)."""
    from roleforge.registry.tracking import experiment_id, mlflow_client
    from roleforge.training.search import trial_overrides

    settings, logger = load_settings(), get_run_logger()
    role = dataset.role
    fixed = check_search_space(profile, settings.role(role).training, role, settings.path("checkpoints"))
    if fixed:
        logger.warning("role %s: its configured training fixes %s: the search cannot change them", role, ", ".join(fixed))
    study = open_study(settings, role, profile, seed)
    # The tracking store and its experiment exist before trials fan out to other processes.
    experiment_id(mlflow_client(settings.resolved_tracking_uri), settings.path("mlartifacts"))
    outcomes: dict[int, TrialResult | str] = {}
    while len(outcomes) < trials and not shutdown_requested():
        futures = []
        for trial in [study.ask() for _ in range(min(settings.training.max_parallel_roles, trials - len(outcomes)))]:
            overrides = trial_overrides(trial)
            trial.set_user_attr("overrides", overrides)
            futures.append((trial, tune_trial.submit(dataset, profile, overrides, study.study_name, trial.number)))
        for trial, future in futures:
            outcomes[trial.number] = tell(study, trial, future)
            logger.info("role %s, trial %d: %s", role, trial.number, verdict(outcomes[trial.number]))
    reasons = [f"trial {number}: {verdict(outcome)}" for number, outcome in outcomes.items()]
    best = best_passing(study)
    saved = None if best is None else save_tuned_recipe(settings.tuned_recipe_path(role), best, study.study_name, profile)
    if best is None:
        reasons.append(f"no trial of study {study.study_name} passed the gate: nothing saved")
    return TuneResult(role=role, study=study.study_name, trials=len(outcomes),
                      passed=sum(isinstance(o, TrialResult) and o.passed for o in outcomes.values()),
                      best_trial=None if best is None else best.number,
                      best_objective=None if best is None else best.user_attrs["objective"],
                      best_overrides=None if best is None else best.user_attrs["overrides"],
                      saved_to=None if saved is None else str(saved), reasons=reasons)
