"""`roleforge bench cli`: start-up latency of the command as a user starts it."""

from __future__ import annotations

import time
from typing import Any


def cli_benchmark(repeats: int) -> dict[str, Any]:
    """Wall seconds of `roleforge --help` and `roleforge status`, each a fresh process as a user starts it, against
    the current ROLEFORGE_HOME: median and slowest of `repeats` runs (one unmeasured run first warms the disk cache)."""
    import statistics
    import subprocess
    import sys

    from roleforge.ops.errors import RoleforgeError

    command = [sys.executable, "-m", "roleforge.cli"]
    report: dict[str, Any] = {"repeats": repeats}
    for name, args in (("help", ["--help"]), ("status", ["status"])):
        seconds = []
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            done = subprocess.run(command + args, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise RoleforgeError(f"roleforge {' '.join(args)} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            if attempt:
                seconds.append(elapsed)
        report[f"{name}_seconds"] = round(statistics.median(seconds), 3)
        report[f"{name}_max_seconds"] = round(max(seconds), 3)
    return report
