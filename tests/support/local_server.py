"""A local Prefect server and the UI's own API calls: start it, wait for it, press "Run", watch the run.

Used by the end-to-end tests and by `scripts/ui_screenshot.py` (run as `python -m scripts.ui_screenshot`). Every
process started here is ended here, by its pid.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check: Any, timeout_s: float, what: str, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")


def _healthy(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process this module started: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextmanager
def prefect_server(prefect_home: Path, log_path: Path, port: int | None = None,
                   scheduler_loop_seconds: int = 60) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 with its database under prefect_home; yields the API URL."""
    port = port or free_port()
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(scheduler_loop_seconds)}
    env.pop("PREFECT_API_URL", None)
    prefect = Path(sys.executable).with_name("prefect")
    with log_path.open("ab") as log:
        process = subprocess.Popen([str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: _healthy(api_url) or process.poll() is not None, 180, "the Prefect server to answer")
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}; see {log_path}")
        yield api_url
    finally:
        stop(process)


@contextmanager
def roleforge_serve(api_url: str, log_path: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`roleforge serve` against a running server."""
    env = {**os.environ, "PREFECT_API_URL": api_url}
    with log_path.open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "roleforge.cli", "serve", *extra], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop(process)


def deployment(api_url: str, name: str, timeout_s: float = 120) -> dict[str, Any]:
    """A deployment as the UI reads it (`flow-name/deployment-name`), once it is registered."""
    import httpx

    flow_name, deployment_name = name.split("/")

    def read() -> dict[str, Any] | None:
        response = httpx.get(f"{api_url}/deployments/name/{flow_name}/{deployment_name}", timeout=5)
        return response.json() if response.status_code == 200 else None

    return wait_until(read, timeout_s, f"deployment {name} to be registered")


def scheduled_runs(api_url: str, deployment_id: str) -> list[dict[str, Any]]:
    """Flow runs the server's scheduler has created for a deployment and not started yet."""
    import httpx

    response = httpx.post(f"{api_url}/flow_runs/filter", timeout=10, json={
        "deployments": {"id": {"any_": [deployment_id]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
    response.raise_for_status()
    return response.json()


def press_run(api_url: str, deployment_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """What the UI's "Run" button does: create a flow run of the deployment."""
    import httpx

    def create() -> dict[str, Any] | None:
        response = httpx.post(f"{api_url}/deployments/{deployment_id}/create_flow_run",
                              json={"parameters": parameters}, timeout=30)
        if response.status_code == 503:  # the server's SQLite is busy (a serve process registering): ask again
            return None
        response.raise_for_status()
        return response.json()

    return wait_until(create, 120, "the server to accept the flow run", every_s=2)


def wait_for_run(api_url: str, flow_run_id: str, timeout_s: float) -> dict[str, Any]:
    """The flow run once its state is terminal."""
    import httpx

    def finished() -> dict[str, Any] | None:
        run = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=5).json()
        return run if (run.get("state") or {}).get("type") in TERMINAL else None

    return wait_until(finished, timeout_s, f"flow run {flow_run_id} to finish", every_s=2)
