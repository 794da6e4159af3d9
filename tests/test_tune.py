"""`roleforge tune`: the search space makes valid recipes, trials are judged by the gate, and only a passing recipe is
saved, where the role's trainings and `roleforge status` find it; a second tune continues the same study."""

import inspect
import json

import optuna
import pytest

from roleforge.config.recipes import role_recipe
from roleforge.config.settings import load_settings
from roleforge.evaluation.contracts import Compliance
from roleforge.evaluation.scoring import ModelScore
from roleforge.flows.params import TuneRun
from roleforge.ops.errors import RoleforgeError
from roleforge.tasks.evaluate import Evaluation
from roleforge.tasks.tune import REFUSED_PENALTY, TrialResult, TuneResult, check_search_space, objective
from roleforge.training.search import SEARCH_SPACE, trial_overrides
from tests.conftest import SAMPLE
from tests.test_cli import last_json, roleforge


def test_every_draw_of_the_space_is_a_recipe_role_recipe_accepts():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_losses, seen_replay, seen_distill = set(), set(), set()
    for _ in range(80):
        overrides = trial_overrides(study.ask())
        # The tool agent's own profile mixes in SFT with two weights: a pure-sigmoid draw must not leave one behind.
        for profile, role in (("default", "tool-agent"), ("quick", "ceo")):
            recipe = role_recipe(profile, overrides, role)
            dpo, lora = recipe["dpo"], recipe["lora"]
            assert len(dpo["loss_weights"]) == len(dpo["loss_type"]) and dpo["loss_weights"][0] == 1.0
            assert lora["lora_alpha"] == 2 * lora["r"] and lora["r"] in SEARCH_SPACE["lora_r"].choices
            assert 5e-5 <= dpo["learning_rate"] <= 1e-3 and 0.05 <= dpo["beta"] <= 0.5 and dpo["num_train_epochs"] in (1, 2, 3)
        seen_losses.add(tuple(dpo["loss_type"]))
        seen_replay.add(recipe["data"]["replay_pairs"])
        seen_distill.add(recipe["data"]["replay_distill_top_k"])
        if len(dpo["loss_type"]) == 2:
            assert 0.25 <= dpo["loss_weights"][1] <= 1.5
    assert seen_losses == {("sigmoid",), ("sigmoid", "sft")} and seen_replay == {0, 48, 96, 192} and seen_distill == {0, 16}


def test_a_space_the_configuration_breaks_fails_before_any_training(tmp_path):
    assert check_search_space("quick", {}, "ceo", tmp_path) == []
    assert check_search_space("quick", {"dpo": {"beta": 0.3}, "data": {"replay_pairs": 0}}, "ceo", tmp_path) == [
        "data.replay_pairs", "dpo.beta"]
    # Two fixed loss weights cannot go with a trial that draws DPO's loss alone.
    with pytest.raises(RoleforgeError, match="loss_weights"):
        check_search_space("quick", {"dpo": {"loss_weights": [1.0, 1.0]}}, "ceo", tmp_path)


def evaluation(candidate: float, opponent: float, contract: tuple[float, float] | None = None,
               args_valid: tuple[float, float] | None = None) -> Evaluation:
    def kept(rate: float) -> Compliance:
        return Compliance(answers=10, compliant=round(rate * 10), rate=rate, low=0.0, high=1.0)

    return Evaluation(
        role="tool-agent", held_out_pairs=10, opponent="base", opponent_version=None,
        candidate=ModelScore(preference_accuracy=candidate, reward_accuracy=candidate, reward_margin=0.1),
        opponent_score=ModelScore(preference_accuracy=opponent, reward_accuracy=None, reward_margin=None),
        contract={} if contract is None else {"candidate": kept(contract[0]), "opponent": kept(contract[1])},
        task_metrics={} if args_valid is None else {"candidate": {"args_valid_rate": args_valid[0], "thought_rate": 1.0},
                                                     "opponent": {"args_valid_rate": args_valid[1], "thought_rate": 0.0}})


def test_objective_adds_contract_and_argument_gains_and_a_refused_trial_ranks_last():
    assert objective(evaluation(0.7, 0.5)) == pytest.approx(0.2)
    assert objective(evaluation(0.7, 0.5, contract=(0.9, 0.3))) == pytest.approx(0.8)
    assert objective(evaluation(0.7, 0.5, contract=(0.9, 0.3), args_valid=(0.25, 0.75))) == pytest.approx(0.3)
    worst_passing = TrialResult(trial=0, mlflow_run_id="a", objective=-3.0, passed=True, reason="")
    best_refused = TrialResult(trial=1, mlflow_run_id="b", objective=3.0, passed=False, reason="")
    assert best_refused.score == 3.0 - REFUSED_PENALTY < worst_passing.score


TUNE_CONFIG = """
[roles.ceo.training.dpo]
per_device_train_batch_size = 4
save_steps = 100
[roles.ceo.training.data]
max_train_pairs = 16
max_eval_pairs = 16
replay_pairs = 0
[roles.ceo.evaluation]
generation_prompts = 0
contract_prompts = 0
capability_checks = false
drift_prompts = 0
[roles.ceo.gate]
"""
NOTHING_PASSES = "min_accuracy_gain = 2.0\n"
TINY_MODEL_PASSES = "min_accuracy_gain = -1.0\nmin_gain_lower_bound = -2.0\nmin_reward_accuracy = 0.0\n"


