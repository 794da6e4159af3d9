"""The self-learning flow end to end on the tiny model, under a Prefect test harness."""

import json
from pathlib import Path

from roleforge.config.settings import load_settings
from roleforge.flows.params import SelfLearningRun
from roleforge.flows.self_learning import self_learning
from roleforge.ops import audit
from roleforge.ops.status import role_status
from roleforge.registry.tracking import CHAMPION, alias_version, mlflow_client
from roleforge.storage.schema import engine_for, feedback
from tests.conftest import SAMPLE
from tests.support.gates import open_gate

GATES = open_gate("ceo") + """
[roles.cfo.gate]
min_accuracy_gain = 2.0
[roles."tool-agent"]
min_pairs = 100000
"""


def test_roles_train_promote_or_are_held_back_with_a_reason(home, prefect_harness, tmp_path, monkeypatch):
    (tmp_path / "roleforge.toml").write_text((tmp_path / "roleforge.toml").read_text() + GATES)
    events = []
    monkeypatch.setattr("prefect.events.emit_event", lambda event, resource, payload: events.append((event, resource, payload)))
    settings = load_settings()
    outcomes = self_learning(SelfLearningRun(feedback=[str(SAMPLE / "ceo.jsonl"), str(SAMPLE / "cfo.jsonl"),
                                                       str(SAMPLE / "tool-agent.jsonl")], profile="quick"))
    assert set(outcomes) == {"ceo", "cfo", "coo", "tool-agent"}
    ceo, cfo, coo, tool = (outcomes[r] for r in ("ceo", "cfo", "coo", "tool-agent"))
    assert ceo.trained and ceo.promoted and ceo.champion_version == ceo.version and ceo.opponent == "base"
    assert cfo.trained and not cfo.promoted and cfo.champion_version is None and "below" in cfo.reason
    assert not coo.trained and "contract failed" in coo.reason  # no coo feedback at all: an empty batch fails
    assert not tool.trained and "too few pairs" in tool.reason and tool.pairs > 100
    assert ceo.by_source["human_ab"] > 0 and ceo.by_source["rating"] > 0
    assert ceo.skipped["chosen answer rated below 4"] > 0  # the sample's middling answers rated above bad ones

    assert [(e, r["prefect.resource.id"]) for e, r, _ in events] == [
        ("roleforge.adapter.promoted", "roleforge.role.ceo"), ("roleforge.contract.failed", "roleforge.role.coo")]
    assert events[0][2]["version"] == ceo.version
    entries, (collected,) = [e for e in audit.read(settings.home) if e["action"] != "gc"], audit.read(settings.home)[3:]
    assert [e["action"] for e in entries] == ["ingest", "promote", "hold"] or [e["action"] for e in entries] == ["ingest", "hold", "promote"]
    # The night ends with gc: the finished trainings' checkpoints go, the versions' snapshots stay.
    assert collected["action"] == "gc" and collected["removed"]["trainings"] == 2 and not list((settings.home / "checkpoints").glob("*/*/checkpoint-*"))
    assert entries[0]["ingested"] > 0 and entries[0]["actor"] and audit.verify(settings.home) is None
    assert {(e["role"], e["version"]) for e in entries[1:]} == {("ceo", ceo.version), ("cfo", cfo.version)}

    client = mlflow_client(settings.resolved_tracking_uri)
    assert alias_version(client, "roleforge-ceo", CHAMPION).version == int(ceo.version)
    assert alias_version(client, "roleforge-cfo", CHAMPION) is None
    # Role isolation: ceo's version was trained and evaluated on ceo's snapshot, into ceo's own adapter folder.
    assert client.get_model_version("roleforge-ceo", ceo.version).tags["roleforge.dataset_hash"] == ceo.snapshot_hash
    run = client.get_run(ceo.mlflow_run_id)
    assert run.data.tags["prefect.flow_run_id"] and "eval_candidate_preference_accuracy" in run.data.metrics
    # What both models answered, beside the metrics: where to look when a candidate is held back.
    sheet = json.loads((Path(run.info.artifact_uri.removeprefix("file://")) / "evaluation" / "answers.json").read_text())
    assert len(sheet["capability"]) == int(run.data.metrics["eval_capability_total"]) and sheet["ab"]
    # The tiny model's judge fails its calibration: no verdicts, and what each answer misses of the contract.
    assert sheet["ab"][0]["verdict"] is None and "candidate_misses" in sheet["ab"][0]

    status = role_status(settings)
    assert status["ceo"]["training"] == "ready" and status["ceo"]["adapter_path"] and "train_loss" in status["ceo"]["training_metrics"]
    assert status["tool-agent"]["training"] == "pending", "a role held back never started training"
    assert "/ceo/" in status["ceo"]["adapter_path"] and "/cfo/" in status["cfo"]["adapter_path"]
    assert (status["ceo"]["last_decision"]["action"], status["ceo"]["last_decision"]["version"]) == ("promote", ceo.version)
    assert status["cfo"]["last_decision"]["action"] == "hold" and status["cfo"]["last_decision"]["reason"] == cfo.reason
    assert status["coo"]["last_decision"] is None and status["tool-agent"]["last_decision"] is None

    # The role as a user types it in the UI's form runs under its configured name.
    nothing_new = self_learning(SelfLearningRun(roles=["CEO"], profile="quick"))
    assert not nothing_new["ceo"].trained and nothing_new["ceo"].new_pairs == 0 and "new training pairs" in nothing_new["ceo"].reason
    forced = self_learning(SelfLearningRun(roles=["ceo"], profile="quick", force=True))
    assert forced["ceo"].opponent == "champion" and forced["ceo"].snapshot_hash == ceo.snapshot_hash


def test_a_contract_failure_holds_only_that_role_back(home, prefect_harness):
    settings = load_settings()
    with engine_for(settings.resolved_store_url).begin() as connection:
        connection.execute(feedback.insert(), [{
            "content_hash": "x", "content_key": 1, "agent_role": "coo", "kind": "rating", "prompt": "p", "response": "r", "rating": 9,
            "source": "manual", "source_line": 1}])
    outcomes = self_learning(SelfLearningRun(roles=["coo"], profile="quick"))
    assert not outcomes["coo"].trained and "expect_column_values_to_be_between(rating)" in outcomes["coo"].reason


def test_stage_clock_counts_overlapping_work_once():
    from roleforge.ops.timing import StageClock

    clock = StageClock()
    clock.intervals = [("train", 1.0, 4.0), ("train", 2.0, 5.0), ("evaluate", 6.0, 7.0), ("ingest", -3.0, 0.5)]
    report = clock.report(0.0, 10.0)
    assert report["stage_seconds"] == 5.5 and report["overhead_seconds"] == 4.5
    assert report["stages"] == {"evaluate": 1.0, "ingest": 0.5, "train": 6.0}
