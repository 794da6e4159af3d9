"""roleforge's DPO training path: the same objective as TRL's DPOTrainer, with the work a role's data makes redundant
taken out. It runs inside transformers' Trainer, so checkpoints, resume, schedulers, callbacks and logging are the
ones the rest of the pipeline relies on. This module holds the trainer and the reference pass; the pieces beside it:
dpo_batches.py (token ids, batches by length), sequence_logps.py (the forward paths), frozen_head.py (the vocabulary
head), losses.py, and roleforge/ops/memory.py (the heap kept between steps).

What it saves, each lever measured on its own with `roleforge bench dpo` (docs/perf-notes.md):
- the role's system prompt is the same for every pair: its keys and values are computed once per batch (with
  gradients, since the LoRA adapter changes them) and shared by every chosen and rejected sequence; on a CPU
  each pair's prompt also runs once for both of its completions, and the batch runs as one packed row without
  padding (packed_attention.py; on an accelerator a packed or second pass costs more kernel launches than the
  tokens it saves);
- the reference log-probabilities are computed once, before training, with the adapter off (or the SFT
  adapter on), in large no-grad batches, and cached next to the checkpoints;
- the vocabulary projection runs only at positions that predict a completion token;
- batches are built from pairs of similar length (sorted within random groups of four batches), so little is
  spent on padding;
- the frozen base is kept in bf16 on a GPU that has it, while the LoRA weights and the optimizer stay in fp32 (on a
  CPU it stays in fp32: roleforge/models/base.py, compute_dtype);
- the vocabulary logits are made a chunk at a time, their gradient in the same pass (the head is frozen);
- the memory a step frees stays in the process's heap for the next step (glibc returns it to the system by
  default, and every step faulted its pages in again);
- activations are kept rather than recomputed (no activation checkpointing) unless the recipe asks for it, or a
  step runs out of accelerator memory: that step is then retried, and the rest of the run made, with
  checkpointing on.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from roleforge.ops.memory import heap_kept
from roleforge.ops.progress import advance
from roleforge.training.dpo_batches import (
    TRAINING_GROUP_BATCHES,
    collate,
    length_buckets,
)
from roleforge.training.frozen_head import head_chunk
from roleforge.training.losses import dpo_losses
from roleforge.training.preemption import stop_if_shutdown
from roleforge.training.sequence_logps import logps_path, sequence_logps, tokens_through

log = logging.getLogger(__name__)


class SharedPrefixDPOTrainer(Trainer):
    """DPO on a PEFT model with the role's system prompt as a shared prefix; reference log-probs precomputed."""

    def __init__(self, *, prefix_ids: list[int], pad_id: int, loss_types: list[str], loss_weights: list[float],
                 beta: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = torch.tensor(prefix_ids, dtype=torch.long)
        self.pad_id, self.loss_types, self.loss_weights, self.beta = pad_id, loss_types, loss_weights, beta
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.tokens_seen = 0  # tokens through the model in training steps (the shared prefix once per batch)
        self.head_tokens_seen = 0  # positions projected to vocabulary logits in training steps (the completions')
        self.checkpointing_since: int | None = 0 if self.args.activation_checkpointing else None  # global step

    def training_step(self, model: Any, inputs: dict[str, torch.Tensor], num_items_in_batch: Any = None) -> torch.Tensor:
        """One step; if it runs out of accelerator memory without checkpointing, the gradients are put back as they
        were, checkpointing is turned on, and the step runs again."""
        if self.checkpointing_since is not None:
            return super().training_step(model, inputs, num_items_in_batch)
        trainable = [p for p in model.parameters() if p.requires_grad]
        saved = [None if p.grad is None else p.grad.clone() for p in trainable]
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        except torch.OutOfMemoryError:
            pass  # leave the except block first, so that the traceback's references to the step's tensors are freed
        for parameter, grad in zip(trainable, saved):
            parameter.grad = grad
        del saved
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.enable_checkpointing(model)
        log.warning("out of accelerator memory at step %d (batch of %d pairs): activation checkpointing on from here",
                    self.state.global_step, inputs["input_ids"].size(0) // 2)
        return super().training_step(model, inputs, num_items_in_batch)

    def enable_checkpointing(self, model: Any) -> None:
        """Recompute activations in the backward pass instead of keeping them (less memory, about a third slower)."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.checkpointing_since = self.state.global_step

    def train(self, *args: Any, **kwargs: Any) -> Any:
        with heap_kept():
            return super().train(*args, **kwargs)

    def get_train_dataloader(self) -> Any:
        from torch.utils.data import DataLoader

        examples = self.train_dataset
        batch_size = self.args.per_device_train_batch_size
        # One order for every epoch, so that a resumed run skips exactly the batches it had done.
        order = length_buckets(examples, batch_size, self.args.seed, TRAINING_GROUP_BATCHES)
        return DataLoader([examples[i] for i in order], batch_size=batch_size, shuffle=False,
                          collate_fn=lambda rows: collate(rows, self.pad_id))

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        sums, counts = sequence_logps(model, self.prefix.to(inputs["input_ids"].device), inputs)
        self.tokens_seen += tokens_through(inputs, self.prefix.numel(), logps_path(model, inputs))
        self.head_tokens_seen += int(counts.sum())
        chosen, rejected = sums.chunk(2)
        chosen_tokens, _ = counts.chunk(2)
        reference = (inputs["ref_chosen"].to(chosen.dtype), inputs["ref_rejected"].to(chosen.dtype))
        loss = dpo_losses(self.loss_types, self.loss_weights, self.beta, (chosen, rejected), reference, chosen_tokens).mean()
        with torch.no_grad():
            rewards_chosen = self.beta * (chosen - reference[0])
            rewards_rejected = self.beta * (rejected - reference[1])
            for key, value in (("rewards/chosen", rewards_chosen.mean()), ("rewards/rejected", rewards_rejected.mean()),
                               ("rewards/margins", (rewards_chosen - rewards_rejected).mean()),
                               ("rewards/accuracies", (rewards_chosen > rewards_rejected).float().mean()),
                               ("logps/chosen", chosen.mean()), ("logps/rejected", rejected.mean())):
                self._metrics[key].append(float(value))
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the reward metrics averaged since the last log, under TRL's names."""
        if "loss" in logs:
            logs.update({key: sum(values) / len(values) for key, values in self._metrics.items() if values})
            self._metrics.clear()
        super().log(logs, start_time)


@torch.no_grad()
def reference_logps(model: Any, prefix_ids: list[int], examples: list[dict[str, Any]], pad_id: int,
                    batch_size: int = 32, what: str = "reference log-probs") -> list[tuple[float, float]]:
    """(chosen, rejected) log-probs of every pair under the current model state (the reference), no grad; `what`
    names them in the progress lines."""
    from roleforge.models.base import inference_autocast

    prefix = torch.tensor(prefix_ids, dtype=torch.long, device=next(model.parameters()).device)
    order = length_buckets(examples, batch_size, 0)
    results: dict[int, tuple[float, float]] = {}
    was_training = model.training
    model.eval()
    with heap_kept():
        for start in range(0, len(order), batch_size):
            stop_if_shutdown("scoring the reference")
            rows = [examples[i] for i in order[start:start + batch_size]]
            batch = {k: v.to(prefix.device) for k, v in collate(rows, pad_id).items()}
            with inference_autocast():
                sums, _ = sequence_logps(model, prefix, batch)
            chosen, rejected = sums.float().chunk(2)
            for row, c, r in zip(rows, chosen.tolist(), rejected.tolist()):
                results[row["index"]] = (c, r)
            advance(len(results), len(order), what)
    model.train(was_training)
    return [results[e["index"]] for e in examples]


@torch.no_grad()
def set_chosen_soft_targets(model: Any, prefix_ids: list[int], examples: list[dict[str, Any]], top_k: int, pad_id: int,
                            batch_size: int = 8) -> None:
    """Give each example soft targets for its chosen completion: at every token, the current model's (the
    reference's) `top_k` likeliest next tokens and their probabilities, renormalized over those k. Trained on with
    them, a replayed answer teaches the reference's whole next-token distribution instead of its greedy token alone."""
    from roleforge.models.base import decoder_and_head, inference_autocast
    from roleforge.training.dpo_batches import pad_sequences, with_prefix

    decoder, head = decoder_and_head(model)
    device = next(model.parameters()).device
    prefix = torch.tensor(prefix_ids, dtype=torch.long)
    was_training = model.training
    model.eval()
    for start in range(0, len(examples), batch_size):
        stop_if_shutdown("distilling the replayed answers")
        rows = examples[start:start + batch_size]
        batch = pad_sequences([e["prompt_ids"] + e["chosen_ids"] for e in rows], [len(e["prompt_ids"]) for e in rows], pad_id)
        batch = {key: value.to(device) for key, value in (with_prefix(batch, prefix) if prefix.numel() else batch).items()}
        with inference_autocast():
            hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        picked = hidden[batch["targets"]]  # row by row, in order
        ids, weights, chunk = [], [], head_chunk(device)
        for first in range(0, picked.size(0), chunk):
            top = torch.log_softmax(head(picked[first:first + chunk]).float(), dim=-1).topk(top_k, dim=-1)
            probs = top.values.exp()
            ids.append(top.indices)
            weights.append(probs / probs.sum(-1, keepdim=True))
        ids_all, weights_all = torch.cat(ids).cpu(), torch.cat(weights).cpu()
        start_token = 0
        for row, count in zip(rows, batch["targets"].sum(1).tolist()):
            row["chosen_soft_ids"] = ids_all[start_token:start_token + count].tolist()
            row["chosen_soft_weights"] = weights_all[start_token:start_token + count].tolist()
            start_token += count
        advance(start + len(rows), len(examples), "replayed answers distilled")
    model.train(was_training)


def cached_reference(path: Path, key: str, compute: Any) -> list[tuple[float, float]]:
    """Reference log-probs from `path` when they were computed for the same key, else computed and stored."""
    import json

    try:
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return [tuple(v) for v in stored["logps"]]
    except (OSError, ValueError, KeyError):
        pass
    from roleforge.ops.files import write_atomic

    values = compute()
    write_atomic(path, json.dumps({"key": key, "logps": values}))
    return values