def test_a_tune_saves_only_a_passing_recipe_and_a_second_tune_continues_the_study(home, prefect_harness, tmp_path, monkeypatch,
                                                                                   capsys):
    from roleforge.cli import build_parser
    from roleforge.flows.tune import tune_role
    from roleforge.registry.tracking import experiment_id, mlflow_client
    from roleforge.tasks.ingest import ingest_configured
    from roleforge.training import local

    config = tmp_path / "roleforge.toml"
    config.write_text(TUNE_CONFIG + NOTHING_PASSES)
    settings = load_settings()
    ingest_configured(settings, [str(SAMPLE / "ceo.jsonl")])
    trained = local.train_adapter

    def trial_zero_fails(*args, **kwargs):
        if inspect.signature(trained).bind(*args, **kwargs).arguments["run_tags"]["roleforge.tune.trial"] == "0":
            raise RuntimeError("out of memory, as it happens")
        return trained(*args, **kwargs)

    monkeypatch.setattr(local, "train_adapter", trial_zero_fails)
    refused = tune_role(TuneRun(role="ceo", trials=2, profile="quick"))
    assert (refused.study, refused.trials, refused.passed, refused.best_trial, refused.saved_to) == ("ceo-quick", 2, 0, None, None)
    assert [r.split(":")[0] for r in refused.reasons] == ["trial 0", "trial 1", "no trial of study ceo-quick passed the gate"]
    assert "failed: RuntimeError: out of memory" in refused.reasons[0] and "refused" in refused.reasons[1]
    assert "below +2.000" in refused.reasons[1] and not settings.tuned_recipe_path("ceo").exists()

    # As if a tune was killed while its trial 2 ran: the next tune fails it and runs its recipe again first.
    monkeypatch.setattr(local, "train_adapter", trained)
    study = optuna.load_study(study_name="ceo-quick", storage=f"sqlite:///{home / 'tune.db'}")
    killed = study.ask()
    trial_overrides(killed)
    config.write_text(TUNE_CONFIG + TINY_MODEL_PASSES)
    args = build_parser().parse_args(["tune", "--role", "ceo", "--trials", "2", "--profile", "quick", "--json"])
    assert args.handler(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"role", "trials", "passed", "best_trial", "best_objective", "best_overrides", "saved_to"} <= set(printed)
    tuned = TuneResult.model_validate(printed)
    assert (tuned.trials, tuned.passed) == (2, 2) and tuned.best_trial in (3, 4)
    trials = optuna.load_study(study_name="ceo-quick", storage=f"sqlite:///{home / 'tune.db'}").get_trials()
    states = [t.state.name for t in trials]
    assert states == ["FAIL", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert "out of memory" in trials[0].user_attrs["error"] and trials[1].value == trials[1].user_attrs["objective"] - REFUSED_PENALTY
    assert trials[3].params == killed.params and trials[3].user_attrs["repeats_trial"] == 2
    assert trials[4].params != trials[0].params, "a second tune's sampler does not repeat the first tune's draws"

    saved = json.loads(settings.tuned_recipe_path("ceo").read_text())
    assert saved["trial"] == tuned.best_trial and saved["overrides"] == tuned.best_overrides
    assert (saved["study"], saved["profile"], saved["objective"]) == ("ceo-quick", "quick", tuned.best_objective)
    # The role's trainings take the tuned recipe, under what its configuration fixes (replay_pairs = 0 here).
    training = load_settings().role_training("ceo")
    assert training["lora"] == tuned.best_overrides["lora"] and training["dpo"]["beta"] == tuned.best_overrides["dpo"]["beta"]
    assert training["data"] == {"max_train_pairs": 16, "max_eval_pairs": 16, "replay_pairs": 0,
                                "replay_distill_top_k": tuned.best_overrides["data"]["replay_distill_top_k"]}

    client = mlflow_client(settings.resolved_tracking_uri)
    runs = client.search_runs([experiment_id(client, home / "mlartifacts")], "tags.`roleforge.tune.study` = 'ceo-quick'")
    by_trial = {run.data.tags["roleforge.tune.trial"]: run for run in runs}
    assert sorted(by_trial) == ["1", "3", "4"], "one MLflow run per trial that trained"
    best = by_trial[str(tuned.best_trial)]
    assert best.info.run_id == saved["mlflow_run_id"] and best.data.tags["roleforge.tune.passed"] == "True"
    assert best.data.params["tune.dpo.learning_rate"] == best.data.params["dpo.learning_rate"] == str(saved["overrides"]["dpo"]["learning_rate"])
    assert best.data.metrics["tune_objective"] == pytest.approx(saved["objective"]) and "eval_accuracy_gain" in best.data.metrics
    assert "below +2.000" in by_trial["1"].data.tags["roleforge.tune.gate"]

    status = roleforge("status", "--json")
    assert status.returncode == 0, status.stderr
    assert last_json(status)["ceo"]["tuned_recipe"] == saved and "tuned_recipe" not in last_json(status)["cfo"]
    assert f"recipe: tuned (trial {saved['trial']}, objective {saved['objective']:.2f}" in status.stdout


def test_tune_of_an_unknown_role_is_a_one_line_error(home):
    result = roleforge("tune", "--role", "cmo", "--trials", "1")
    assert result.returncode == 2 and "unknown role 'cmo'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
