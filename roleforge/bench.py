"""Benchmarks that print JSON: measured on this machine, in one process, never asserted by a timed test."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from roleforge.sample.generate import EXEC_ROLES, exec_rows, tool_agent_rows


def feedback_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` stored-feedback-shaped rows drawn from the sample generators, prompts made unique per batch."""
    rows: list[dict[str, Any]] = []
    batch = 0
    while len(rows) < count:
        rng = random.Random(seed + batch)
        generated = tool_agent_rows(rng) if batch % 4 == 3 else exec_rows(rng, *list(EXEC_ROLES.items())[batch % 3])
        for row in generated:
            kind = "rating" if "rating" in row else "ab"
            rows.append({"id": len(rows) + 1, "kind": kind, "confidence": None, "rating": None, "response": None,
                         "response_a": None, "response_b": None, "preference": None, "rater": None,
                         **row, "prompt": f"{row['prompt']} (#{batch})"})
        batch += 1
    return rows[:count]


def label_benchmark(rows: int, judge_pairs: int, base_model: Path | None) -> dict[str, Any]:
    """Heuristic labeling throughput on `rows` rows; local-judge throughput batched vs one pair at a time."""
    from roleforge.tasks.labelers import comparisons
    from roleforge.tasks.labelers.heuristics import HeuristicLabeler

    data = feedback_rows(rows)
    labeler = HeuristicLabeler(["tool_format", "refusal", "detail"])
    started = time.perf_counter()
    result = labeler.label(data)
    heuristic_seconds = time.perf_counter() - started
    compared = len(result.pairs) + result.abstained
    report: dict[str, Any] = {
        "rows": rows, "heuristic_comparisons": compared, "heuristic_pairs": len(result.pairs),
        "heuristic_seconds": round(heuristic_seconds, 3), "heuristic_rows_per_s": round(rows / heuristic_seconds, 1),
        "heuristic_comparisons_per_s": round(compared / heuristic_seconds, 1),
    }
    if judge_pairs and base_model is not None:
        from roleforge.tasks.labelers.judge import LocalJudge
        from roleforge.models.base import load_model, load_tokenizer

        items = [(c.prompt, c.first, c.second) for c in comparisons(data[:2000], 2, include_ab=False)[:judge_pairs]]
        model, tokenizer = load_model(base_model).eval(), load_tokenizer(base_model)
        for batch_size in (1, 8):
            judge = LocalJudge(model, tokenizer, batch_size=batch_size)
            judge.prefer_a("You are the CEO.", items[:1])  # warm-up
            started = time.perf_counter()
            judge.prefer_a("You are the CEO.", items)
            report[f"judge_pairs_per_s_batch_{batch_size}"] = round(len(items) / (time.perf_counter() - started), 3)
        report["judge_pairs"] = len(items)
        report["judge_speedup_batched"] = round(report["judge_pairs_per_s_batch_8"] / report["judge_pairs_per_s_batch_1"], 2)
    return report


# Contract violations mixed into the generated file (valid JSON, so the plain pandas baseline reads the same file).
BAD_ROWS = (
    lambda row: {**row, "agent_role": "cmo"},
    lambda row: {**row, "rating": 9} if "rating" in row else {**row, "preference": "c"},
    lambda row: {**row, "prompt": "   "},
    lambda row: {**row, "confidence": "very"},
)


def write_feedback_file(path: Path, rows: int, bad_share: float, seed: int = 0) -> int:
    """`rows` raw feedback lines drawn from the sample generators (prompts made unique), every 1/bad_share-th one
    broken in one of four ways; returns how many are bad."""
    import orjson

    every = round(1 / bad_share) if bad_share > 0 else 0
    bad = written = batch = 0
    with path.open("wb") as out:
        while written < rows:
            rng = random.Random(seed + batch)
            generated = tool_agent_rows(rng) if batch % 4 == 3 else exec_rows(rng, *list(EXEC_ROLES.items())[batch % 3])
            lines = []
            for row in generated[: rows - written]:
                row = {**row, "prompt": f"{row['prompt']} (#{batch})"}
                if every and written % every == every - 1:
                    row, bad = BAD_ROWS[bad % len(BAD_ROWS)](row), bad + 1
                lines.append(orjson.dumps(row))
                written += 1
            out.write(b"\n".join(lines) + b"\n")
            batch += 1
        out.flush()
        os.fsync(out.fileno())  # on disk before anything is timed: no writeback of it competes with the runs
    return bad


