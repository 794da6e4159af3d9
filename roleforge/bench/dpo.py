"""`roleforge bench dpo`: stock TRL DPOTrainer against roleforge's training path, same model, pairs and epochs; the
pairs it trains on (`roleforge bench pairs`), model shapes with random weights, and the MFU arithmetic."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from roleforge.bench.common import PeakRss


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
    from roleforge.config.settings import DEFAULT_ROLES, TeacherConfig
    from roleforge.sample import SAMPLE_FEEDBACK
    from roleforge.storage.snapshots import split_of
    from roleforge.tasks.label import label_rows, labelers_for

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


def matmul_peak_flops(dtype: str, size: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of a large matmul in `dtype` on this machine (the hardware's practical peak), CPU or GPU. Ask for the
    dtype the training path computes in: on a CPU without bf16 hardware (no AVX512-BF16/AMX) a bf16 matmul runs a
    scalar fallback thousands of times slower (docs/perf-notes.md, MFU on a CPU without bf16 hardware)."""
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

    from roleforge.config.recipes import bf16_supported, has_accelerator
    from roleforge.evaluation.scoring import completion_logps, score
    from roleforge.evaluation.tool_use import TOOL_AGENT_SYSTEM_PROMPT
    from roleforge.models.base import (
        attach_adapter,
        chat_prompts,
        compute_dtype,
        load_model,
        load_tokenizer,
        matmul_dtype,
        pooled_attention,
    )
    from roleforge.ops.memory import release_memory
    from roleforge.training.engines import roleforge_trainer, trl_trainer

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
