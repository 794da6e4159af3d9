"""The operator's three ways in: a real Prefect server, `roleforge serve`, and a run started like the UI's Run button."""

import subprocess
import sys

import pytest

from roleforge.config.settings import load_settings
from roleforge.deployments.serve import build_deployments, deployment_specs
from roleforge.registry.tracking import mlflow_client
from tests.conftest import SAMPLE


def test_prefect_yaml_deployments_load_with_their_schedules():
    specs = {spec["name"]: spec for spec in deployment_specs()}
    assert set(specs) == {"nightly", "hourly", "on-demand", "rollback", "tune-role"}
    deployments = {d.name: d for d in build_deployments()}
    assert [s.schedule.cron for s in deployments["nightly"].schedules] == ["0 2 * * *"]
    assert deployments["on-demand"].parameters["run"]["role"] == "tool-agent"
    assert not deployments["rollback"].schedules
    assert deployments["tune-role"].parameters["run"]["trials"] == 8 and not deployments["tune-role"].schedules


@pytest.mark.slow
def test_served_deployment_runs_when_triggered_through_the_api(home, tmp_path):
    from tests.support.local_server import (
        deployment, prefect_server, press_run, roleforge_serve, scheduled_runs, wait_for_run, wait_until)

    subprocess.run([sys.executable, "-m", "roleforge.cli", "ingest", str(SAMPLE / "ceo.jsonl")], check=True, capture_output=True)
    with prefect_server(tmp_path / "prefect", tmp_path / "server.log", scheduler_loop_seconds=5) as api_url, \
            roleforge_serve(api_url, tmp_path / "serve.log"):
        nightly = deployment(api_url, "self-learning/nightly")
        assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
        upcoming = wait_until(lambda: scheduled_runs(api_url, nightly["id"]), 120, "the scheduler to plan nightly runs")
        assert all(run["expected_start_time"].endswith(("T02:00:00Z", "T02:00:00+00:00")) for run in upcoming)
        on_demand = deployment(api_url, "train-role/on-demand")
        assert on_demand["parameter_openapi_schema"]["definitions"]["RoleRun"]["properties"]["role"]["description"]
        flow_run = press_run(api_url, on_demand["id"], {"run": {"role": "ceo", "profile": "quick", "force": True}})
        finished = wait_for_run(api_url, flow_run["id"], timeout_s=600)
    assert finished["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
    registry = mlflow_client(load_settings().resolved_tracking_uri)
    assert registry.search_model_versions("name='roleforge-ceo'"), "the triggered run registered a candidate"
