"""Retry what can heal, fail fast on what cannot, with one classifier for every stage: a preemption, and a database
that is busy or briefly unreachable, heal; a code error or a broken contract does not."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from roleforge.ops.errors import Preempted
from roleforge.training.preemption import shutdown_requested

# What the message of an error that heals on retry says (SQLite, PostgreSQL, HTTP clients).
TRANSIENT_SIGNS = ("database is locked", "database is busy", "connection refused", "timed out")


def retry_kind(error: BaseException | None) -> str | None:
    """"preempted" (the machine is going away), "transient" (infrastructure that is busy or briefly unreachable),
    or None: not worth a retry."""
    if error is None:
        return None
    if isinstance(error, Preempted):
        return "preempted"
    message = str(error).lower()
    return "transient" if any(sign in message for sign in TRANSIENT_SIGNS) else None


def failure_of(state: Any) -> BaseException | None:
    """The exception a failed Prefect state holds; None for any other state."""
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - the state's own exception, for the caller to classify
        return error
    return None


def retryable_kind(state: Any) -> str | None:
    """The retry kind of a task run's state; None for anything not worth a retry, and for everything while the
    process shuts down (SIGTERM): the next run asks for the work again."""
    return None if shutdown_requested() else retry_kind(failure_of(state))


def retry_transient(task: object, task_run: object, state: object) -> bool:
    """Prefect retry_condition_fn: retry what can heal (retryable_kind), fail fast on everything else."""
    return retryable_kind(state) is not None


class RetryPolicy:
    """Prefect retry_condition_fn with separate budgets: preemptions and transient infrastructure errors each
    have their own count per task run; code errors fail fast. A process that is shutting down retries nothing
    itself: the restarted run (a worker, an Azure ML job restart) resumes from the checkpoint."""

    def __init__(self, budgets: Callable[[], dict[str, int]]) -> None:
        self.budgets = budgets  # read when a retry is decided, so configuration applies without a restart
        self.spent: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def __call__(self, task: object, task_run: Any, state: Any) -> bool:
        kind = retryable_kind(state)
        if kind is None:
            return False
        with self._lock:
            key = (str(getattr(task_run, "id", "")), kind)
            if self.spent[key] >= self.budgets().get(kind, 0):
                return False
            self.spent[key] += 1
            return True
