"""Where a run's time goes: the stages' own work (timed inside each task body) and everything else, which is
orchestration: Prefect's server, flow and task runs, state handling, the fan-out, waiting between stages."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from roleforge.ops import progress
from roleforge.ops.memory import release_memory
from roleforge.training.preemption import stop_if_shutdown

F = TypeVar("F", bound=Callable[..., Any])


class StageClock:
    """Wall-clock intervals of stage work in this process, from every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.intervals: list[tuple[str, float, float]] = []

    def timed(self, stage: str) -> Callable[[F], F]:
        """Decorate a task's function (under @task) so that each call's own work is recorded as `stage`, and its
        start, steps and end are published as the progress of the role it works on (roleforge/ops/progress.py)."""

        def decorate(function: F) -> F:
            @functools.wraps(function)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                stop_if_shutdown(f"waiting to start {stage}")
                started = time.monotonic()
                try:
                    with progress.stage(stage, progress.stage_role(args, kwargs)):
                        return function(*args, **kwargs)
                finally:
                    with self._lock:
                        self.intervals.append((stage, started, time.monotonic()))
                    # What the stage freed goes back to the system, not kept in its thread's heap arena where the
                    # next stage (another thread, another arena) cannot reuse it: docs/perf-notes.md.
                    release_memory()

            return wrapper  # type: ignore[return-value]

        return decorate

    def report(self, started: float, ended: float) -> dict[str, Any]:
        """Wall time of [started, ended], the share of it in which some stage was working (overlapping stages
        counted once), the rest as orchestration overhead, and each stage's summed time."""
        with self._lock:
            spans = sorted((max(a, started), min(b, ended), name) for name, a, b in self.intervals if b > started and a < ended)
        busy, cursor = 0.0, started
        per_stage: dict[str, float] = {}
        for begin, end, name in spans:
            per_stage[name] = per_stage.get(name, 0.0) + end - begin
            if end > cursor:
                busy += end - max(begin, cursor)
                cursor = end
        wall = ended - started
        return {"wall_seconds": round(wall, 2), "stage_seconds": round(busy, 2),
                "overhead_seconds": round(wall - busy, 2), "overhead_share": round((wall - busy) / wall, 4) if wall else 0.0,
                "stages": {name: round(seconds, 2) for name, seconds in sorted(per_stage.items())}}


STAGES = StageClock()
