"""Preemption: a spot VM going away is an expected event, not a bug.

SIGTERM (a spot eviction notice, `kill`, a scheduler stopping the run) while a role trains makes the trainer
write a checkpoint at the end of the current step and stop; the task then raises `Preempted`. Outside training,
SIGTERM unwinds the process like Ctrl-C, and work in progress that writes no checkpoint (generating answers, scoring
pairs) stops at its next step. Retries of a preempted task come from their own budget (roleforge/ops/retries.py),
separate from retries of transient infrastructure errors; code errors are never retried.

Inside a flow, Prefect's engine owns SIGTERM: it raises `TerminationSignal` in the main thread and waits for the
task runner's threads before it reports the crash. The flag below is what stops those threads, so a flow body that
waits on them runs inside `workers_stop_with_this_thread`, and a training in the main thread takes SIGTERM back
for its duration (`training_in_progress`).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from collections.abc import Iterator
from typing import Any

from roleforge.ops.errors import Preempted

_shutdown = threading.Event()
_training = threading.Event()


def shutdown_requested() -> bool:
    return _shutdown.is_set()


def request_shutdown() -> None:
    """What SIGTERM does: a training in progress checkpoints and stops; nothing new starts."""
    _shutdown.set()


def _on_sigterm(signum: int, _frame: Any) -> None:
    request_shutdown()
    if not _training.is_set():
        raise SystemExit(128 + signum)


def install_handler() -> None:
    """Route SIGTERM here (main thread only; elsewhere the process's own handler stays)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextmanager
def training_in_progress() -> Iterator[None]:
    """While a trainer runs, SIGTERM asks it for a checkpoint instead of killing the process. In the main thread the
    handler is roleforge's for the block, whoever installed the one before (Prefect's flow engine, whose handler
    raises mid-step), and that one is back after it."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _training.set()
    try:
        yield
    finally:
        _training.clear()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def workers_stop_with_this_thread() -> Iterator[None]:
    """Around a flow body that waits for work in other threads: when SIGTERM (Prefect's TerminationSignal) or
    Ctrl-C unwinds this thread, the workers are told to stop too (a training checkpoints, answers stop at the next
    batch). Without it the engine waited for them: a training ran to its end and evaluation promoted after SIGTERM."""
    try:
        yield
    except BaseException as error:
        if not isinstance(error, Exception):
            request_shutdown()
        raise


def checkpoint_on_shutdown_callback() -> Any:
    """A transformers TrainerCallback: on SIGTERM, save a checkpoint after the current step and stop training."""
    from transformers import TrainerCallback

    class CheckpointOnShutdown(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> Any:
            if _shutdown.is_set():
                control.should_save = True
                control.should_training_stop = True
            return control

    return CheckpointOnShutdown()


def stop_if_shutdown(doing: str) -> None:
    """Called between steps of work that leaves nothing to resume (generating answers, scoring pairs): after a
    SIGTERM it stops there, rather than at the next checkpoint minutes later or never (in a worker thread, which the
    signal does not interrupt)."""
    if _shutdown.is_set():
        raise Preempted(f"stopped by SIGTERM while {doing}; a retry starts it again")


def raise_if_preempted(step: int) -> None:
    if _shutdown.is_set():
        raise Preempted(f"stopped by SIGTERM after a checkpoint at step {step}; a retry resumes from it")


def reset() -> None:
    """Forget a SIGTERM (after handling it in-process, as tests do)."""
    _shutdown.clear()
