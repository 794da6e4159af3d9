"""The serving model: one copy of the base model, every served adapter attached by name, and batched generation in
which each row may use its own adapter (roleforge/models/multilora.py), stop on its own, and stream as it goes.

Only the scheduler's worker thread calls into a ServingModel: adapters are swapped between batches, never under one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from roleforge.models.batching import Request, end_ids, generate_batch

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class Route:
    """What serves one slot of a role: an attached adapter (None: the base model) and its registry version."""

    adapter: str | None
    version: str | None
    path: Path | None = None


@dataclass(kw_only=True)
class Job(Request):
    """A request for a role's slot. The slot is resolved to an adapter when the batch forms, so a swap between
    submit and generation serves the new version, never a detached one."""

    role: str
    slot: str = CHAMPION
    version: str | None = None


def resolve_dtype(dtype: str) -> str:
    """auto: the hardware's inference dtype (`models.base.inference_dtype`); serving keeps no fp32 copy."""
    from roleforge.models.base import inference_dtype

    return inference_dtype() if dtype == "auto" else dtype


class ServingModel:
    """The base model with named adapters, and `run(jobs)`: one batched generation."""

    def __init__(self, base_model: Path, dtype: str = "auto") -> None:
        from roleforge.models.base import load_model, load_tokenizer
        from roleforge.models.multilora import MultiLoRA

        self.tokenizer = load_tokenizer(base_model)
        self.dtype = resolve_dtype(dtype)
        self.model = load_model(base_model, self.dtype).eval()
        self.lora = MultiLoRA(self.model)
        self.routes: dict[tuple[str, str], Route] = {}
        self.served: dict[str, dict[str, str | None]] = {}  # a snapshot for other threads, replaced on every change
        self._names = (f"a{n}" for n in itertools.count())
        self.eos_ids = end_ids(self.model, self.tokenizer)

    def install(self, role: str, slot: str, version: str | None, path: Path | None) -> bool:
        """Serve `role`'s `slot` from the adapter at path (None: the base model, or no challenger). Returns whether
        anything changed. The adapter it replaces is dropped once no slot uses it."""
        current = self.routes.get((role, slot))
        if current is not None and current.version == version and current.path == path:
            return False
        if path is None:
            route = Route(None, None)
        else:
            name = next(self._names)
            self.lora.add(name, path)
            route = Route(name, version, path)
        if path is None and slot == CHALLENGER:
            self.routes.pop((role, slot), None)
        else:
            self.routes[(role, slot)] = route
        if current is not None and current.adapter is not None:
            self._drop(current.adapter)
        served: dict[str, dict[str, str | None]] = {}
        for (name, kind), serving in self.routes.items():
            served.setdefault(name, {})[kind] = serving.version
        self.served = served
        return True

    def _drop(self, adapter: str) -> None:
        if adapter not in {route.adapter for route in self.routes.values()}:
            self.lora.remove(adapter)

    def route(self, role: str, slot: str) -> Route:
        """The slot's route; a missing challenger falls back to the champion, a role without one to the base."""
        return self.routes.get((role, slot)) or self.routes.get((role, CHAMPION)) or Route(None, None)

    def run(self, jobs: list[Job]) -> None:
        """Generate every job's answer in one batch (same sampling), each through its role's adapter."""
        for job in jobs:
            route = self.route(job.role, job.slot)
            job.adapter, job.version = route.adapter, route.version
        generate_batch(self.model, self.tokenizer, jobs, self.eos_ids, self.lora)