def ingest_benchmark(rows: int, bad_share: float, work_dir: Path, repeats: int = 1,
                     server_url: str | None = None) -> dict[str, Any]:
    """`roleforge ingest` (contract, PII scrub, content hash, dedupe, quarantine, store) against a plain pandas
    read_json + to_sql of the same file: `repeats` runs of each, alternating which goes first (roleforge in the first
    run), each in a process of its own and into a new database: a SQLite file, or with `server_url` (a PostgreSQL
    server, by the URL of any database on it) a database created on that server for the run and dropped after it.
    The throughputs and the ratio are the runs' medians, every run's figures are in `runs`, and a peak is the largest
    of any run (of this machine's processes: a server's memory is not counted)."""
    import shutil
    import statistics

    source = work_dir / "feedback.jsonl"
    bad = write_feedback_file(source, rows, bad_share)
    runs: dict[str, list[dict[str, Any]]] = {"roleforge": [], "pandas": []}
    for index in range(repeats):
        run_dir = work_dir / f"run-{index}"
        run_dir.mkdir()
        for name in ("roleforge", "pandas") if index % 2 == 0 else ("pandas", "roleforge"):
            with scratch_database(server_url, run_dir / f"{name}.db") as store_url:
                runs[name].append(_timed_ingest(name, source, run_dir, rows, store_url))
        shutil.rmtree(run_dir)  # a 1M-row store and pandas' copy of it take about a gigabyte
    counts = runs["roleforge"][-1]
    median = {name: statistics.median(run["seconds"] for run in runs[name]) for name in runs}
    ratios = [theirs["seconds"] / ours["seconds"] for ours, theirs in zip(runs["roleforge"], runs["pandas"])]
    return {
        "rows": rows, "bad_rows": bad, "file_mb": round(source.stat().st_size / 2**20, 1), "repeats": repeats,
        "store": "sqlite" if server_url is None else make_url(server_url).get_backend_name(),
        "ingested": counts["ingested"], "duplicates": counts["duplicates"], "quarantined": counts["quarantined"],
        "all_rows_accounted": all(run["accounted"] == rows for run in runs["roleforge"]),
        "events_per_s": round(rows / median["roleforge"], 1), "seconds": round(median["roleforge"], 2),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in runs["roleforge"]),
        "pandas_events_per_s": round(rows / median["pandas"], 1), "pandas_seconds": round(median["pandas"], 2),
        "pandas_peak_rss_mb": max(run["peak_rss_mb"] for run in runs["pandas"]),
        "speedup_vs_pandas": round(statistics.median(ratios), 2), "min_speedup_vs_pandas": round(min(ratios), 2),
        "runs": {name: [{**run, "seconds": round(run["seconds"], 3)} for run in runs[name]] for name in runs},
    }


@contextmanager
def scratch_database(server_url: str | None, path: Path) -> Iterator[str]:
    """The URL of a new, empty database: a SQLite file at `path`, or with `server_url` a database created on that
    server (connected to by that URL) and dropped, with whatever it holds, when the block ends."""
    if server_url is None:
        yield f"sqlite:///{path}"
        return
    import uuid

    import sqlalchemy as sa

    name = f"roleforge_scratch_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        engine.dispose()


def make_url(url: str) -> Any:
    import sqlalchemy as sa

    return sa.engine.make_url(url)


