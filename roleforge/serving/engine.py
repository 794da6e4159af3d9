"""The serving model: one copy of the base model, every served adapter attached by name, and batched generation in
which each row may use its own adapter (PEFT's mixed adapter batches), stop on its own, and stream as it goes.

Only the scheduler's worker thread calls into a ServingModel: adapters are swapped between batches, never under one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roleforge.ops.errors import RoleforgeError

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class Route:
    """What serves one slot of a role: an attached adapter (None: the base model) and its registry version."""

    adapter: str | None
    version: str | None
    path: Path | None = None


@dataclass
class Job:
    """One answer to generate. `slot` is resolved to an adapter when the batch forms, so a swap between submit and
    generation serves the new version, never a detached one."""

    role: str
    slot: str
    prompt: str  # in the model's chat template, ready for the answer
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None  # streamed text deltas, called from the worker thread
    text: str = ""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    version: str | None = None
    _ids: list[int] = field(default_factory=list, repr=False)
    _sent: int = 0

    @property
    def sampling(self) -> tuple[float, float]:
        """Jobs batch together only when they decode the same way."""
        return (0.0, 1.0) if self.temperature <= 0 else (round(self.temperature, 4), round(self.top_p, 4))


def resolve_dtype(dtype: str) -> str:
    """auto: bf16 weights on a GPU that computes in them; fp32 on a CPU, where per-step casts under autocast cost more
    than bf16 matmuls save at serving batch sizes (docs/serving.md)."""
    import torch

    if dtype != "auto":
        return dtype
    from roleforge.config.recipes import bf16_supported

    return "bfloat16" if torch.cuda.is_available() and bf16_supported() else "float32"


class ServingModel:
    """The base model with named adapters, and `run(jobs)`: one batched generation."""

    def __init__(self, base_model: Path, dtype: str = "auto") -> None:
        from roleforge.models.base import load_model, load_tokenizer

        self.tokenizer = load_tokenizer(base_model)
        self.dtype = resolve_dtype(dtype)
        self.model = load_model(base_model, self.dtype).eval()
        self.routes: dict[tuple[str, str], Route] = {}
        self.served: dict[str, dict[str, str | None]] = {}  # a snapshot for other threads, replaced on every change
        self._names = (f"a{n}" for n in itertools.count())
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)

    @property
    def has_adapters(self) -> bool:
        return hasattr(self.model, "peft_config")

    def install(self, role: str, slot: str, version: str | None, path: Path | None) -> bool:
        """Serve `role`'s `slot` from the adapter at path (None: the base model, or no challenger). Returns whether
        anything changed. The adapter it replaces is dropped once no slot uses it."""
        from roleforge.models.base import attach_adapter

        current = self.routes.get((role, slot))
        if current is not None and current.version == version and current.path == path:
            return False
        if path is None:
            route = Route(None, None)
        else:
            name = next(self._names)
            self.model = attach_adapter(self.model, path, adapter_name=name)
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
        in_use = {route.adapter for route in self.routes.values()}
        loaded = set(self.model.peft_config) if self.has_adapters else set()
        # PEFT keeps at least one adapter on a PeftModel: the last one stays loaded, unused, until a new one comes.
        if adapter not in in_use and adapter in loaded and len(loaded) > 1:
            if self.model.active_adapter == adapter:  # mixed batches name their adapters; this only keeps PEFT quiet
                self.model.set_adapter(next(name for name in loaded if name != adapter))
            self.model.delete_adapter(adapter)

    def route(self, role: str, slot: str) -> Route:
        """The slot's route; a missing challenger falls back to the champion, a role without one to the base."""
        return self.routes.get((role, slot)) or self.routes.get((role, CHAMPION)) or Route(None, None)

    def run(self, jobs: list[Job]) -> None:
        """Generate every job's answer in one batch (same sampling), filling in text, tokens and finish reason."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        routes = [self.route(job.role, job.slot) for job in jobs]
        for job, route in zip(jobs, routes):
            job.version = route.version
        tokenizer = self.tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            batch = tokenizer([job.prompt for job in jobs], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(self.model.device)
        finally:
            tokenizer.padding_side = side
        for job, length in zip(jobs, batch["attention_mask"].sum(dim=1).tolist()):
            job.prompt_tokens = int(length)
        streamer = RowStreamer(tokenizer, jobs, self.eos_ids)

        class RowsDone(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.tensor(streamer.done, dtype=torch.bool, device=input_ids.device)

        temperature, top_p = jobs[0].sampling
        options: dict[str, Any] = {"do_sample": False} if temperature <= 0 else {
            "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
        if self.has_adapters:
            options["adapter_names"] = [route.adapter or BASE for route in routes]
        elif any(route.adapter for route in routes):
            raise RoleforgeError("an adapter route exists but no adapter is attached")
        with torch.no_grad():
            self.model.generate(**batch, max_new_tokens=max(job.max_new_tokens for job in jobs), streamer=streamer,
                                stopping_criteria=StoppingCriteriaList([RowsDone()]),
                                pad_token_id=tokenizer.pad_token_id, **options)
        streamer.end()


class RowStreamer:
    """Receives each decoding step's tokens for the whole batch (transformers' streamer protocol) and keeps every row
    apart: its text so far, its own stop (end of sequence, a stop string, its token limit), and its streamed deltas.
    A delta is held back while it could still be the start of a stop string or an unfinished UTF-8 character."""

    def __init__(self, tokenizer: Any, jobs: list[Job], eos_ids: set[int]) -> None:
        self.tokenizer, self.jobs, self.eos_ids = tokenizer, jobs, eos_ids
        self.done = [False] * len(jobs)
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate first hands over the prompt ids
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            job = self.jobs[row]
            if token in self.eos_ids:
                self._finish(row, "stop")
                continue
            job._ids.append(token)
            job.completion_tokens += 1
            text = self.tokenizer.decode(job._ids, skip_special_tokens=True)
            cut = _first_stop(text, job.stop)
            if cut is not None:
                job.text = text[:cut]
                self._finish(row, "stop", complete=True)
                continue
            job.text = text
            if job.completion_tokens >= job.max_new_tokens:
                self._finish(row, "length")
            else:
                self._emit(job, _safe_end(text, job.stop))

    def end(self) -> None:
        for row in range(len(self.jobs)):
            if not self.done[row]:
                self._finish(row, "length")

    def _finish(self, row: int, reason: str, complete: bool = False) -> None:
        """complete: the text ends where a stop string began, not in the middle of a character."""
        job = self.jobs[row]
        self.done[row] = True
        job.finish_reason = reason
        if not complete:
            job.text = job.text.rstrip("\ufffd")
        self._emit(job, len(job.text))

    @staticmethod
    def _emit(job: Job, upto: int) -> None:
        if upto > job._sent:
            delta, job._sent = job.text[job._sent:upto], upto
            if job.on_text is not None:
                job.on_text(delta)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return min(found) if found else None


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of text can be sent: not a trailing partial character, nor a tail that may begin a stop string."""
    end = len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[end - size:end] == stop[:size]:
                end -= size
                break
    return end
