"""A night's progress: stages publish start, steps and end per role from any thread, to this process's listeners and
to the Prefect run's log, which the run's page shows."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from roleforge.ops import progress
from roleforge.ops.memory import glibc
from roleforge.ops.progress import END, OUTCOME, START, STEP, ProgressEvent, StepThrottle
from roleforge.ops.timing import StageClock


def test_events_from_several_threads_reach_a_listener_each_under_its_own_role():
    received: list[ProgressEvent] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def listener(event: ProgressEvent) -> None:
        with lock:
            received.append(event)

    def night(role: str) -> None:
        with progress.stage("train", role):
            barrier.wait()  # every role inside its stage at once: advance must still find its own
            for step in range(1, 6):
                progress.advance(step, 5, f"loss {step}")
        progress.outcome(role, "promoted v1")

    roles = ["ceo", "cfo", "coo", "tool-agent"]
    with progress.listening(listener):
        threads = [threading.Thread(target=night, args=(role,)) for role in roles]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    progress.advance(1, 1, "after")  # outside a stage and after the listener left: nobody hears it
    for role in roles:
        mine = [e for e in received if e.role == role]
        assert [e.kind for e in mine] == [START, *[STEP] * 5, END, OUTCOME]
        assert [e.done for e in mine if e.kind == STEP] == [1, 2, 3, 4, 5] and {e.stage for e in mine[:-1]} == {"train"}
        assert not mine[-2].failed and mine[-2].seconds is not None and mine[-1].message == "promoted v1"
    assert len(received) == 4 * 8


def test_a_timed_stage_publishes_its_role_and_failure_and_a_broken_listener_fails_nothing():
    clock, received = StageClock(), []

    @clock.timed("evaluate")
    def evaluate(candidate: SimpleNamespace, profile: str) -> str:
        progress.advance(message="scoring")
        if profile == "bad":
            raise ValueError("no held-out pairs\nsecond line")
        return candidate.role

    def broken(_: ProgressEvent) -> None:
        raise RuntimeError("display gone")

    with progress.listening(broken), progress.listening(received.append):
        assert evaluate(SimpleNamespace(role="cfo"), "quick") == "cfo"
        with pytest.raises(ValueError, match="no held-out pairs"):
            evaluate(candidate=SimpleNamespace(role="coo"), profile="bad")
    assert [(e.role, e.stage, e.kind, e.message) for e in received] == [
        ("cfo", "evaluate", START, ""), ("cfo", "evaluate", STEP, "scoring"), ("cfo", "evaluate", END, ""),
        ("coo", "evaluate", START, ""), ("coo", "evaluate", STEP, "scoring"),
        ("coo", "evaluate", END, "no held-out pairs")]
    assert received[-1].failed and received[-1].describe().startswith("coo evaluate: failed in ")
    assert [name for name, _, _ in clock.intervals] == ["evaluate", "evaluate"], "the stage is still timed"


def test_the_step_throttle_passes_starts_ends_and_last_steps():
    due = StepThrottle(every_s=60)
    step = ProgressEvent("ceo", "train", STEP, done=1, total=10)
    assert due(step) and not due(step), "a second step within the minute is held back"
    assert due(ProgressEvent("cfo", "train", STEP, done=1, total=10)), "another role's steps count apart"
    assert due(ProgressEvent("ceo", "train", STEP, done=10, total=10)) and due(ProgressEvent("ceo", "train", END, seconds=3))


FLOW_SCRIPT = """
import json, sys
from pathlib import Path
from roleforge.runtime import prepare_environment
prepare_environment(Path(sys.argv[1]))
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler
from roleforge.ops import progress
from roleforge.ops.timing import STAGES

@task
@STAGES.timed("label")
def label(role: str) -> None:
    progress.advance(3, 3, "pairs")

@flow
def night() -> str:
    label("ceo")
    from prefect.runtime import flow_run
    return flow_run.id

run_id = night()
APILogHandler().flush()
with get_client(sync_client=True) as client:
    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
print(json.dumps([log.message for log in logs]))
"""


def test_a_stage_s_progress_reaches_the_prefect_run_log_and_not_the_terminal(tmp_path):
    """The CLI's environment lets the stages' INFO lines through to Prefect's API (a run's page in the UI) while the
    terminal gets warnings only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    result = subprocess.run([sys.executable, "-c", FLOW_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    messages = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ceo label: started", "ceo label: pairs, 3/3"} <= set(messages), messages
    assert any(m.startswith("ceo label: done in ") for m in messages)
    assert "ceo label" not in result.stderr and "INFO" not in result.stderr, result.stderr


HEAP_RELEASE_PROBE = """
import json
from roleforge.ops.timing import StageClock

def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

kept = []

def work():
    # 300 MB in 100 KB blocks (below glibc's mmap threshold: from the heap), each followed by a small block that
    # stays: freeing the large ones leaves holes the heap cannot hand back by shrinking its top.
    blocks = []
    for _ in range(3000):
        blocks.append(bytearray(100_000))
        kept.append(bytearray(1_000))
    del blocks

StageClock().timed("evaluate")(lambda: None)()  # what a stage imports on first use, loaded before measuring
before = rss_mb()
work()
after_plain = rss_mb()
StageClock().timed("evaluate")(work)()
print(json.dumps({"before": before, "after_plain": after_plain, "after_stage": rss_mb()}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or glibc() is None, reason="glibc's allocator on Linux only")
def test_a_stage_hands_the_memory_it_freed_back_to_the_system():
    """A night's stages run in the task runner's threads, each with its own heap arena, where memory one stage frees
    is of no use to the next: every stage hands what it freed back (glibc keeps it otherwise, as the plain call
    shows). In a process of its own, so that the heap starts as a night's does."""
    probe = subprocess.run([sys.executable, "-c", HEAP_RELEASE_PROBE], capture_output=True, text=True, check=True, timeout=300)
    rss = json.loads(probe.stdout.strip().splitlines()[-1])
    assert rss["after_plain"] - rss["before"] > 250, rss  # glibc kept the freed blocks
    assert rss["after_stage"] < rss["before"] + 50, rss  # the stage's 300 MB, and the plain call's, went back
