"""`roleforge bench night`: the sample night on a fresh home, its speed and its outcomes in one report."""

import json
import os
import subprocess
import sys


def test_bench_night_on_the_tiny_model_reports_speed_beside_outcomes(home, tiny_model_dir):
    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "bench", "night", "--roles", "tool-agent",
                             "--profile", "quick", "--nights", "2", "--json"], capture_output=True, text=True,
                            env=dict(os.environ), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"wall_s", "flow_wall_s", "stage_s", "overhead_s", "role_s", "peak_rss_mb", "promotions", "task_metrics",
            "outcomes", "machine"} <= set(report)
    assert report["profile"] == "quick" and report["roles"] == ["tool-agent"]
    assert report["wall_s"] > report["flow_wall_s"] > 0, "the whole command, its start-up included"
    assert {"ingest", "label", "train", "evaluate", "promote"} <= set(report["stage_s"])
    assert 0 < report["role_s"]["tool-agent"] < report["flow_wall_s"]
    assert 200 < report["peak_rss_mb"] < 64_000
    outcome = report["outcomes"]["tool-agent"]
    assert outcome["trained"] and report["promotions"]["tool-agent"] == outcome["promoted"]
    assert set(report["task_metrics"]["tool-agent"]) == {"candidate", "opponent"}
    # the gate's evidence beside the decision: contract compliance of both sides, the capability test, the drift
    assert set(outcome["contract"]) == {"candidate", "opponent"} and 0 <= outcome["contract"]["candidate"]["rate"] <= 1
    assert "capability_lost" in outcome["guardrails"] and "drift_kl" in outcome  # the test home asks no capability set
    assert all(0 < report["machine"]["speed_probe_s"][when] < 60 for when in ("before", "after"))
    # The second night, on the same home, ingested a day of new feedback and trained on it.
    (later,) = report["later_nights"]
    assert later["night"] == 2 and later["feedback_rows"] == 60 and later["roles"] == ["tool-agent"]
    assert {"ingest", "label", "train", "evaluate", "promote"} <= set(later["stage_s"]) and later["wall_s"] > 0
    assert later["outcomes"]["tool-agent"]["trained"]
    assert later["outcomes"]["tool-agent"]["pairs"] > outcome["pairs"], "the new day's pairs beside the first night's"
    # The nights ran on a home of their own, gone after, on the configured base model's directory.
    assert report["base_model"] == str(tiny_model_dir)
    assert not (home / "store.db").exists() and not (home / "mlflow.db").exists()
    assert [path.name for path in (home / "bench").iterdir()] == ["night.json"]
    # Its progress, as plain lines (its stdout is no terminal), passed through to stderr.
    assert "tool-agent train: started" in result.stderr and "tool-agent: " in result.stderr


def test_an_interrupted_bench_stops_a_night_that_ignores_sigterm():
    """A role evaluating in a worker thread runs on after SIGTERM unwinds the night's main thread: it is killed."""
    from roleforge.bench.night import stop_night

    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, "
                                 "lambda *_: None); print('ready', flush=True); time.sleep(120)"],
                                stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    stop_night(stubborn, grace_s=0.5)
    assert stubborn.returncode == -9


def test_a_later_days_sample_feedback_is_new_and_made_only_for_roles_the_generator_knows():
    from roleforge.sample import SAMPLE_FEEDBACK
    from roleforge.sample.generate import day_rows

    bundled = {json.loads(line)["prompt"] for line in (SAMPLE_FEEDBACK / "ceo.jsonl").read_text().splitlines()}
    day_two, day_three = day_rows("ceo", 2), day_rows("ceo", 3)
    assert day_two == day_rows("ceo", 2), "the same day's feedback each time"
    assert len({row["prompt"] for row in day_two} - bundled) > len(day_two) // 2
    assert day_two != day_three and all(row["agent_role"] == "ceo" for row in day_two)
    assert day_rows("cto", 2) and day_rows("tool-agent", 2)[0]["agent_role"] == "tool-agent"
    assert day_rows("head-of-legal-ops", 2) == []
