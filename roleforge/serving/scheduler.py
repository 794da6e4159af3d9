"""The batch scheduler: requests wait in a bounded queue, one worker thread generates them in batches of any mix of
roles, and changes to the served adapters run on the same thread between batches."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from roleforge.serving.engine import Job, ServingModel


class QueueFull(Exception):
    """More requests are waiting than the queue takes: the caller answers 429."""


class Scheduler:
    def __init__(self, engine: ServingModel, max_batch: int = 8, max_queue: int = 64, batch_wait_s: float = 0.005,
                 on_batch: Callable[[list[Job], float], None] | None = None) -> None:
        self.engine, self.max_batch, self.max_queue, self.batch_wait_s = engine, max_batch, max_queue, batch_wait_s
        self.on_batch = on_batch  # metrics: the batch and its seconds
        self._waiting: deque[tuple[Job, Future[Job]]] = deque()
        self._control: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._running = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="roleforge-serving", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting or being generated."""
        with self._cond:
            return len(self._waiting) + self._running

    def submit(self, jobs: list[Job]) -> list[Future[Job]]:
        """Queue jobs together (an A/B request's two answers are all or nothing); QueueFull when they do not fit."""
        futures: list[Future[Job]] = [Future() for _ in jobs]
        with self._cond:
            if self._stopped:
                raise QueueFull("the server is shutting down")
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (limit {self.max_queue})")
            self._waiting.extend(zip(jobs, futures))
            self._cond.notify_all()
        return futures

    def call(self, action: Callable[[], Any]) -> Future[Any]:
        """Run action on the worker thread before the next batch (an adapter swap): never during a generation."""
        future: Future[Any] = Future()
        with self._cond:
            self._control.append((action, future))
            self._cond.notify_all()
        return future

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests; the worker finishes what is queued, then exits."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def _take(self) -> tuple[list[tuple[Callable[[], Any], Future[Any]]], list[tuple[Job, Future[Job]]] | None]:
        """The adapter changes to run, else the next batch; (_, None) once stopped with nothing left."""
        with self._cond:
            while not self._control and not self._waiting:
                if self._stopped:
                    return [], None
                self._cond.wait()
            if self._control:
                controls = list(self._control)
                self._control.clear()
                return controls, []
            # A short wait lets concurrent requests join the batch; a full batch leaves at once.
            deadline = time.monotonic() + self.batch_wait_s
            while len(self._waiting) < self.max_batch and (left := deadline - time.monotonic()) > 0 and not self._stopped:
                self._cond.wait(left)
            key = self._waiting[0][0].sampling
            batch: list[tuple[Job, Future[Job]]] = []
            kept: deque[tuple[Job, Future[Job]]] = deque()
            while self._waiting:
                item = self._waiting.popleft()
                (batch if len(batch) < self.max_batch and item[0].sampling == key else kept).append(item)
            self._waiting.extendleft(reversed(kept))
            self._running = len(batch)
            return [], batch

    def _loop(self) -> None:
        while True:
            controls, batch = self._take()
            if batch is None:
                return
            for action, future in controls:
                try:
                    future.set_result(action())
                except BaseException as error:  # the caller sees it; serving goes on with the adapters it had
                    future.set_exception(error)
            if batch:
                self._generate(batch)

    def _generate(self, batch: list[tuple[Job, Future[Job]]]) -> None:
        jobs = [job for job, _ in batch]
        started = time.perf_counter()
        try:
            self.engine.run(jobs)
        except BaseException as error:  # every request of the batch gets the error; the worker lives on
            for _, future in batch:
                future.set_exception(error)
        else:
            if self.on_batch is not None:
                self.on_batch(jobs, time.perf_counter() - started)
            for job, future in batch:
                future.set_result(job)
        finally:
            with self._cond:
                self._running = 0
