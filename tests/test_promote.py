"""The gate and the registry: every candidate is a version, only winners become champion, rollback restores."""

from pathlib import Path

import pytest

from roleforge.tasks.errors import RoleforgeError
from roleforge.tasks.evaluate import Evaluation, ModelScore
from roleforge.tasks.promote import CHAMPION, PREVIOUS, alias_version, decide, gate, rollback
from roleforge.tasks.settings import GateConfig
from roleforge.tasks.tracking import experiment_id, mlflow_client
from roleforge.tasks.train import Candidate

NAME = "roleforge-ceo"


def evaluation(candidate_accuracy: float, opponent_accuracy: float = 0.5, reward_accuracy: float = 0.8) -> Evaluation:
    return Evaluation(role="ceo", held_out_pairs=10, opponent="base", opponent_version=None,
                      candidate=ModelScore(preference_accuracy=candidate_accuracy, reward_accuracy=reward_accuracy, reward_margin=1.0),
                      opponent_score=ModelScore(preference_accuracy=opponent_accuracy, reward_accuracy=None, reward_margin=None))


def candidate(client, home: Path) -> Candidate:
    run = client.create_run(experiment_id(client, home / "mlartifacts"))
    adapter = home / "adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    (adapter / "adapter_config.json").write_text("{}")
    client.log_artifacts(run.info.run_id, str(adapter), artifact_path="adapter")
    return Candidate(role="ceo", adapter_path=str(adapter), mlflow_experiment_id=run.info.experiment_id, mlflow_run_id=run.info.run_id, snapshot_hash="abc",
                     dataset_path=str(home), train_pairs=10, steps=3, resumed_from_step=None, train_seconds=1.0, train_metrics={})


@pytest.mark.parametrize(("ev", "passes"), [(evaluation(0.7), True), (evaluation(0.51), False), (evaluation(0.9, reward_accuracy=0.4), False)])
def test_gate(ev, passes):
    assert gate(ev, GateConfig())[0] is passes


def test_winners_move_champion_losers_are_only_registered_and_rollback_restores(home):
    client = mlflow_client(f"sqlite:///{home / 'mlflow.db'}")
    home.mkdir(parents=True, exist_ok=True)
    first = decide(client, NAME, candidate(client, home), evaluation(0.7), GateConfig(), {"prefect.flow_run_id": "f1"})
    loser = decide(client, NAME, candidate(client, home), evaluation(0.4), GateConfig(), {})
    second = decide(client, NAME, candidate(client, home), evaluation(0.8), GateConfig(), {})
    assert (first.promoted, loser.promoted, second.promoted) == (True, False, True)
    assert alias_version(client, NAME, CHAMPION).version == int(second.version)
    assert alias_version(client, NAME, PREVIOUS).version == int(first.version)
    assert loser.champion_version == first.version and "below" in loser.reason
    version = client.get_model_version(NAME, first.version)
    assert version.tags["roleforge.dataset_hash"] == "abc" and version.tags["prefect.flow_run_id"] == "f1"
    assert Path(version.source.removeprefix("file://")).joinpath("adapter_config.json").exists()

    assert rollback(client, NAME) == (first.version, None)
    assert alias_version(client, NAME, CHAMPION).version == int(first.version)
    assert alias_version(client, NAME, PREVIOUS) is None
    with pytest.raises(RoleforgeError, match="no previous champion"):
        rollback(client, NAME)
