"""A running night's progress: each stage's start, steps and end, per role, from whichever thread runs it. Every
event goes to the run's Prefect log (a run started from the UI shows it on its page) and to this process's listeners
(the live view of `roleforge run`). Stages need not pass their role down: `stage` remembers it for the thread (a
context variable), and `advance`, called from deep inside (a training step, a batch of answers), reads it there."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

START, STEP, END, OUTCOME = "start", "step", "end", "outcome"
# The Prefect log takes a stage's steps at most this often (its start, end and last step always): a training's
# every step would bury the page.
LOG_EVERY_S = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """One moment of a role's night.

    Args:
        role: the role the stage works on; None for the whole night's stages (ingest).
        stage: the stage's name as roleforge/ops/timing.py records it (ingest, validate, label, train, ...).
        kind: START, STEP, END, or OUTCOME (the role's result, in `message`, after its last stage).
        message: what is happening (a step's loss, "answers"), or a stage's error.
        done, total: units of the stage's work done and in all (training steps, answers), where it counts them.
        seconds: at END, the stage's own time.
        failed: at END, whether the stage raised.
    """

    role: str | None
    stage: str
    kind: str
    message: str = ""
    done: int | None = None
    total: int | None = None
    seconds: float | None = None
    failed: bool = False

    def describe(self) -> str:
        """The event as one log line: 'tool-agent train: step 12/40, loss 0.612'."""
        where = f"{self.role} {self.stage}" if self.role else self.stage
        if self.kind == START:
            return f"{where}: started"
        if self.kind == END:
            return f"{where}: {'failed' if self.failed else 'done'} in {self.seconds or 0:.1f} s" + (
                f": {self.message}" if self.message else "")
        if self.kind == OUTCOME:
            return f"{self.role}: {self.message}"
        counted = f"{self.done}/{self.total}" if self.done is not None and self.total else ""
        return f"{where}: " + ", ".join(part for part in (self.message, counted) if part)


class StepThrottle:
    """Lets every event through but a stage's steps, of which it passes one per role and stage every `every_s`
    seconds, and the last one (done == total). Thread-safe."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last: dict[tuple[str | None, str], float] = {}

    def __call__(self, event: ProgressEvent) -> bool:
        key, now = (event.role, event.stage), time.monotonic()
        with self._lock:
            if event.kind == STEP and (event.done is None or event.done != event.total) \
                    and now - self._last.get(key, float("-inf")) < self.every_s:
                return False
            self._last[key] = now
            return True


Listener = Callable[[ProgressEvent], None]
_listeners: list[Listener] = []
_lock = threading.Lock()
_log_due = StepThrottle(LOG_EVERY_S)
_current: contextvars.ContextVar[tuple[str | None, str] | None] = contextvars.ContextVar("roleforge_stage", default=None)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call `listener` with every event published in this process while the block runs, from the publishing
    thread: a listener must be thread-safe and quick."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


def publish(event: ProgressEvent) -> None:
    """Log the event to the current Prefect run (steps throttled to LOG_EVERY_S) and hand it to every listener; a
    listener that fails is logged, never the stage's problem."""
    if _log_due(event):
        _run_logger().info("%s", event.describe())
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a display must not fail a training
            log.warning("progress listener %r failed", listener, exc_info=True)


def _run_logger() -> Any:
    """The Prefect run's logger (its lines reach the run's page), or a plain one outside a run."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log


@contextmanager
def stage(name: str, role: str | None) -> Iterator[None]:
    """Publish the stage's start and end (with its seconds, and whether it raised) around the block, and let
    `advance` inside it, in this thread, know the stage and role."""
    token = _current.set((role, name))
    publish(ProgressEvent(role, name, START))
    started, error = time.monotonic(), None
    try:
        yield
    except BaseException as raised:
        error = raised
        raise
    finally:
        message = (str(error).strip().splitlines() or [type(error).__name__])[0] if error is not None else ""
        publish(ProgressEvent(role, name, END, message, seconds=round(time.monotonic() - started, 2),
                              failed=error is not None))
        _current.reset(token)


def advance(done: int | None = None, total: int | None = None, message: str = "") -> None:
    """A step of the stage running in this thread: `done` of `total` units, and what it is doing. Outside a stage
    (a benchmark, the API server), nothing happens."""
    current = _current.get()
    if current is not None:
        publish(ProgressEvent(current[0], current[1], STEP, message, done, total))


def outcome(role: str, message: str) -> None:
    """A role's result after its last stage: 'promoted v3', 'not trained: only 4 new pairs ...'."""
    publish(ProgressEvent(role, "done", OUTCOME, message))


def stage_role(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The role a stage's call works on: its first argument, a role's name or something that has one (a dataset, a
    candidate); None for a stage of the whole night (ingest's list of paths)."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    if isinstance(first, str):
        return first
    role = getattr(first, "role", None)
    return role if isinstance(role, str) else None
