"""The self-learning loop: ingest feedback, then every role through train-role, fanned out by the configured task
runner (threads in this process, or a Dask cluster); a failing role never stops the others."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from roleforge.config.recipes import check_recipes
from roleforge.config.settings import TrainingSettings, load_settings
from roleforge.flows.params import RoleRun, SelfLearningRun
from roleforge.flows.train_role import run_role
from roleforge.ops.retention import nightly_gc
from roleforge.tasks.ingest import ingest_feedback
from roleforge.tasks.report import RoleOutcome, publish_summary
from roleforge.training.preemption import workers_stop_with_this_thread


# The task wraps a plain module-level function, so that Dask pickles it by reference (a decorated function is
# shadowed by its Task in the module and would have to be pickled by value, with everything it refers to).
role_pipeline = task(name="role-pipeline", task_run_name="pipeline-{run.role}", cache_policy=NO_CACHE)(run_role)
# The night's last step: the home pruned as [retention] says; it logs its problems and never fails the night.
prune_home = task(name="gc", cache_policy=NO_CACHE)(nightly_gc)


def task_runner(training: TrainingSettings) -> Any:
    """Threads in this process (as many roles at once as max_parallel_roles), or Dask: a scheduler at
    dask_address, else a LocalCluster of dask_workers processes."""
    if training.fanout == "dask":
        from prefect_dask import DaskTaskRunner

        if training.dask_address:
            return DaskTaskRunner(address=training.dask_address)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
            "n_workers": training.dask_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=training.max_parallel_roles)


@flow(name="train-roles")
def train_roles(runs: list[RoleRun]) -> dict[str, RoleOutcome]:
    with workers_stop_with_this_thread():
        futures = {run.role: role_pipeline.submit(run) for run in runs}
        return {role: future.result() for role, future in futures.items()}


@flow(name="self-learning")
def self_learning(run: SelfLearningRun = SelfLearningRun()) -> dict[str, RoleOutcome]:
    settings = load_settings()
    # Roles as a user types them in the UI's form (CEO, an alias) run under their configured names.
    roles = list(dict.fromkeys(settings.role_name(role) for role in run.roles)) if run.roles else list(settings.roles)
    check_recipes(settings, roles, run.profile)
    ingest_feedback(run.feedback or [str(settings.path("inbox"))])
    runs = [RoleRun(role=role, profile=run.profile, force=run.force) for role in roles]
    # The tracking store and its experiment exist before roles fan out to other processes.
    from roleforge.registry.tracking import experiment_id, mlflow_client

    experiment_id(mlflow_client(settings.resolved_tracking_uri), settings.path("mlartifacts"))
    outcomes = train_roles.with_options(task_runner=task_runner(settings.training))(runs)
    publish_summary(outcomes)
    prune_home()
    return outcomes


if __name__ == "__main__":
    from roleforge.sample import SAMPLE_FEEDBACK

    print(self_learning(SelfLearningRun(feedback=[str(SAMPLE_FEEDBACK)], profile="quick")))
