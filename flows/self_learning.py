"""The self-learning loop: ingest feedback, then each role through train-role; a failing role never stops the others."""

from __future__ import annotations

from prefect import flow

from roleforge.flows.params import RoleRun, SelfLearningRun
from roleforge.flows.train_role import train_role
from roleforge.tasks.ingest import ingest_feedback
from roleforge.tasks.report import RoleOutcome, publish_summary
from roleforge.tasks.settings import load_settings


@flow(name="self-learning")
def self_learning(run: SelfLearningRun = SelfLearningRun()) -> dict[str, RoleOutcome]:
    settings = load_settings()
    ingest_feedback(run.feedback or [str(settings.path("inbox"))])
    outcomes = {}
    for role in run.roles or list(settings.roles):
        state = train_role(RoleRun(role=role, profile=run.profile, force=run.force), return_state=True)
        outcomes[role] = state.result() if state.is_completed() else RoleOutcome.failed(role, state.message or state.name)
    publish_summary(outcomes)
    return outcomes


if __name__ == "__main__":
    from roleforge.sample import SAMPLE_FEEDBACK

    print(self_learning(SelfLearningRun(feedback=[str(SAMPLE_FEEDBACK)], profile="quick")))
