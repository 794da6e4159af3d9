"""The command-line contract: --json puts one JSON object on the last stdout line; user mistakes are one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE


def roleforge(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roleforge.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_ingest_json_and_reingest(home):
    first = roleforge("ingest", str(SAMPLE), "--json")
    assert first.returncode == 0, first.stderr
    report = last_json(first)
    assert report["ingested"] == 1991 and report["quarantined"] == 8 and Path(report["quarantine_path"]).exists()
    again = last_json(roleforge("ingest", str(SAMPLE), "--json"))
    assert (again["ingested"], again["duplicates"]) == (0, 1991)


def test_status_json_before_and_after_ingest(home):
    before = last_json(roleforge("status", "--json"))
    assert before["ceo"] == {"feedback": 0, "pairs": 0, "snapshot": None, "training": "pending", "training_metrics": {},
                             "adapter_path": None, "champion_version": None, "champion_metrics": {}, "last_decision": None}
    roleforge("ingest", str(SAMPLE / "ceo.jsonl"))
    assert last_json(roleforge("status", "--json"))["ceo"]["feedback"] == 330


def test_bad_configuration_is_a_one_line_error(home, tmp_path):
    result = roleforge("status", env={"ROLEFORGE_PROFILE": "fastest"})
    assert result.returncode == 2 and "bad configuration: profile" in result.stderr and len(result.stderr.splitlines()) == 1
    (tmp_path / "broken.toml").write_text("[training]\nfanout = \n")
    result = roleforge("status", env={"ROLEFORGE_CONFIG": str(tmp_path / "broken.toml")})
    assert result.returncode == 2 and "bad configuration file" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["ingest", "/no/such/file.jsonl"], "no such feedback file"),
    (["run", "--roles", "cmo"], "unknown role 'cmo'"),
    (["run", "--profile", "fast"], "invalid choice"),
    (["rollback", "--role", "ceo"], "no previous champion"),
    (["frobnicate"], "invalid choice"),
])
def test_user_mistakes_are_one_line_errors(home, args, message):
    result = roleforge(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", [["ingest", str(SAMPLE / "ceo.jsonl")], ["status"]])
def test_a_store_that_cannot_be_reached_is_a_one_line_error(home, tmp_path, command):
    # No server listens on this socket (and psycopg connects through none).
    url = f"postgresql+psycopg://roleforge@/roleforge?host={tmp_path}&port=1"
    result = roleforge(*command, env={"ROLEFORGE_STORE_URL": url})
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("roleforge: error: a database could not be used: ") and str(tmp_path) in result.stderr


def test_run_json_contract_on_the_tiny_model(home):
    result = roleforge("run", str(SAMPLE / "tool-agent.jsonl"), "--roles", "tool-agent", "--profile", "quick", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = last_json(result)["tool-agent"]
    assert outcome["trained"] and outcome["pairs"] > 100 and {"promoted", "reason", "preference_accuracy"} <= set(outcome)
    # The run reports its own orchestration overhead: wall time minus the stages' own work.
    timing = json.loads((home / "runs" / "last-run-timing.json").read_text())
    assert {"ingest", "validate", "label", "train", "evaluate", "promote"} <= set(timing["stages"])
    assert 0 < timing["stage_seconds"] < timing["wall_seconds"] and "orchestration overhead" in result.stdout


def test_bench_dpo_reports_both_paths(home, tmp_path):
    written = last_json(roleforge("bench", "pairs", "--out", str(tmp_path / "pairs.jsonl"), "--json"))
    assert written["train"] > 400 and written["held_out"] > 100
    result = roleforge("bench", "dpo", "--pairs", "8", "--held-out", "8", "--batch-size", "2", "--pairs-file",
                       str(tmp_path / "pairs.jsonl"), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = last_json(result)
    assert {"trl_pairs_per_s", "roleforge_pairs_per_s", "speedup", "trl_heldout_accuracy", "roleforge_heldout_accuracy",
            "trl_peak_rss_mb", "roleforge_peak_rss_mb", "mfu"} <= set(report)
    assert report["pairs"] == 8 and report["batch_size"] == 2 and report["trl_pairs_per_s"] > 0 and report["roleforge_pairs_per_s"] > 0
    assert 0 < report["mfu"] < 1 and 0 <= report["roleforge_heldout_accuracy"] <= 1
    # The peak is read in the dtype the path computes in (on a CPU without bf16 hardware, a bf16 peak is a scalar
    # fallback's, thousands of times too low); the report says which, and on what machine.
    from roleforge.models.base import matmul_dtype

    assert report["device"] != "cpu" or report["matmul_dtype"] == matmul_dtype()
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    # The machine's speed read before and after the runs, so a slow spell of a shared machine shows in the report.
    assert all(0 < report["machine"]["speed_probe_s"][when] < 60 for when in ("before", "after"))


def test_bench_dpo_bad_pairs_file_is_a_one_line_error(home, tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "split": "train"}\n{"prompt": "p"}\n')
    result = roleforge("bench", "dpo", "--pairs-file", str(bad))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert f"{bad}:2" in result.stderr and "split" in result.stderr


def test_random_model_of_a_named_shape_loads_with_the_tokenizer(tiny_model_dir, tmp_path, monkeypatch):
    from roleforge.bench import dpo
    from roleforge.models.base import load_model, load_tokenizer

    monkeypatch.setitem(dpo.MODEL_SHAPES, "wide", {"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 3})
    directory = dpo.random_model("wide", tiny_model_dir, tmp_path / "wide")
    model = load_model(directory)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (96, 3)
    assert load_tokenizer(directory).vocab_size == load_tokenizer(tiny_model_dir).vocab_size


def test_bench_generate_counts_new_tokens_both_ways(home):
    report = last_json(roleforge("bench", "generate", "--prompts", "4", "--max-new-tokens", "6", "--batch-size", "4", "--json"))
    assert report["prompts"] == 4 and 4 <= report["single_new_tokens"] <= 24 and 4 <= report["batched_new_tokens"] <= 24
    assert report["single_new_tokens_per_s"] > 0 and report["speedup"] > 0 and 0 <= report["same_answers"] <= 4


def test_bench_ingest_accounts_for_every_row_both_ways(home):
    report = last_json(roleforge("bench", "ingest", "--rows", "2000", "--repeats", "3", "--json"))
    assert (report["rows"], report["repeats"], report["all_rows_accounted"]) == (2000, 3, True)
    assert report["bad_rows"] == report["quarantined"] > 0 and report["ingested"] + report["duplicates"] == 2000 - report["bad_rows"]
    assert report["events_per_s"] > 0 and report["pandas_events_per_s"] > 0 and report["peak_rss_mb"] > 0
    ours, theirs = report["runs"]["roleforge"], report["runs"]["pandas"]
    assert len(ours) == len(theirs) == 3 and all(run["accounted"] == 2000 for run in ours)
    # The report's figures are the runs' medians; each run stored into a store of its own, so each stored every row.
    assert sorted(run["events_per_s"] for run in ours)[1] == pytest.approx(report["events_per_s"], rel=0.01)
    assert {run["ingested"] for run in ours} == {report["ingested"]}
    assert report["min_speedup_vs_pandas"] <= report["speedup_vs_pandas"]


def test_peak_memory_counts_child_processes(tmp_path):
    """bench ingest's peak counts the parse workers: a child holding 200 MB shows in it."""
    import time

    from roleforge.bench.common import PeakRss

    ready = tmp_path / "ready"
    script = f"import pathlib, time; block = bytearray(200 * 2**20); pathlib.Path({str(ready)!r}).touch(); time.sleep(3)"
    with PeakRss() as memory:
        child = subprocess.Popen([sys.executable, "-c", script])
        try:
            while not ready.exists():
                assert child.poll() is None
                time.sleep(0.01)
            time.sleep(1.2)  # past a reading of the child processes and several samples
        finally:
            child.kill()
            child.wait()
    assert memory.peak_mb >= 200


