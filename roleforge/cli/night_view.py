"""What `roleforge run` shows of a night: while it runs, one live line per role on a terminal (a plain line per
event on stderr when stdout is not one); at its end, the outcomes in TABLE_WIDTH columns with the reasons below."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from roleforge.cli.common import compact_table
from roleforge.ops.progress import END, OUTCOME, START, STEP, ProgressEvent, StepThrottle, listening

NIGHT = "all roles"  # the line of the night's own stages (ingest)
PLAIN_EVERY_S = 10.0  # a role's steps printed at most this often as plain lines


@dataclass
class RoleLine:
    """Where one role is, as its live line shows it."""

    stage: str = "waiting"
    done: int | None = None
    total: int | None = None
    note: str = ""
    started: float | None = None
    seconds: float | None = None  # frozen at the role's outcome

    def elapsed(self) -> str:
        seconds = self.seconds if self.seconds is not None else (
            time.monotonic() - self.started if self.started is not None else 0.0)
        return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


class LiveLines:
    """A listener that keeps a line per role, and renders them for rich's Live, which redraws a few times a second
    from its own thread."""

    def __init__(self, roles: list[str]) -> None:
        self.lines = {name: RoleLine() for name in [NIGHT, *roles]}
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            line = self.lines.setdefault(event.role or NIGHT, RoleLine())
            if line.started is None:
                line.started = time.monotonic()
            if event.kind == START:
                line.stage, line.done, line.total, line.note = event.stage, None, None, ""
            elif event.kind == STEP:
                line.done, line.total = event.done, event.total
                line.note = event.message or line.note
            elif event.kind == END:
                line.note = f"{'failed' if event.failed else 'done'} in {event.seconds or 0:.0f} s"
                line.done, line.total = (0, 1) if event.failed else (1, 1)
            if event.kind == OUTCOME:
                line.stage, line.note, line.done, line.total = "done", event.message, 1, 1
            if event.kind == OUTCOME or (event.role is None and event.kind == END):
                line.seconds = time.monotonic() - line.started

    def render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(width=12, no_wrap=True, overflow="ellipsis")
        grid.add_column(width=8, no_wrap=True)
        grid.add_column(width=16)
        grid.add_column(width=9, no_wrap=True, justify="right")
        grid.add_column(width=5, no_wrap=True, justify="right")
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        with self._lock:
            for name, line in self.lines.items():
                if name == NIGHT and line.started is None:
                    continue
                counted = f"{line.done}/{line.total}" if line.done is not None and line.total and line.total > 1 else ""
                waiting = line.started is None
                bar = ProgressBar(total=1 if waiting else line.total, completed=line.done or 0, width=16)
                grid.add_row(name, line.stage, bar, counted, line.elapsed(), line.note)
        return grid


class PlainLines:
    """A listener that prints each event as a timestamped line (a role's steps every PLAIN_EVERY_S at most)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.due, self._lock = stream, StepThrottle(PLAIN_EVERY_S), threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        if self.due(event):
            with self._lock:
                print(f"{time.strftime('%H:%M:%S')} {event.describe()}", file=self.stream, flush=True)


@contextmanager
def watching(roles: list[str], console: Any) -> Iterator[None]:
    """Show the night's progress while the block runs: live lines when stdout is a terminal, else plain lines on
    stderr (stdout keeps the results)."""
    if not console.is_terminal:
        with listening(PlainLines(sys.stderr)):
            yield
        return
    from rich.live import Live

    view = LiveLines(roles)
    with Live(console=console, get_renderable=view.render, refresh_per_second=4, transient=False), listening(view):
        yield


def outcome_table(outcomes: dict[str, Any]) -> Any:
    """The night's outcome per role on one line each (the reasons go below it: reason_lines)."""
    def pair(ours: float | None, theirs: float | None) -> str:
        return "" if ours is None else f"{ours:.2f}/" + ("-" if theirs is None else f"{theirs:.2f}")

    def interval(value: float | None, low: float | None, high: float | None, sign: str = "") -> str:
        if value is None:
            return ""
        return f"{value:{sign}.2f}" + (f" [{low:{sign}.2f},{high:{sign}.2f}]" if low is not None and high is not None else "")

    def tool_use(metrics: dict[str, dict[str, float]]) -> str:
        rates = {side: m.get("full_compliance_rate") for side, m in metrics.items()}
        return pair(rates.get("candidate"), rates.get("opponent"))

    rows = [{"role": o.role, "pairs": o.pairs, "accuracy": pair(o.preference_accuracy, o.opponent_preference_accuracy),
             "gain": interval(o.accuracy_gain, o.accuracy_gain_low, o.accuracy_gain_high, "+"),
             "A/B win": interval(o.win_rate, o.win_rate_low, o.win_rate_high), "tool use": tool_use(o.task_metrics),
             "result": o.result, "s": "" if o.seconds is None else f"{o.seconds:.0f}"} for o in outcomes.values()]
    return compact_table("roleforge run", rows,
                         caption="accuracy and tool use: candidate/opponent; intervals in brackets; s: the role's seconds")


def reason_lines(outcomes: dict[str, Any]) -> list[str]:
    """Why each role ended where it did, a line per role (wrapped by the console)."""
    return [f"{o.role}: {o.reason}" for o in outcomes.values() if o.reason]


def print_outcomes(console: Any, outcomes: dict[str, Any]) -> None:
    console.print(outcome_table(outcomes))
    for line in reason_lines(outcomes):
        console.print(line, highlight=False, markup=False)
