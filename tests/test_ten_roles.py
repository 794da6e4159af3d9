"""Ten roles in one night, fanned out on threads and on a Dask LocalCluster: every role trains, and the run says how
long each took."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from roleforge.config.settings import DEFAULT_ROLES
from roleforge.sample import TEN_ROLES
from roleforge.sample.generate import EXTRA_ROLES, ten_role_feedback

ROLES = [*DEFAULT_ROLES, *EXTRA_ROLES]
# A few steps on 16 pairs and an evaluation of held-out pairs and two contract prompts: what ten roles need to show
# that they all train side by side, at test speed.
CHEAP_NIGHT = "".join(f"""
[roles.{role}.training.dpo]
num_train_epochs = 1
per_device_train_batch_size = 4
learning_rate = 0.01
save_steps = 100
[roles.{role}.training.data]
max_train_pairs = 16
max_eval_pairs = 8
replay_pairs = 0
[roles.{role}.evaluation]
generation_prompts = 0
contract_prompts = 2
capability_checks = false
drift_prompts = 0
max_new_tokens = 8
max_task_prompts = 2
""" for role in ROLES)
FANOUT = {"threads": '\n[training]\nfanout = "threads"\n',
          "dask": '\n[training]\nfanout = "dask"\ndask_workers = 2\n'}


def test_the_ten_role_sample_leaves_the_bundled_files_as_they_are(tmp_path: Path):
    from roleforge.sample import SAMPLE_FEEDBACK

    files = ten_role_feedback(tmp_path, rows_per_role=5)
    assert sorted(path.stem for path in files) == sorted(ROLES)
    for role in DEFAULT_ROLES:  # the bundled roles' rows are the bundled files' first rows
        bundled = (SAMPLE_FEEDBACK / f"{role}.jsonl").read_text().splitlines()[:5]
        assert (tmp_path / f"{role}.jsonl").read_text().splitlines() == bundled
    cto, ceo = ((tmp_path / f"{role}.jsonl").read_text() for role in ("cto", "ceo"))
    assert '"agent_role": "cto"' in cto and "Decision:" in cto and cto.replace('"cto"', '"ceo"') != ceo


@pytest.mark.slow
@pytest.mark.parametrize("fanout", ["threads", "dask"])
def test_ten_roles_train_in_one_night(home, prefect_harness, tmp_path, fanout):
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from roleforge.flows.params import SelfLearningRun
    from roleforge.flows.self_learning import self_learning
    from roleforge.ops.status import read_training_status

    (tmp_path / "roleforge.toml").write_text(TEN_ROLES.read_text() + CHEAP_NIGHT + FANOUT[fanout])
    files = ten_role_feedback(tmp_path / "feedback", rows_per_role=28)
    # A flow run's heartbeat thread holds up its end by up to a second: twelve flow runs (a Dask worker's keep theirs).
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        outcomes = self_learning(SelfLearningRun(feedback=[str(path) for path in files], profile="quick"))
    assert sorted(outcomes) == sorted(ROLES)
    assert all(outcome.trained for outcome in outcomes.values()), {r: o.reason for r, o in outcomes.items() if not o.trained}
    assert all(outcome.seconds and outcome.seconds >= outcome.train_seconds for outcome in outcomes.values())
    assert {read_training_status(home, role)["state"] for role in ROLES} == {"ready"}
    workers = {read_training_status(home, role)["worker"] for role in ROLES}
    in_this_process = {worker for worker in workers if worker.endswith(f":{os.getpid()}")}
    assert bool(in_this_process) is (fanout == "threads"), workers
