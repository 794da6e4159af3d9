"""What every benchmark shares: the machine it ran on and how fast it ran at the time, peak memory, generated
feedback rows, and the report file."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from roleforge.sample.generate import EXEC_ROLES, exec_rows, tool_agent_rows


def feedback_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` stored-feedback-shaped rows drawn from the sample generators, prompts made unique per batch."""
    rows: list[dict[str, Any]] = []
    batch = 0
    while len(rows) < count:
        rng = random.Random(seed + batch)
        generated = tool_agent_rows(rng) if batch % 4 == 3 else exec_rows(rng, *list(EXEC_ROLES.items())[batch % 3])
        for row in generated:
            kind = "rating" if "rating" in row else "ab"
            rows.append({"id": len(rows) + 1, "kind": kind, "confidence": None, "rating": None, "response": None,
                         "response_a": None, "response_b": None, "preference": None, "rater": None,
                         **row, "prompt": f"{row['prompt']} (#{batch})"})
        batch += 1
    return rows[:count]


def machine() -> dict[str, Any]:
    """What a report was measured on, so that figures from different machines are not compared as one: the CPU's
    model and the cores this process may use."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(value.strip() for key, _, value in (line.partition(":") for line in
                                                      Path("/proc/cpuinfo").read_text().splitlines())
                   if key.strip() == "model name")
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"cpu": cpu, "cores": cores}


SPEED_PROBE_ADDITIONS = 10_000_000


def speed_probe() -> float:
    """Seconds one core takes for a fixed pure-Python loop (ten million additions): how fast this machine runs at
    the moment. A shared virtual machine's speed moves by a third and more over hours, every figure with it, so a
    report carries this reading from before and after its runs (`machine.speed_probe_s`) to tell a slow spell of
    the machine from a slower program."""
    started = time.perf_counter()
    total = 0
    for value in range(SPEED_PROBE_ADDITIONS):
        total += value
    return round(time.perf_counter() - started, 3)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


class PeakRss:
    """Peak resident memory of this process (or of process `pid`) and its child processes together (ingest's parse
    workers, Prefect's local server) while the block runs, sampled every 20 ms. The list of child processes is read
    every half second: reading it walks all of /proc, and doing that at every sample took CPU from what is measured."""

    SAMPLE_S = 0.02
    CHILDREN_EVERY = 25  # samples

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid

    def __enter__(self) -> PeakRss:
        import threading

        import psutil

        self.process, self.peak_mb, self._stop = psutil.Process(self.pid), 0.0, threading.Event()
        self._children: list[Any] = []
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        samples = 0
        while not self._stop.is_set():
            if samples % self.CHILDREN_EVERY == 0:
                self._children = self._current_children()
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            samples += 1
            self._stop.wait(self.SAMPLE_S)

    def _current_children(self) -> list[Any]:
        import psutil

        try:
            return self.process.children(recursive=True)
        except psutil.Error:  # another process, which has ended
            return []

    def _rss_mb(self) -> float:
        import psutil

        try:
            total = self.process.memory_info().rss
        except psutil.Error:  # another process, which has ended: its children went with it
            return 0.0
        for child in self._children:
            try:
                total += child.memory_info().rss
            except psutil.Error:  # it ended since the list was read
                pass
        return total / 2**20

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._children = self._current_children()
        self.peak_mb = max(self.peak_mb, self._rss_mb())
