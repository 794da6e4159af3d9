"""The gate and the registry: every candidate is a version, only winners become champion, rollback restores."""

from pathlib import Path

import pytest

from roleforge.config.settings import GateConfig
from roleforge.evaluation.scoring import ModelScore
from roleforge.ops.errors import RoleforgeError
from roleforge.registry.tracking import CHAMPION, PREVIOUS, alias_version, experiment_id, mlflow_client
from roleforge.tasks.evaluate import Evaluation
from roleforge.tasks.promote import decide, gate, rollback
from roleforge.training.candidate import Candidate

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
    (adapter / "adapter_model.safetensors").write_bytes(b"")
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


def test_a_failure_after_the_alias_move_restores_the_aliases_and_a_retry_promotes(home):
    client = mlflow_client(f"sqlite:///{home / 'mlflow.db'}")
    home.mkdir(parents=True, exist_ok=True)
    first = decide(client, NAME, candidate(client, home), evaluation(0.7), GateConfig(), {})
    second = decide(client, NAME, candidate(client, home), evaluation(0.8), GateConfig(), {})
    winner = candidate(client, home)

    def fail(decision):
        assert alias_version(client, NAME, CHAMPION).version == int(decision.version)  # the move had happened
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        decide(client, NAME, winner, evaluation(0.9), GateConfig(), {}, after=fail)
    assert alias_version(client, NAME, CHAMPION).version == int(second.version)
    assert alias_version(client, NAME, PREVIOUS).version == int(first.version)
    (failed,) = [v for v in client.search_model_versions(f"name='{NAME}'") if v.run_id == winner.mlflow_run_id]
    assert failed.tags["roleforge.promoted"] == "false" and "roleforge.replaced_version" not in failed.tags

    retried = decide(client, NAME, winner, evaluation(0.9), GateConfig(), {})  # a task retry: the same version
    assert (retried.version, retried.promoted, retried.previous_version) == (str(failed.version), True, second.version)
    assert alias_version(client, NAME, CHAMPION).version == int(failed.version)


def test_a_champion_without_safetensors_weights_is_not_promoted(home):
    client = mlflow_client(f"sqlite:///{home / 'mlflow.db'}")
    home.mkdir(parents=True, exist_ok=True)
    first = decide(client, NAME, candidate(client, home), evaluation(0.7), GateConfig(), {})
    broken = candidate(client, home)
    run_dir = Path(client.get_run(broken.mlflow_run_id).info.artifact_uri.removeprefix("file://")) / "adapter"
    (run_dir / "adapter_model.safetensors").unlink()
    with pytest.raises(RoleforgeError, match="lacks adapter_model.safetensors"):
        decide(client, NAME, broken, evaluation(0.9), GateConfig(), {})
    assert alias_version(client, NAME, CHAMPION).version == int(first.version)
    assert alias_version(client, NAME, PREVIOUS) is None


def test_a_crash_between_registering_and_the_alias_move_leaves_the_champion_and_a_retry_promotes(home, monkeypatch):
    from roleforge.tasks import promote

    client = mlflow_client(f"sqlite:///{home / 'mlflow.db'}")
    home.mkdir(parents=True, exist_ok=True)
    first = decide(client, NAME, candidate(client, home), evaluation(0.7), GateConfig(), {})
    winner = candidate(client, home)
    real_move = promote.move_champion
    monkeypatch.setattr(promote, "move_champion", lambda *a: (_ for _ in ()).throw(ConnectionError("registry went away")))
    with pytest.raises(ConnectionError):
        decide(client, NAME, winner, evaluation(0.9), GateConfig(), {})
    assert alias_version(client, NAME, CHAMPION).version == int(first.version)
    assert Path(alias_version(client, NAME, CHAMPION).source.removeprefix("file://")).joinpath("adapter_model.safetensors").exists()
    monkeypatch.setattr(promote, "move_champion", real_move)
    retried = decide(client, NAME, winner, evaluation(0.9), GateConfig(), {})
    assert retried.promoted and retried.previous_version == first.version
    assert len(client.search_model_versions(f"name='{NAME}'")) == 2, "the retry registered the candidate again"


def test_status_reads_the_same_champions_as_the_mlflow_client(home, monkeypatch):
    """`roleforge status` reads the embedded registry without MLflow (seconds of imports): it must agree with the
    client, tags included, and follow a rollback."""
    from roleforge.ops import status

    uri = f"sqlite:///{home / 'mlflow.db'}"
    models = {"ceo": NAME, "cfo": "roleforge-cfo"}
    assert status.champions_of(uri, models) == {} and not (home / "mlflow.db").exists(), "no registry yet: none created"
    client = mlflow_client(uri)
    home.mkdir(parents=True, exist_ok=True)
    first = decide(client, NAME, candidate(client, home), evaluation(0.7), GateConfig(), {"prefect.flow_run_id": "f1"})
    second = decide(client, NAME, candidate(client, home), evaluation(0.8), GateConfig(), {})

    def through_client():
        monkeypatch.setattr(status, "_sqlite_champions", lambda *_: None)
        try:
            return status.champions_of(uri, models)
        finally:
            monkeypatch.undo()

    fast = status.champions_of(uri, models)
    assert fast == through_client() and set(fast) == {"ceo"}
    version, tags = fast["ceo"]
    assert version == second.version and tags["roleforge.metric.preference_accuracy"] == "0.8000"
    rollback(client, NAME)
    assert status.champions_of(uri, models)["ceo"][0] == first.version == through_client()["ceo"][0]


def test_lineage_links_a_flow_run_only_where_a_prefect_ui_serves_it(monkeypatch):
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from roleforge.registry.tracking import current_flow_run

    monkeypatch.setattr(flow_run, "get_id", lambda: "6f1c2d1e-0000-4000-8000-000000000001")
    monkeypatch.setattr(flow_run, "get_name", lambda: "nightly")
    with temporary_settings(updates={PREFECT_API_URL: None, PREFECT_UI_URL: None}):  # ephemeral mode
        assert current_flow_run() == {"prefect.flow_run_id": "6f1c2d1e-0000-4000-8000-000000000001",
                                      "prefect.flow_run_name": "nightly"}
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api", PREFECT_UI_URL: None}):
        assert current_flow_run()["prefect.flow_run_url"] == (
            "http://127.0.0.1:4200/flow-runs/flow-run/6f1c2d1e-0000-4000-8000-000000000001")
    with temporary_settings(updates={PREFECT_UI_URL: "https://prefect.example.com/"}):
        assert current_flow_run()["prefect.flow_run_url"].startswith("https://prefect.example.com/flow-runs/flow-run/")
