"""One role's recipe search: contract -> labels -> trials (train, A/B against the base model, gate) -> the best
passing recipe saved for the role's trainings. Trials fan out on the same task runner as roles."""

from __future__ import annotations

from prefect import flow

from roleforge.config.settings import load_settings
from roleforge.flows.params import TuneRun
from roleforge.flows.self_learning import task_runner
from roleforge.storage.snapshots import PreferenceDataset
from roleforge.tasks.label import label_role
from roleforge.tasks.tune import TuneResult, search_recipe
from roleforge.tasks.validate import check_contract
from roleforge.training.preemption import workers_stop_with_this_thread


@flow(name="tune-trials")
def tune_trials(dataset: PreferenceDataset, run: TuneRun) -> TuneResult:
    with workers_stop_with_this_thread():
        return search_recipe(dataset, run.profile, run.trials, run.seed)


@flow(name="tune-role", flow_run_name="tune-{run.role}-{run.profile}")
def tune_role(run: TuneRun) -> TuneResult:
    contract = check_contract(run.role)
    dataset = label_role(run.role, contract)
    if not dataset.ready:
        return TuneResult.held_back(dataset, run.profile)
    return tune_trials.with_options(task_runner=task_runner(load_settings().training))(dataset, run)


if __name__ == "__main__":
    print(tune_role(TuneRun(role="tool-agent", trials=4, profile="quick")).model_dump_json(indent=2))
