"""`roleforge bench serve`: the HTTP API under mixed-role traffic, requests batched across roles against the same
server answering one request at a time: same model, adapters, prompts and clients."""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from roleforge.config.settings import Settings


def prompts_by_role(settings: Settings, roles: list[str]) -> dict[str, list[str]]:
    """Prompts written apart from the sample's templates (the role evaluation sets), per role; a role without a
    bundled set is asked the ceo's."""
    from roleforge.evaluation.role_report import role_prompts as evaluation_prompts
    from roleforge.ops.errors import RoleforgeError

    prompts = {}
    for role in roles:
        try:
            rows = evaluation_prompts(role, None, settings.role(role).output)
        except RoleforgeError:
            rows = evaluation_prompts("ceo", None, settings.role("ceo").output)
        prompts[role] = [row["prompt"] for row in rows]
    return prompts


def synthetic_adapter(base_model: Path, directory: Path, seed: int, rank: int = 16) -> Path:
    """A LoRA adapter of the recipe's shape with random weights: what a role without a champion is benchmarked with,
    so that every request of the mixed traffic goes through an adapter of its own."""
    import torch
    from peft import LoraConfig, get_peft_model

    from roleforge.models.base import load_model

    torch.manual_seed(seed)
    model = get_peft_model(load_model(base_model), LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False))
    with torch.no_grad():  # small weights: answers of a plausible length, as a trained adapter gives
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.mul_(0.01)
    model.save_pretrained(str(directory))
    return directory


def _load(url: str, plan: list[tuple[str, str]], clients: int, max_tokens: int) -> dict[str, Any]:
    """`clients` threads, each sending its share of the plan one request after another (a closed loop)."""
    import httpx

    latencies: list[float] = []
    tokens, failures = [0], []
    lock = threading.Lock()

    def client(share: list[tuple[str, str]]) -> None:
        with httpx.Client(timeout=600) as http:
            for role, prompt in share:
                started = time.perf_counter()
                reply = http.post(f"{url}/v1/chat/completions", json={
                    "model": role, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens})
                elapsed = time.perf_counter() - started
                with lock:
                    if reply.status_code == 200:
                        latencies.append(elapsed)
                        tokens[0] += reply.json()["usage"]["completion_tokens"]
                    else:
                        failures.append(reply.status_code)

    threads = [threading.Thread(target=client, args=(plan[i::clients],)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"requests": len(latencies), "failed": len(failures), "seconds": round(seconds, 2),
            "requests_per_s": round(len(latencies) / seconds, 3), "tokens_per_s": round(tokens[0] / seconds, 1),
            "completion_tokens": tokens[0],
            "p50_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
            "p95_ms": round(ordered[max(0, int(0.95 * len(ordered)) - 1)] * 1000, 1) if ordered else None}


def serve_benchmark(settings: Settings, clients: int, requests: int, max_tokens: int, max_batch: int,
                    roles: list[str] | None = None, dtype: str | None = None) -> dict[str, Any]:
    from roleforge.models.generation import champion_adapters
    from roleforge.serving.app import create_app
    from roleforge.serving.engine import CHAMPION, ServingModel
    from roleforge.serving.runner import server_thread
    from roleforge.serving.service import Service

    roles = roles or list(settings.roles)[:4]
    base_model = settings.base_model_dir()
    engine = ServingModel(base_model, dtype or settings.serving.dtype)
    champions = champion_adapters(settings, roles)
    adapters: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="roleforge-bench-serve-") as scratch:
        for seed, role in enumerate(roles):
            if role in champions:
                path, version = champions[role]
                adapters[role] = f"champion v{version}"
            else:
                path, version = synthetic_adapter(base_model, Path(scratch) / f"role-{seed}", seed), "synthetic"
                adapters[role] = "synthetic"
            engine.install(role, CHAMPION, version, path)
        prompts = prompts_by_role(settings, roles)
        plan = []  # the roles in turn, each asking its own prompts in order
        for i in range(requests):
            role = roles[i % len(roles)]
            plan.append((role, prompts[role][(i // len(roles)) % len(prompts[role])]))
        runs = {}
        # One at a time first, then batched: the same server stack, only the batch size differs.
        for name, batch in (("sequential", 1), ("batched", max_batch)):
            service = Service(settings)
            service.use(engine, batch, ready=True)
            with server_thread(create_app(service, start=False)) as url:
                _load(url, plan[:len(roles)], len(roles), 8)  # warm-up: first-call allocations of each batch shape
                runs[name] = _load(url, plan, clients, max_tokens)
            service.close()
    batched, sequential = runs["batched"], runs["sequential"]
    return {
        "clients": clients, "requests": requests, "max_tokens": max_tokens, "max_batch": max_batch, "roles": adapters,
        "dtype": engine.dtype, **{key: batched[key] for key in ("requests_per_s", "p50_ms", "p95_ms", "tokens_per_s")},
        "batched": batched, "sequential": sequential,
        "speedup": round(batched["requests_per_s"] / sequential["requests_per_s"], 2) if sequential["requests_per_s"] else None,
        "p95_not_worse": batched["p95_ms"] is not None and sequential["p95_ms"] is not None and batched["p95_ms"] <= sequential["p95_ms"],
    }
