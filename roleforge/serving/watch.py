"""Which adapter serves each role, read from the registry: the champion alias, and for roles with A/B serving the
newest candidate that did not win (held back, or not decided yet). A poller applies changes between batches, so a
promotion or a rollback reaches the server without a restart and without failing a request in flight."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from roleforge.config.settings import Settings
from roleforge.serving.engine import CHALLENGER, CHAMPION, ServingModel
from roleforge.serving.scheduler import Scheduler

log = logging.getLogger("roleforge.serving")

Wanted = dict[tuple[str, str], tuple[str | None, Path | None]]


def wanted_routes(settings: Settings) -> Wanted:
    """(role, slot) -> (version, adapter directory) as the registry has them now."""
    from mlflow.exceptions import MlflowException

    from roleforge.registry.tracking import CHAMPION as CHAMPION_ALIAS
    from roleforge.registry.tracking import alias_version, local_adapter_path, mlflow_client

    client = mlflow_client(settings.resolved_tracking_uri)
    cache = settings.path("registry-cache")
    wanted: Wanted = {}
    for role, config in settings.roles.items():
        name = settings.registered_model_name(role)
        champion = alias_version(client, name, CHAMPION_ALIAS)
        wanted[(role, CHAMPION)] = ((str(champion.version), local_adapter_path(client, champion, cache))
                                    if champion is not None else (None, None))
        if config.serving.ab_share <= 0:
            continue
        try:
            versions = client.search_model_versions(f"name='{name}'")
        except MlflowException:
            versions = []
        newest = int(champion.version) if champion is not None else 0
        challengers = [v for v in versions if int(v.version) > newest and v.tags.get("roleforge.promoted") != "true"
                       and v.tags.get("roleforge.rolled_back") != "true"]
        challenger = max(challengers, key=lambda v: int(v.version), default=None)
        if challenger is not None:
            wanted[(role, CHALLENGER)] = (str(challenger.version), local_adapter_path(client, challenger, cache))
    return wanted


def apply_routes(engine: ServingModel, wanted: Wanted) -> list[str]:
    """Install what changed (on the scheduler's thread); a challenger no longer wanted is taken off."""
    changed = []
    for (role, slot), (version, path) in wanted.items():
        if engine.install(role, slot, version, path):
            changed.append(f"{role} {slot} -> {'v' + version if version else 'base'}")
    for role, slot in [key for key in engine.routes if key[1] == CHALLENGER and key not in wanted]:
        if engine.install(role, slot, None, None):
            changed.append(f"{role} {slot} -> none")
    return changed


class RegistryWatch:
    """Polls the registry every `every_s` seconds and swaps adapters through the scheduler."""

    def __init__(self, settings: Settings, engine: ServingModel, scheduler: Scheduler, every_s: float) -> None:
        self.settings, self.engine, self.scheduler, self.every_s = settings, engine, scheduler, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="roleforge-registry-watch", daemon=True)
        self.last_error: str | None = None

    def sync(self, timeout_s: float | None = None) -> list[str]:
        """Read the registry now and wait until the server serves what it says."""
        wanted = wanted_routes(self.settings)
        changed: list[str] = self.scheduler.call(lambda: apply_routes(self.engine, wanted)).result(timeout_s)
        for change in changed:
            log.info("serving %s", change)
        return changed

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sync()
                self.last_error = None
            except Exception as error:  # a registry that is briefly away must not stop serving what is loaded
                self.last_error = f"{type(error).__name__}: {error}"
                log.warning("registry poll failed: %s", self.last_error)

    def __enter__(self) -> RegistryWatch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
