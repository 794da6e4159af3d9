"""/metrics in Prometheus text format: requests, latency, tokens, the queue, and which version serves each role."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from roleforge.serving.engine import Job

# The *_created series say when a counter was first used: noise on every scrape of a long-running server.
disable_created_metrics()

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, float("inf"))


class ServingMetrics:
    def __init__(self, queue_depth: Callable[[], int], versions: Callable[[], dict[str, dict[str, str | None]]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("roleforge_requests", "Chat completion requests answered, by role and HTTP status.",
                                ["role", "status"], registry=self.registry)
        self.latency = Histogram("roleforge_request_latency_seconds", "Time from request to the last answer byte.",
                                 ["role"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("roleforge_generated_tokens", "Tokens generated, by role.", ["role"], registry=self.registry)
        self.tokens_per_second = Gauge("roleforge_tokens_per_second", "Tokens per second of the last batch.",
                                       registry=self.registry)
        self.batch_size = Histogram("roleforge_batch_size", "Answers generated together.",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, float("inf")), registry=self.registry)
        self.feedback = Counter("roleforge_feedback", "Feedback rows written to the inbox, by kind.", ["kind"],
                                registry=self.registry)
        depth = Gauge("roleforge_queue_depth", "Requests waiting or being generated.", registry=self.registry)
        depth.set_function(queue_depth)
        self._versions = versions
        self.adapter_version = Gauge("roleforge_adapter_version", "Registry version serving each role's slot (0: the base model).",
                                     ["role", "slot"], registry=self.registry)

    def batch_done(self, jobs: list[Job], seconds: float) -> None:
        total = sum(job.completion_tokens for job in jobs)
        for job in jobs:
            self.tokens.labels(job.role).inc(job.completion_tokens)
        self.batch_size.observe(len(jobs))
        if seconds > 0:
            self.tokens_per_second.set(total / seconds)

    def render(self) -> bytes:
        self.adapter_version.clear()  # a challenger taken off leaves no stale series behind
        for role, slots in self._versions().items():
            for slot, version in slots.items():
                self.adapter_version.labels(role, slot).set(int(version) if version and version.isdigit() else 0)
        return generate_latest(self.registry)
