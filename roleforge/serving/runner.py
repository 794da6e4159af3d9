"""Starting the API: the checks before binding (API keys off loopback), and a server in a thread for benchmarks
and tests."""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from roleforge.ops.errors import RoleforgeError

KEYS_VARIABLE = "ROLEFORGE_API_KEYS"


def api_keys() -> frozenset[str]:
    """The accepted keys: ROLEFORGE_API_KEYS, comma-separated."""
    return frozenset(key.strip() for key in os.environ.get(KEYS_VARIABLE, "").split(",") if key.strip())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, keys: frozenset[str]) -> None:
    """Anything but loopback is reachable by others: refuse to serve it without keys."""
    if not is_loopback(host) and not keys:
        raise RoleforgeError(f"binding {host} exposes the API beyond this machine: set {KEYS_VARIABLE} (comma-separated keys) "
                             "or bind 127.0.0.1")


@contextmanager
def server_thread(app: Any, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 60.0) -> Iterator[str]:
    """Run app under uvicorn in a thread; yields its base URL and stops it on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="roleforge-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RoleforgeError(f"the API server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
