"""`roleforge bench night`: the sample night as a user starts it (`roleforge run --sample`, a fresh process) on a
fresh home, with what it took (wall time, the stages' and the roles' seconds, peak memory) beside what it decided
(promotions, task metrics), so that speed and outcomes are read together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from roleforge.bench.common import PeakRss
from roleforge.ops.errors import RoleforgeError

# Of each role's outcome, what the report keeps: what was decided and the figures behind it.
OUTCOME_FIELDS = ("pairs", "trained", "promoted", "version", "preference_accuracy", "opponent", "accuracy_gain",
                  "accuracy_gain_low", "win_rate", "contract", "guardrails", "drift_kl", "reason")


def night_environment(home: Path, base_model: Path) -> dict[str, str]:
    """This process's environment for a night on `home`: its stores, registry and Prefect's local server all new
    there (whatever the configuration points them at), the base model directory reused as it is."""
    env = {**os.environ, "ROLEFORGE_HOME": str(home), "ROLEFORGE_BASE_MODEL": str(base_model),
           "ROLEFORGE_STORE_URL": f"sqlite:///{home / 'store.db'}",
           "ROLEFORGE_MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "PREFECT_HOME": str(home / "prefect")}
    env.pop("PREFECT_API_URL", None)  # the night's own local Prefect, as a first `make run` has
    return env


def night_benchmark(base_model: Path, work: Path, profile: str, roles: list[str] | None = None,
                    nights: int = 1) -> dict[str, Any]:
    """Run the sample night in a new process on a new home under `work` and report it; with `nights` > 1, the
    nights after it on the same home, each ingesting a day of new sample feedback (`next_day_feedback`) first.

    Args:
        base_model: the base model directory the night loads (not converted again).
        work: an empty directory for the night's home.
        profile: the training profile, quick or default.
        roles: the roles to run (default: every configured role).
        nights: the first night and this many minus one after it.

    The night's progress lines go to this process's stderr as it runs. The report holds `wall_s` (the whole
    command, start-up included), `flow_wall_s`, `stage_s` and `overhead_s` (the run's own timing), `role_s` (each
    role's pipeline), `peak_rss_mb` (the night's process and its children), `promotions`, `task_metrics` and
    `outcomes` (OUTCOME_FIELDS per role), all of the first night; `later_nights` holds the same of each night after
    it, with the `feedback_rows` it ingested.
    """
    home = work / "home"
    selected = ["--roles", ",".join(roles)] if roles else []
    report = {"profile": profile, **one_night(["--sample", *selected], home, base_model, profile), "base_model": str(base_model)}
    report["later_nights"] = []
    for night in range(2, nights + 1):
        files, rows = next_day_feedback(work / f"day-{night}", report["roles"], night)
        later = one_night([*map(str, files), *selected], home, base_model, profile)
        report["later_nights"].append({"night": night, "feedback_rows": rows, **later})
    return report


def one_night(arguments: list[str], home: Path, base_model: Path, profile: str) -> dict[str, Any]:
    """`roleforge run ARGUMENTS --profile PROFILE --json` in a new process on `home`, and what it took and decided."""
    command = [sys.executable, "-m", "roleforge.cli", "run", *arguments, "--profile", profile, "--json"]
    started = time.perf_counter()
    night = subprocess.Popen(command, env=night_environment(home, base_model), stdout=subprocess.PIPE, text=True)
    try:
        with PeakRss(night.pid) as rss:
            stdout, _ = night.communicate()
    except BaseException:  # SIGTERM or Ctrl-C to this process alone: the night stops too
        stop_night(night)
        raise
    wall = time.perf_counter() - started
    lines = stdout.strip().splitlines()
    if night.returncode != 0 or not lines:
        raise RoleforgeError(f"the night exited with {night.returncode}; its errors are above")
    outcomes: dict[str, dict[str, Any]] = json.loads(lines[-1])
    timing = json.loads((home / "runs" / "last-run-timing.json").read_text())
    return {
        "roles": list(outcomes), "wall_s": round(wall, 2), "flow_wall_s": timing["wall_seconds"],
        "stage_s": timing["stages"], "overhead_s": timing["overhead_seconds"],
        "role_s": {role: outcome.get("seconds") for role, outcome in outcomes.items()},
        "peak_rss_mb": round(rss.peak_mb, 1),
        "promotions": {role: outcome["promoted"] for role, outcome in outcomes.items()},
        "task_metrics": {role: outcome["task_metrics"] for role, outcome in outcomes.items() if outcome.get("task_metrics")},
        "outcomes": {role: {key: outcome.get(key) for key in OUTCOME_FIELDS} for role, outcome in outcomes.items()},
    }


def next_day_feedback(directory: Path, roles: list[str], day: int) -> tuple[list[Path], int]:
    """A day of new feedback for each of `roles` the sample generator writes for (the bundled roles and the ten-role
    sample's), drawn with the day as its seed: other prompts and answers than the sample's. Returns the files and
    their row count."""
    from roleforge.sample.generate import DAY_ROWS, day_rows, write_jsonl

    directory.mkdir(parents=True, exist_ok=True)
    files, count = [], 0
    for role in roles:
        rows = day_rows(role, day)[:DAY_ROWS]
        if rows:
            path = directory / f"{role}.jsonl"
            write_jsonl(path, rows)
            files.append(path)
            count += len(rows)
    if not files:
        raise RoleforgeError(f"no sample feedback can be made for {', '.join(roles)}: later nights need one of the "
                             "bundled roles or the ten-role sample's")
    return files, count


def stop_night(night: subprocess.Popen[str], grace_s: float = 30.0) -> None:
    """SIGTERM to the night (a training checkpoints and stops), then, after `grace_s`, SIGKILL to it and its children:
    a role that evaluates in a worker thread runs on after SIGTERM unwinds the main thread."""
    import psutil

    try:
        children = psutil.Process(night.pid).children(recursive=True)
    except psutil.Error:
        children = []
    night.terminate()
    try:
        night.wait(grace_s)
    except subprocess.TimeoutExpired:
        for process in [*children, night]:
            try:
                process.kill()
            except (psutil.Error, OSError):
                pass
        night.wait()


def night_summary(report: dict[str, Any]) -> str:
    """The report in three lines a night for people."""
    lines = []
    for number, night in enumerate([report, *report.get("later_nights", [])], start=1):
        stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in night["stage_s"].items())
        roles = ", ".join(f"{role} {seconds:.0f} s" for role, seconds in night["role_s"].items() if seconds is not None)
        promoted = [role for role, won in night["promotions"].items() if won]
        lines += [f"night {number} ({report['profile']}, {len(night['roles'])} roles): {night['wall_s']:.0f} s wall, "
                  f"peak RSS {night['peak_rss_mb']:.0f} MB",
                  f"  stages: {stages}", f"  roles: {roles}; promoted: {', '.join(promoted) or 'none'}"]
    return "\n".join(lines)