def _timed_ingest(name: str, source: Path, run_dir: Path, rows: int, store_url: str) -> dict[str, Any]:
    """One timed ingest of `source` (`rows` lines) into the new database `store_url`, in a process of its own
    (started before the clock, its imports done): roleforge's, or a plain pandas read_json + to_sql. A fresh process
    each time, so that no run's peak memory holds what an earlier one left behind (pandas keeps gigabytes that a
    trim does not return). Roleforge's run also counts where its rows went."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_timed_ingest_child, args=(name, source, run_dir, rows, store_url, send),
                            name=f"bench-ingest-{name}")
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:  # killed, or out of memory: nothing was sent
        child.join()
        result = {"error": f"it ended without a result (exit code {child.exitcode})"}
    finally:
        receive.close()
        child.join()
    if "error" in result:
        raise RuntimeError(f"the {name} run of the ingest benchmark failed: {result['error']}")
    return result


def _timed_ingest_child(name: str, source: Path, run_dir: Path, rows: int, store_url: str, send: Any) -> None:
    """_timed_ingest's process: the run, its figures sent back through `send` (or the error's last line)."""
    import traceback

    try:
        send.send(_timed_ingest_here(name, source, run_dir, rows, store_url))
    except BaseException as error:  # noqa: BLE001 - sent to the parent, which raises it as one line
        traceback.print_exc()
        send.send({"error": f"{type(error).__name__}: {error}"})
    finally:
        send.close()


def _timed_ingest_here(name: str, source: Path, run_dir: Path, rows: int, store_url: str) -> dict[str, Any]:
    import sqlite3

    import pandas as pd
    import sqlalchemy as sa

    from roleforge.tasks.ingest import ingest_files
    from roleforge.config.settings import DEFAULT_ROLES

    sqlite_file = make_url(store_url).database if store_url.startswith("sqlite:") else None
    with PeakRss() as memory:
        started = time.perf_counter()
        if name == "roleforge":
            report = ingest_files([str(source)], set(DEFAULT_ROLES), store_url, run_dir / "quarantine")
        else:
            frame = pd.read_json(source, lines=True)
            with sqlite3.connect(sqlite_file) if sqlite_file else sa.create_engine(store_url).begin() as connection:
                frame.to_sql("feedback", connection, index=False, chunksize=50_000)
        seconds = time.perf_counter() - started
    run = {"seconds": seconds, "events_per_s": round(rows / seconds, 1), "peak_rss_mb": round(memory.peak_mb, 1)}
    if name == "roleforge":
        run.update(ingested=report.ingested, duplicates=report.duplicates, quarantined=report.quarantined,
                   accounted=report.ingested + report.duplicates + report.quarantined + report.blank)
    return run


def machine() -> dict[str, Any]:
    """What a report was measured on, so that figures from different machines are not compared as one: the CPU's
    model and the cores this process may use."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(value.strip() for key, _, value in (line.partition(":") for line in
                                                      Path("/proc/cpuinfo").read_text().splitlines())
                   if key.strip() == "model name")
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"cpu": cpu, "cores": cores}


SPEED_PROBE_ADDITIONS = 10_000_000


def speed_probe() -> float:
    """Seconds one core takes for a fixed pure-Python loop (ten million additions): how fast this machine runs at
    the moment. A shared virtual machine's speed moves by a third and more over hours, every figure with it, so a
    report carries this reading from before and after its runs (`machine.speed_probe_s`) to tell a slow spell of
    the machine from a slower program."""
    started = time.perf_counter()
    total = 0
    for value in range(SPEED_PROBE_ADDITIONS):
        total += value
    return round(time.perf_counter() - started, 3)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def save_pairs(path: Path) -> dict[str, int]:
    """The labeled sample tool-agent pairs as JSONL (prompt, chosen, rejected, split), for `bench dpo --pairs-file`
    on a machine that has only the training dependencies."""
    train, held_out = tool_use_pairs()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for split, pairs in (("train", train), ("held_out", held_out)):
            for pair in pairs:
                out.write(json.dumps({"prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"],
                                      "split": split}) + "\n")
    return {"train": len(train), "held_out": len(held_out)}


