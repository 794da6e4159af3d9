"""The serving service behind the HTTP layer: the model loaded in the background, the scheduler, the registry watch,
the ledger of answers, A/B sampling, and feedback turned into inbox rows."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from roleforge.config.settings import Settings
from roleforge.ops.errors import RoleforgeError
from roleforge.serving.engine import CHALLENGER, CHAMPION, Job, ServingModel
from roleforge.serving.ledger import Ledger, Served, feedback_row, write_inbox_row
from roleforge.serving.metrics import ServingMetrics
from roleforge.serving.scheduler import Scheduler
from roleforge.serving.watch import RegistryWatch

log = logging.getLogger("roleforge.serving")


@dataclass
class Conversation:
    """A chat request reduced to what the model and the ledger need."""

    role: str
    system_prompt: str
    prompt: str  # the last user message: what feedback on the answer is about
    history: list[dict[str, str]]  # earlier user/assistant turns
    template: str  # the whole conversation in the model's chat template, ready for the answer


class Service:
    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.config = settings.serving
        self.rng = rng or random.Random()
        self.engine: ServingModel | None = None
        self.scheduler: Scheduler | None = None
        self.watch: RegistryWatch | None = None
        self.metrics = ServingMetrics(lambda: self.scheduler.depth if self.scheduler else 0,
                                      lambda: self.engine.served if self.engine else {})
        self.ledger = Ledger(settings.path("serving") / "responses.db", self.config.ledger_days)
        self.load_error: str | None = None
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self, background: bool = True) -> None:
        """Load the model and the champions (in a thread: /healthz answers 503 until then), then poll the registry."""
        if background:
            threading.Thread(target=self._load, name="roleforge-serving-load", daemon=True).start()
        else:
            self._load()

    def _load(self) -> None:
        try:
            started = time.perf_counter()
            engine = ServingModel(self.settings.base_model_dir(), self.config.dtype)
            self.use(engine, self.config.max_batch)
            self.watch = RegistryWatch(self.settings, engine, self.scheduler, self.config.poll_seconds)
            self.watch.sync()
            self.watch.start()
            log.info("serving %d roles on %s (%s) after %.1f s", len(self.settings.roles), engine.model.device,
                     engine.dtype, time.perf_counter() - started)
            self._ready.set()
        except Exception as error:
            self.load_error = f"{type(error).__name__}: {error}"
            log.error("the serving model did not load: %s", self.load_error)

    def use(self, engine: ServingModel, max_batch: int, ready: bool = False) -> None:
        """Serve with this engine, batches of up to max_batch (the benchmark sets up its own adapters and batch size)."""
        self.engine = engine
        self.scheduler = Scheduler(engine, max_batch, self.config.max_queue, self.config.batch_wait_ms / 1000,
                                   self.metrics.batch_done)
        if ready:
            self._ready.set()

    def wait_ready(self, timeout_s: float) -> None:
        if not self._ready.wait(timeout_s):
            raise RoleforgeError(self.load_error or f"the serving model did not load within {timeout_s:.0f} s")

    def close(self) -> None:
        if self.watch is not None:
            self.watch.stop()
        if self.scheduler is not None:
            self.scheduler.close()
        self.ledger.close()

    def resolve_role(self, name: str | None) -> str:
        """A request's role: its name or an alias in any case (as feedback names it), or its registered model name."""
        for role in self.settings.roles:
            if name == self.settings.registered_model_name(role):
                return role
        try:
            return self.settings.role_name(name or "")
        except RoleforgeError:
            raise KeyError(name) from None

    def models(self) -> list[dict[str, Any]]:
        served = self.engine.served if self.engine else {}
        listing = []
        for role, config in self.settings.roles.items():
            slots = served.get(role, {})
            version = slots.get(CHAMPION)
            listing.append({"id": role, "object": "model", "created": 0, "owned_by": "roleforge",
                            "version": version, "serving": "champion" if version else "base",
                            "challenger_version": slots.get(CHALLENGER), "ab_share": config.serving.ab_share,
                            "registered_model": self.settings.registered_model_name(role),
                            "description": config.description})
        return listing

    def conversation(self, role: str, messages: list[dict[str, str]]) -> Conversation:
        """The role's system prompt, unless the request brings its own, and the turns up to the last user message."""
        system = [m["content"] for m in messages if m["role"] in ("system", "developer")]
        turns = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] in ("user", "assistant")]
        if not turns or turns[-1]["role"] != "user":
            raise ValueError("messages must end with a user message")
        system_prompt = "\n\n".join(system) if system else self.settings.role(role).system_prompt
        assert self.engine is not None
        template = self.engine.tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}, *turns],
                                                             tokenize=False, add_generation_prompt=True)
        return Conversation(role, system_prompt, turns[-1]["content"], turns[:-1], template)

    def jobs(self, conversation: Conversation, max_new_tokens: int, temperature: float, top_p: float,
             stop: tuple[str, ...]) -> list[Job]:
        """One job, or two in random order (champion and challenger) for the role's A/B share of requests."""
        role = conversation.role
        slots = [CHAMPION]
        served = self.engine.served.get(role, {}) if self.engine else {}
        if served.get(CHALLENGER) and self.rng.random() < self.settings.role(role).serving.ab_share:
            slots = [CHAMPION, CHALLENGER]
            self.rng.shuffle(slots)
        return [Job(prompt=conversation.template, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                    stop=stop, role=role, slot=slot) for slot in slots]

    def submit(self, jobs: list[Job]) -> list[Any]:
        if self.scheduler is None:
            raise RoleforgeError("the serving model is still loading")
        return self.scheduler.submit(jobs)

    def new_id(self) -> str:
        return f"chatcmpl-{uuid.uuid4().hex}"

    def record(self, response_id: str, conversation: Conversation, jobs: list[Job]) -> Served:
        served = Served(response_id, conversation.role, conversation.prompt, conversation.system_prompt,
                        conversation.history, [{"text": job.text, "version": job.version, "slot": job.slot} for job in jobs])
        self.ledger.record(served)
        return served

    def feedback(self, response_id: str, rating: int | None, preference: str | None, rater: str | None,
                 comment: str | None) -> dict[str, Any]:
        """The inbox row for feedback on a served answer; KeyError for an id this server never answered."""
        from pydantic import ValidationError

        from roleforge.data_contracts.feedback import FeedbackRow, describe_error
        from roleforge.serving.ledger import FeedbackError

        served = self.ledger.get(response_id)
        if served is None:
            raise KeyError(response_id)
        row = feedback_row(served, rating, preference, rater, comment, self.settings.role(served.role).system_prompt
                           if served.role in self.settings.roles else served.system_prompt)
        try:  # the contract ingest applies: a row that would be quarantined is refused here, with the reason
            FeedbackRow.model_validate(row)
        except ValidationError as error:
            raise FeedbackError(f"this feedback would not pass the feedback contract: {describe_error(error)}") from None
        path = write_inbox_row(self.settings.path("inbox"), row)
        self.metrics.feedback.labels("ab" if "preference" in row else "rating").inc()
        return {"id": row["event_id"], "object": "feedback", "response_id": response_id, "role": served.role,
                "model_version": row["metadata"]["model_version"], "inbox_file": path.name}