def test_bench_cli_times_help_and_status_in_fresh_processes(home):
    report = last_json(roleforge("bench", "cli", "--repeats", "1", "--json"))
    assert report["repeats"] == 1
    for name in ("help", "status"):
        assert 0 < report[f"{name}_seconds"] <= report[f"{name}_max_seconds"]
    assert (home / "bench" / "cli.json").exists()


@pytest.mark.parametrize("args", [["bench", "cli", "--repeats", "0"], ["bench", "dpo", "--batch-size", "0"],
                                  ["bench", "dpo", "--repeats", "0"]])
def test_bench_arguments_out_of_range_are_one_line_errors(home, args):
    result = roleforge(*args)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "at least 1" in result.stderr


def test_run_force_reaches_the_flow(home, monkeypatch):
    import roleforge.flows.self_learning as self_learning
    from roleforge.cli.parser import build_parser

    runs = []
    monkeypatch.setattr(self_learning, "self_learning", lambda run: runs.append(run) or {})
    args = build_parser().parse_args(["run", "--force", "--roles", "CEO", "--no-warm-up", "--json"])
    assert args.handler(args) == 0
    assert [(run.force, run.roles) for run in runs] == [(True, ["ceo"])]
    args = build_parser().parse_args(["run", "--no-warm-up"])
    assert args.handler(args) == 0 and runs[-1].force is False