def load_pairs(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out) pairs from a JSONL file written by `save_pairs`; a malformed line is a one-line error."""
    from roleforge.ops.errors import RoleforgeError

    splits: dict[str, list[dict[str, Any]]] = {"train": [], "held_out": []}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            splits[row["split"]].append({key: str(row[key]) for key in ("prompt", "chosen", "rejected")})
        except (ValueError, KeyError, TypeError) as error:
            raise RoleforgeError(f"{path}:{number}: not a pair with prompt, chosen, rejected and split train|held_out "
                                 f"({type(error).__name__}: {error})") from None
    return splits["train"], splits["held_out"]


# Published architectures for throughput runs with random weights (the default model's tokenizer and vocabulary).
MODEL_SHAPES = {
    "smollm2-1.7b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
                     "num_key_value_heads": 32, "rope_theta": 130000.0, "tie_word_embeddings": True},
}


def random_model(shape: str, like: Path, target: Path) -> Path:
    """A model of architecture `shape` with random weights and `like`'s tokenizer, saved as safetensors: for
    throughput and memory measurements only (its accuracies mean nothing)."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(like))
    for key, value in MODEL_SHAPES[shape].items():
        setattr(config, key, value)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(str(target), safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (like / name).exists():
            shutil.copy(like / name, target / name)
    del model
    return target


def tool_use_pairs(held_out_fraction: float = 0.2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The sample tool-agent feedback labeled as the pipeline labels it (humans, ratings, heuristics, generated
    rejections): (train pairs, held-out pairs), split by prompt hash, in a fixed order."""
    from roleforge.sample import SAMPLE_FEEDBACK
    from roleforge.storage.snapshots import split_of
    from roleforge.tasks.label import label_rows, labelers_for
    from roleforge.config.settings import DEFAULT_ROLES, TeacherConfig

    config = DEFAULT_ROLES["tool-agent"]
    rows = []
    for line in (SAMPLE_FEEDBACK / "tool-agent.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append({"id": len(rows) + 1, "kind": "rating" if "rating" in row else "ab", "confidence": None, "rating": None,
                     "response": None, "response_a": None, "response_b": None, "preference": None, "rater": None, **row})
    labelers = labelers_for(config.labeling, None, config.system_prompt, TeacherConfig(), config.output)
    pairs = sorted(({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "pair_id": p.pair_id}
                    for p in label_rows(rows, labelers, config.labeling.max_source_share).pairs), key=lambda p: p["pair_id"])
    train = [p for p in pairs if split_of("tool-agent", p["prompt"], held_out_fraction) == "train"]
    return train, [p for p in pairs if split_of("tool-agent", p["prompt"], held_out_fraction) == "held_out"]


class PeakRss:
    """Peak resident memory of this process and its child processes together (ingest's parse workers) while the
    block runs, sampled every 20 ms. The list of child processes is read every half second: reading it walks all of
    /proc, and doing that at every sample took a tenth of a core from what is measured."""

    SAMPLE_S = 0.02
    CHILDREN_EVERY = 25  # samples

    def __enter__(self) -> PeakRss:
        import threading

        import psutil

        self.process, self.peak_mb, self._stop = psutil.Process(), 0.0, threading.Event()
        self._children: list[Any] = []
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        samples = 0
        while not self._stop.is_set():
            if samples % self.CHILDREN_EVERY == 0:
                self._children = self.process.children(recursive=True)
            self.peak_mb = max(self.peak_mb, self._rss_mb())
            samples += 1
            self._stop.wait(self.SAMPLE_S)

    def _rss_mb(self) -> float:
        import psutil

        total = self.process.memory_info().rss
        for child in self._children:
            try:
                total += child.memory_info().rss
            except psutil.Error:  # it ended since the list was read
                pass
        return total / 2**20

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._children = self.process.children(recursive=True)
        self.peak_mb = max(self.peak_mb, self._rss_mb())


def release_memory() -> None:
    """Hand freed memory back to the OS between measurements, so one path's peak does not count against the next."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def matmul_peak_flops(dtype: str, size: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of a large matmul in `dtype` on this machine (the hardware's practical peak), CPU or GPU. Ask for the
    dtype the training path computes in: on a CPU without bf16 hardware (no AVX512-BF16/AMX) a bf16 matmul runs a
    scalar fallback thousands of times slower (0.3 GFLOP/s on a 2-core EPYC, where fp32 gives 175)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    size = size or (8192 if device == "cuda" else 2048)
    a = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(size, size, dtype=getattr(torch, dtype), device=device)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def matmul_params(model: Any) -> tuple[int, int]:
    """The weights a token meets in matmuls: the decoder's matrices (not its norms, nor the input embedding, a
    lookup) and the LM head's."""
    from roleforge.models.base import decoder_and_head

    decoder, head = decoder_and_head(model)
    matrices = sum(p.numel() for p in decoder.parameters() if p.dim() >= 2)
    return matrices - decoder.get_input_embeddings().weight.numel(), head.weight.numel()


def training_flops(body_params: int, head_params: int, tokens: float, head_tokens: float) -> float:
    """Model FLOPs of DPO training steps on a frozen base with LoRA: per token through the decoder, forward 2N and
    backward through the activations 2N over the decoder's matrices (no weight gradients); the LM head's 4 x vocab
    x hidden only for the positions it projects (the completions). Attention scores, padding and the LoRA matrices
    are not counted; the backward of the shared prefix's last layer, which autograd skips, is."""
    return 4 * body_params * tokens + 4 * head_params * head_tokens


TRL_RECIPE = {"dpo": {"beta": 0.1, "learning_rate": 5e-5, "per_device_train_batch_size": 4, "num_train_epochs": 1,
                      "logging_steps": 1, "save_strategy": "no", "seed": 0},
              "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                       "task_type": "CAUSAL_LM"}}


def dpo_benchmark(base_model: Path, pairs: int, epochs: float, repeats: int, held_out: int, work_dir: Path,
                  pairs_file: Path | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Stock TRL DPOTrainer (the TRL recipe: LoRA r16/alpha32 on q/k/v/o, beta 0.1, lr 5e-5, batch 4, bf16, TRL
    defaults otherwise) against roleforge's training path, same model, pairs and epochs, alternating order.
    `batch_size` replaces the recipe's 4 for both (an accelerator is underused by batches that small)."""
    import torch
    from transformers import PrinterCallback
    from trl import DPOConfig

    from roleforge.training.engines import roleforge_trainer, trl_trainer
    from roleforge.models.base import (attach_adapter, chat_prompts, compute_dtype, load_model, load_tokenizer,
                                         matmul_dtype, pooled_attention)
    from roleforge.config.recipes import bf16_supported, has_accelerator
    from roleforge.evaluation.scoring import completion_logps, score
    from roleforge.evaluation.tool_use import TOOL_AGENT_SYSTEM_PROMPT

    batch_size = batch_size or TRL_RECIPE["dpo"]["per_device_train_batch_size"]
    train, evaluation = load_pairs(pairs_file) if pairs_file else tool_use_pairs()
    train, evaluation = train[:pairs], evaluation[:held_out]
    tokenizer = load_tokenizer(base_model)
    # The peak in the dtype roleforge's path computes in, read before and after the runs, the higher kept: one
    # reading taken while the machine is briefly slower would overstate the MFU.
    peak_dtype = matmul_dtype()
    peak = matmul_peak_flops(peak_dtype)
    shape = load_model(base_model)
    n_params, (body_params, head_params) = sum(p.numel() for p in shape.parameters()), matmul_params(shape)
    del shape
    gpu = torch.cuda.is_available()

    def run(engine: str, index: int) -> dict[str, Any]:
        from peft import LoraConfig

        release_memory()
        output = work_dir / f"{engine}-{index}"
        # TRL keeps its default of activation checkpointing on; roleforge's path keeps activations where memory
        # allows (and turns checkpointing on by itself when a step runs out of accelerator memory).
        machine = {} if engine == "trl" else {"activation_checkpointing": False}
        args = DPOConfig(output_dir=str(output), report_to="none", disable_tqdm=True, use_cpu=not has_accelerator(),
                         bf16=bf16_supported(), remove_unused_columns=False, **machine,
                         **{**TRL_RECIPE["dpo"], "num_train_epochs": epochs, "per_device_train_batch_size": batch_size,
                            "seed": index})
        lora = LoraConfig(**TRL_RECIPE["lora"])
        if gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        with PeakRss() as memory:
            # Stock TRL gets the model as transformers loads it; roleforge's path gets it as the pipeline's model
            # pool loads it (bf16 where supported, the attention kernels of models.pooled_attention).
            base = (load_model(base_model, "float32") if engine == "trl"
                    else load_model(base_model, compute_dtype(), pooled_attention()))
            started = time.perf_counter()
            if engine == "trl":
                trainer = trl_trainer(base, args, lora, None, tokenizer, train, TOOL_AGENT_SYSTEM_PROMPT, [])
            else:
                trainer = roleforge_trainer(base, args, lora, None, tokenizer, train, TOOL_AGENT_SYSTEM_PROMPT, [],
                                            output / "reference_logps.json")
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            if gpu:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
        gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0
        adapter = output / "adapter"
        trainer.model.save_pretrained(str(adapter), selected_adapters=["default"])
        tokens, head_tokens = getattr(trainer, "tokens_seen", 0), getattr(trainer, "head_tokens_seen", 0)
        checkpointing_from = getattr(trainer, "checkpointing_since", None)
        del trainer, base
        release_memory()
        # Held-out: share of pairs whose implicit reward (log-ratio to the base) ranks chosen first.
        model = attach_adapter(load_model(base_model), adapter).eval()
        prompts = chat_prompts(tokenizer, TOOL_AGENT_SYSTEM_PROMPT, [p["prompt"] for p in evaluation])
        sides = [[p[side] + tokenizer.eos_token for p in evaluation] for side in ("chosen", "rejected")]
        policy = [completion_logps(model, tokenizer, prompts, s) for s in sides]
        with model.disable_adapter():
            reference = [completion_logps(model, tokenizer, prompts, s) for s in sides]
        accuracy = score(*policy, *reference).reward_accuracy
        del model
        return {"pairs_per_s": len(train) * epochs / seconds, "seconds": seconds, "accuracy": float(accuracy or 0.0),
                "peak_rss_mb": memory.peak_mb, "peak_gpu_mb": gpu_peak_mb, "tokens": float(tokens), "head_tokens": float(head_tokens),
                "checkpointing_from_step": checkpointing_from}

    results: dict[str, list[dict[str, Any]]] = {"trl": [], "roleforge": []}
    for index in range(repeats):
        for engine in (("trl", "roleforge") if index % 2 == 0 else ("roleforge", "trl")):
            results[engine].append(run(engine, index))
    torch.set_grad_enabled(True)
    peak = max(peak, matmul_peak_flops(peak_dtype))

    def best(engine: str, key: str) -> float:
        values = [r[key] for r in results[engine]]
        return max(values) if key == "pairs_per_s" else sum(values) / len(values)

    ours = max(results["roleforge"], key=lambda r: r["pairs_per_s"])
    achieved = training_flops(body_params, head_params, ours["tokens"], ours["head_tokens"]) / ours["seconds"]
    return {
        "pairs": len(train), "held_out_pairs": len(evaluation), "epochs": epochs, "repeats": repeats, "model_params": n_params,
        "batch_size": batch_size,
        "trl_pairs_per_s": round(best("trl", "pairs_per_s"), 3), "roleforge_pairs_per_s": round(best("roleforge", "pairs_per_s"), 3),
        "speedup": round(best("roleforge", "pairs_per_s") / best("trl", "pairs_per_s"), 2),
        "trl_heldout_accuracy": round(best("trl", "accuracy"), 4), "roleforge_heldout_accuracy": round(best("roleforge", "accuracy"), 4),
        # Repeat i trains both paths with seed i: each seed's held-out accuracy, and the means above.
        "trl_heldout_accuracy_by_seed": [round(r["accuracy"], 4) for r in results["trl"]],
        "roleforge_heldout_accuracy_by_seed": [round(r["accuracy"], 4) for r in results["roleforge"]],
        "base_dtype": {"trl": "float32", "roleforge": compute_dtype()},
        "trl_peak_rss_mb": round(max(r["peak_rss_mb"] for r in results["trl"]), 1),
        "roleforge_peak_rss_mb": round(max(r["peak_rss_mb"] for r in results["roleforge"]), 1),
        "matmul_peak_tflops": round(peak / 1e12, 3), "matmul_dtype": peak_dtype, "mfu": round(achieved / peak, 4),
        "roleforge_tokens_per_s": round(ours["tokens"] / ours["seconds"], 1),
        "roleforge_checkpointing_from_step": ours["checkpointing_from_step"],
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        **({"trl_peak_gpu_mb": round(max(r["peak_gpu_mb"] for r in results["trl"]), 1),
            "roleforge_peak_gpu_mb": round(max(r["peak_gpu_mb"] for r in results["roleforge"]), 1)} if gpu else {}),
        "runs": results,
    }


def generate_benchmark(base_model: Path, prompts: int, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """New tokens/s of greedy generation on held-out prompts: batched (batch_size prompts per call) vs one prompt at
    a time, on the same model and prompts, single first. The answers must be the same either way."""
    from roleforge.models.generation import generate_answers
    from roleforge.models.base import load_model, load_tokenizer
    from roleforge.config.settings import DEFAULT_ROLES

    questions = [row["prompt"] for row in feedback_rows(prompts * 3, seed=7)][::3][:prompts]
    system_prompt = DEFAULT_ROLES["ceo"].system_prompt
    model, tokenizer = load_model(base_model).eval(), load_tokenizer(base_model)
    generate_answers(model, tokenizer, system_prompt, questions[:2], 4, 2)  # warm-up: first-call allocations
    results = {}
    for name, size in (("single", 1), ("batched", batch_size)):
        counts: list[int] = []
        started = time.perf_counter()
        answers = generate_answers(model, tokenizer, system_prompt, questions, max_new_tokens, size, counts)
        seconds = time.perf_counter() - started
        results[name] = {"answers": answers, "tokens": sum(counts), "seconds": seconds}
    same = sum(a == b for a, b in zip(results["single"]["answers"], results["batched"]["answers"]))
    rate = {name: r["tokens"] / r["seconds"] for name, r in results.items()}
    return {
        "prompts": prompts, "max_new_tokens": max_new_tokens, "batch_size": batch_size,
        "single_new_tokens": results["single"]["tokens"], "batched_new_tokens": results["batched"]["tokens"],
        "single_seconds": round(results["single"]["seconds"], 2), "batched_seconds": round(results["batched"]["seconds"], 2),
        "single_new_tokens_per_s": round(rate["single"], 1), "batched_new_tokens_per_s": round(rate["batched"], 1),
        "speedup": round(rate["batched"] / rate["single"], 2), "same_answers": same,
    }


def cli_benchmark(repeats: int) -> dict[str, Any]:
    """Wall seconds of `roleforge --help` and `roleforge status`, each a fresh process as a user starts it, against
    the current ROLEFORGE_HOME: median and slowest of `repeats` runs (one unmeasured run first warms the disk cache)."""
    import statistics
    import subprocess
    import sys

    from roleforge.ops.errors import RoleforgeError

    command = [sys.executable, "-m", "roleforge.cli"]
    report: dict[str, Any] = {"repeats": repeats}
    for name, args in (("help", ["--help"]), ("status", ["status"])):
        seconds = []
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            done = subprocess.run(command + args, capture_output=True, text=True)
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise RoleforgeError(f"roleforge {' '.join(args)} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            if attempt:
                seconds.append(elapsed)
        report[f"{name}_seconds"] = round(statistics.median(seconds), 3)
        report[f"{name}_max_seconds"] = round(max(seconds), 3)
    return report
