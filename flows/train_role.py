"""One role through the DAG: contract -> labels -> DPO adapter -> A/B against the champion -> promotion gate."""

from __future__ import annotations

from prefect import flow

from roleforge.flows.params import RoleRun
from roleforge.ops import progress
from roleforge.tasks.evaluate import evaluate_role
from roleforge.tasks.label import label_role
from roleforge.tasks.promote import promote_role
from roleforge.tasks.report import RoleOutcome
from roleforge.tasks.train import should_train, train_role_adapter
from roleforge.tasks.validate import check_contract


@flow(name="train-role", flow_run_name="train-{run.role}")
def train_role(run: RoleRun) -> RoleOutcome:
    from roleforge.config.settings import load_settings

    run = run.model_copy(update={"role": load_settings().role_name(run.role)})  # CEO, or an alias, is its role
    contract = check_contract(run.role)
    dataset = should_train(label_role(run.role, contract), run.force)
    if not dataset.ready:
        return RoleOutcome.held_back(dataset)
    candidate = train_role_adapter(dataset, run.profile)
    evaluation = evaluate_role(candidate, run.profile)
    decision = promote_role(candidate, evaluation, contract.success)
    return RoleOutcome.finished(dataset, candidate, evaluation, decision)


def run_role(run: RoleRun) -> RoleOutcome:
    """The train-role subflow for one role of a self-learning run, its failure turned into the role's outcome, with
    the seconds the role took."""
    import time

    from roleforge.config.settings import load_settings
    from roleforge.ops.errors import Preempted
    from roleforge.ops.status import write_training_status
    from roleforge.training.preemption import shutdown_requested

    if shutdown_requested():
        return RoleOutcome.failed(run.role, "not started: the process is shutting down (SIGTERM)")
    started = time.monotonic()
    # The outcome as the subflow returned it, in memory: a final state read back from the API (a state proposal
    # retried after the server's database was locked) carries no result, and would fail the whole night.
    try:
        outcome = train_role(run)
    except Exception as error:  # noqa: BLE001 - any failure of one role is that role's outcome, never the night's
        message = f"{type(error).__name__}: {error}"
        if not isinstance(error, Preempted):  # a preempted training stays pending: the next run resumes it
            write_training_status(load_settings().home, run.role, "failed", error=message)
        outcome = RoleOutcome.failed(run.role, message)
    outcome = outcome.model_copy(update={"seconds": round(time.monotonic() - started, 2)})
    progress.outcome(run.role, outcome.headline)
    return outcome


if __name__ == "__main__":
    print(train_role(RoleRun(role="tool-agent", profile="quick")).model_dump_json(indent=2))
