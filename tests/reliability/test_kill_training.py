"""kill -9 in the middle of a role's training: the next run resumes from the last complete checkpoint and finishes."""

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

SLOW_TRAINING = """
[roles."tool-agent".training.dpo]
num_train_epochs = 1
per_device_train_batch_size = 1
learning_rate = 0.01
save_steps = 2
[roles."tool-agent".training.data]
max_train_pairs = 48
max_eval_pairs = 16
"""


def complete_checkpoints(home: Path) -> list[Path]:
    return [p for p in (home / "checkpoints").glob("tool-agent/*/checkpoint-*") if (p / "trainer_state.json").exists()]


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_resumes_and_finishes(home, tmp_path):
    (tmp_path / "roleforge.toml").write_text(SLOW_TRAINING)
    command = [sys.executable, "-m", "roleforge.cli", "run", str(SAMPLE / "tool-agent.jsonl"), "--roles", "tool-agent",
               "--profile", "quick", "--json"]
    # Its own session, so that the kill takes the whole machine's worth of processes (the local Prefect server too).
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 600
    while not complete_checkpoints(home) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = max(int(p.name.split("-")[1]) for p in complete_checkpoints(home))
    state = json.loads((home / "status" / "tool-agent.json").read_text())
    assert state["state"] == "training", "the kill left the role mid-training"

    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    outcome = json.loads(second.stdout.strip().splitlines()[-1])["tool-agent"]
    assert outcome["trained"] and outcome["resumed_from_step"] is not None and outcome["resumed_from_step"] >= killed_at
    assert json.loads((home / "status" / "tool-agent.json").read_text())["state"] == "ready"
    from peft import PeftModel

    from roleforge.models.base import load_model

    PeftModel.from_pretrained(load_model(Path(os.environ["ROLEFORGE_BASE_MODEL"])), outcome_adapter(home))  # it loads


def outcome_adapter(home: Path) -> str:
    return json.loads((home / "status" / "tool-agent.json").read_text())["adapter_path"]
