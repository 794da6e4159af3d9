"""SIGTERM to a running `roleforge run` (a spot eviction notice, `kill`, a scheduler stopping the night): the role in
training writes a checkpoint at the end of its current step and stops, evaluation stops at its next batch without
promoting, and the process exits with 143, leaving no process of its session behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from tests.reliability.test_kill_training import SLOW_TRAINING as KILL_TRAINING

# Work long enough to land a signal in on any machine, the run stopped well before its end: 960 training steps with
# no checkpoint before the signal asks for one; answers generated one at a time, up to 400 tokens each.
ONE_EPOCH = KILL_TRAINING.replace("save_steps = 2", "save_steps = 1000")
SLOW_TRAINING, STEPS = ONE_EPOCH.replace("num_train_epochs = 1", "num_train_epochs = 20"), 20 * 48
SLOW_EVALUATION = ONE_EPOCH + """[roles."tool-agent".evaluation]
batch_size = 1
max_new_tokens = 400
"""
COMMAND = [sys.executable, "-m", "roleforge.cli", "run", str(SAMPLE / "tool-agent.jsonl"), "--roles", "tool-agent",
           "--profile", "quick", "--json"]


def complete_checkpoints(home: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (home / "checkpoints").glob("tool-agent/*/checkpoint-*")
                  if (p / "trainer_state.json").exists())


def start_and_terminate_at(line: str, tmp_path: Path) -> tuple[subprocess.Popen, Path, float]:
    """`roleforge run` in its own session, sent SIGTERM (to its own process, as a scheduler sends it) once its log
    shows `line`; returns the process, its log and when the signal went."""
    log_path = tmp_path / "run.log"
    process = subprocess.Popen(COMMAND, stdout=subprocess.PIPE, stderr=log_path.open("w"), text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    while line not in log_path.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before {line!r}:\n" + log_path.read_text()[-3000:]
    process.send_signal(signal.SIGTERM)
    return process, log_path, time.monotonic()


def stopped_cleanly(process: subprocess.Popen, log_path: Path, signalled: float) -> str:
    """The run's exit after the signal: prompt, with 143, its session empty; returns the role's outcome line."""
    try:
        process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("SIGTERM did not stop the run within 120 s:\n" + log_path.read_text()[-3000:])
    log = log_path.read_text()
    assert process.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert time.monotonic() - signalled < 120
    time.sleep(1)
    with pytest.raises(ProcessLookupError):  # the local Prefect server it started went with it
        os.killpg(process.pid, 0)
    outcomes = [line for line in log.splitlines() if line[9:].startswith("tool-agent: ")]
    assert len(outcomes) == 1, log[-3000:]
    return outcomes[0]


@pytest.mark.slow
def test_sigterm_mid_training_checkpoints_that_step_and_a_rerun_resumes_from_it(home, tmp_path):
    (tmp_path / "roleforge.toml").write_text(SLOW_TRAINING)
    process, log_path, signalled = start_and_terminate_at("tool-agent train: loss", tmp_path)  # 10 s in
    outcome = stopped_cleanly(process, log_path, signalled)
    assert "failed: Preempted: stopped by SIGTERM after a checkpoint at step" in outcome
    checkpoints = complete_checkpoints(home)
    assert checkpoints and checkpoints[-1] < STEPS, log_path.read_text()[-3000:]  # written on the signal
    assert json.loads((home / "status" / "tool-agent.json").read_text())["state"] == "pending"

    rerun = subprocess.run(COMMAND, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = json.loads(rerun.stdout.strip().splitlines()[-1])["tool-agent"]
    assert resumed["trained"] and resumed["resumed_from_step"] == checkpoints[-1]


@pytest.mark.slow
def test_sigterm_mid_evaluation_stops_it_without_promoting(home, tmp_path):
    (tmp_path / "roleforge.toml").write_text(SLOW_EVALUATION)
    process, log_path, signalled = start_and_terminate_at("tool-agent evaluate: started", tmp_path)
    outcome = stopped_cleanly(process, log_path, signalled)
    # The stage's own stop, not a retry's: a process on its way out retries nothing.
    assert "failed: Preempted: stopped by SIGTERM while" in outcome and "waiting to start" not in outcome
    assert "tool-agent promote: started" not in log_path.read_text()
