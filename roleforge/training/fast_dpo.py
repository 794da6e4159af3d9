"""roleforge's DPO training path: the same objective as TRL's DPOTrainer, with the work a role's data makes redundant
taken out. It runs inside transformers' Trainer, so checkpoints, resume, schedulers, callbacks and logging are the
ones the rest of the pipeline relies on.

What it saves, measured one lever at a time with `roleforge bench dpo` (see docs/perf-notes.md):
- the role's system prompt is the same for every pair: its keys and values are computed once per batch (with
  gradients, since the LoRA adapter changes them) and shared by every chosen and rejected sequence; on a CPU
  each pair's prompt also runs once for both of its completions, and the batch runs as one packed row without
  padding (roleforge/training/packed_attention.py; on an accelerator a packed or second pass costs more kernel launches than
  the tokens it saves);
- the reference log-probabilities are computed once, before training, with the adapter off (or the SFT
  adapter on), in large no-grad batches, and cached next to the checkpoints;
- the vocabulary projection runs only at positions that predict a completion token;
- batches are built from pairs of similar length (sorted within random groups of four batches), so little is
  spent on padding;
- the frozen base is kept in bf16 on a GPU that has it, while the LoRA weights and the optimizer stay in fp32 (on a
  CPU it stays in fp32: models.compute_dtype);
- the vocabulary logits are made a chunk at a time, their gradient in the same pass (the head is frozen);
- the memory a step frees stays in the process's heap for the next step (glibc returns it to the system by
  default, and every step faulted its pages in again);
- activations are kept rather than recomputed (no activation checkpointing) unless the recipe asks for it, or a
  step runs out of accelerator memory: that step is then retried, and the rest of the run made, with
  checkpointing on.
"""

from __future__ import annotations

import ctypes
import logging
import random
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from roleforge.ops.errors import RoleforgeError

SUPPORTED_LOSSES = ("sigmoid", "sft", "ipo", "hinge")
log = logging.getLogger(__name__)


def split_chat(tokenizer: Any, system_prompt: str, user_prompt: str) -> tuple[str, str]:
    """The chat prompt as (system part, rest): the system part is shared by all pairs of a role."""
    system = tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}], tokenize=False)
    full = tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}, {"role": "user", "content": user_prompt}],
                                         tokenize=False, add_generation_prompt=True)
    if not full.startswith(system):  # a template that rewrites the system turn: share nothing
        return "", full
    return system, full[len(system):]


def tokenize_pairs(tokenizer: Any, system_prompt: str, pairs: list[dict[str, Any]], max_length: int) -> tuple[list[int], list[dict[str, Any]]]:
    """The shared prefix ids and, per pair, the prompt-rest ids with the chosen and rejected completion ids."""
    prefix_text, _ = split_chat(tokenizer, system_prompt, "x")
    prefix = tokenizer(prefix_text, add_special_tokens=False)["input_ids"] if prefix_text else []
    budget = max(max_length - len(prefix), 8)
    examples = []
    for index, pair in enumerate(pairs):
        _, rest = split_chat(tokenizer, system_prompt, pair["prompt"])
        prompt_ids = tokenizer(rest, add_special_tokens=False)["input_ids"]
        completions = [tokenizer(pair[side] + tokenizer.eos_token, add_special_tokens=False)["input_ids"] for side in ("chosen", "rejected")]
        # Keep the start (the prompt and the first completion tokens), as TRL's keep_start does.
        prompt_ids = prompt_ids[: max(budget - 1, 1)]
        completions = [ids[: max(budget - len(prompt_ids), 1)] for ids in completions]
        examples.append({"index": index, "prompt_ids": prompt_ids, "chosen_ids": completions[0], "rejected_ids": completions[1]})
    return prefix, examples


# Batches per length group in training order: pairs are sorted by length only within groups this large.
TRAINING_GROUP_BATCHES = 4


def length_buckets(examples: list[dict[str, Any]], batch_size: int, seed: int,
                   group_batches: int | None = None) -> list[int]:
    """An order of examples in which each batch holds pairs of similar length.

    With `group_batches`, the pairs are shuffled and cut into groups of that many batches, each sorted by length
    (transformers' group_by_length does the same with groups of 50): padding stays low and each batch stays a fair
    sample of the data. Sorting all the pairs at once (None, right for the no-grad reference pass) puts alike pairs
    together, and training on such batches cost held-out accuracy: `roleforge bench dpo --pairs 64 --held-out 146`
    gave 0.884 sorted at once, 0.911 in groups of 4 batches, 0.918 unsorted (TRL: 0.904), at 1.22, 1.25 and 0.97
    pairs/s (docs/perf-notes.md)."""
    rng = random.Random(seed)

    def length(index: int) -> int:
        example = examples[index]
        return len(example["prompt_ids"]) + max(len(example["chosen_ids"]), len(example["rejected_ids"]))

    order = list(range(len(examples)))
    rng.shuffle(order)  # ties in length in a random order
    group = len(order) if group_batches is None else group_batches * batch_size
    return [index for start in range(0, len(order), group) for index in sorted(order[start:start + group], key=length)]


def pad_sequences(sequences: list[list[int]], prompt_lengths: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded rows; `targets` marks the positions whose next token belongs to the completion (the only
    positions projected onto the vocabulary)."""
    width = max(map(len, sequences))
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    targets = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, (sequence, prompt_length) in enumerate(zip(sequences, prompt_lengths)):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention[row, : len(sequence)] = 1
        targets[row, max(prompt_length - 1, 0): len(sequence) - 1] = True
    return {"input_ids": input_ids, "attention_mask": attention, "targets": targets}


def collate(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows [chosen..., rejected...] of prompt-rest + completion, with the reference log-probs when known; and the
    same pairs split for sharing each prompt between its two completions: `prompt_ids` (one row per pair) and
    `completion_ids` (chosen rows, then rejected rows), each right-padded with its mask."""
    sequences = [e["prompt_ids"] + e[side] for side in ("chosen_ids", "rejected_ids") for e in examples]
    batch = pad_sequences(sequences, [len(e["prompt_ids"]) for e in examples] * 2, pad_id)
    if all(e["prompt_ids"] for e in examples):  # each first completion token is predicted from its prompt's end
        prompts = pad_sequences([e["prompt_ids"] for e in examples], [0] * len(examples), pad_id)
        completions = pad_sequences([e[side] for side in ("chosen_ids", "rejected_ids") for e in examples],
                                    [0] * 2 * len(examples), pad_id)
        batch.update(prompt_ids=prompts["input_ids"], prompt_mask=prompts["attention_mask"],
                     completion_ids=completions["input_ids"], completion_mask=completions["attention_mask"])
    batch["index"] = torch.tensor([e["index"] for e in examples])
    if "ref_chosen" in examples[0]:
        batch["ref_chosen"] = torch.tensor([e["ref_chosen"] for e in examples])
        batch["ref_rejected"] = torch.tensor([e["ref_rejected"] for e in examples])
    return batch


def logps_path(model: Any, batch: dict[str, torch.Tensor]) -> str:
    """How sequence_logps runs a batch:
    - "checkpointed": prefix and prompt in front of every row (a checkpointed layer drops any KV cache);
    - "packed": on a CPU, with a model loaded with the packed attention (roleforge/training/packed_attention.py): the batch's
      prompts and completions in one row with no padding, each pair's prompt once for both completions;
    - "shared_prompt": each pair's prompt once for both completions, on a CPU, where time goes with tokens (17%
      fewer tokens on the sample tool-use pairs), in two padded passes (models without the packed attention);
    - "rows": each row's prompt and completion in one pass after the shared prefix, on an accelerator, where a
      second pass per layer costs more in kernel launches than the prompt tokens it saves (H100, 1.7B shape:
      64.7 vs 77.1 pairs/s at batch 64, 8.3 vs 11.1 at batch 4; docs/perf-notes.md)."""
    from roleforge.models.base import decoder_and_head

    from roleforge.training.packed_attention import supports

    decoder, _ = decoder_and_head(model)
    if decoder.training and decoder.is_activation_checkpointing:
        return "checkpointed"
    if "completion_ids" in batch and batch["completion_ids"].device.type == "cpu":
        return "packed" if supports(decoder) else "shared_prompt"
    return "rows"


def tokens_through(batch: dict[str, torch.Tensor], prefix_tokens: int, path: str) -> int:
    """Tokens one pass of sequence_logps runs through the decoder for this batch along `path` (see logps_path)."""
    if path == "checkpointed":
        return prefix_tokens * batch["input_ids"].size(0) + int(batch["attention_mask"].sum())
    if path in ("packed", "shared_prompt"):
        return prefix_tokens + int(batch["prompt_mask"].sum()) + int(batch["completion_mask"].sum())
    return prefix_tokens + int(batch["attention_mask"].sum())


def sequence_logps(model: Any, prefix: torch.Tensor | None, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed log-probability of its completion tokens and their count. The prefix runs once and its
    keys/values are shared by every row; on a CPU each pair's prompt also runs once for its chosen and rejected
    completions (gradients flow back through both caches)."""
    from roleforge.models.base import decoder_and_head

    decoder, lm_head = decoder_and_head(model)
    path = logps_path(model, batch)
    if path == "checkpointed":
        if prefix is not None and prefix.numel():
            batch = with_prefix(batch, prefix)
        return _row_logps(decoder, lm_head, None, batch)
    if path == "packed":
        return _packed_logps(decoder, lm_head, prefix, batch)
    if path == "shared_prompt":
        return _shared_prompt_logps(decoder, lm_head, prefix, batch)
    return _row_logps(decoder, lm_head, prefix, batch)


def _prefix_cache(decoder: Any, prefix: torch.Tensor | None, rows: int) -> Any:
    """The prefix's keys and values, computed once and viewed as `rows` rows; None without a prefix."""
    from transformers import DynamicCache

    if prefix is None or not prefix.numel():
        return None
    prefix_cache = decoder(input_ids=prefix.unsqueeze(0), use_cache=True).past_key_values
    return DynamicCache(ddp_cache_data=[(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1))
                                        for keys, values, *_ in prefix_cache])


def _row_logps(decoder: Any, lm_head: Any, prefix: torch.Tensor | None, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's prompt and completion through the decoder after the shared prefix."""
    input_ids, attention = batch["input_ids"], batch["attention_mask"]
    rows = input_ids.size(0)
    cache = _prefix_cache(decoder, prefix, rows)
    if cache is not None:
        attention = torch.cat([attention.new_ones(rows, prefix.numel()), attention], dim=1)
    hidden = decoder(input_ids=input_ids, attention_mask=attention, past_key_values=cache, use_cache=cache is not None).last_hidden_state
    targets = batch["targets"]  # never set on a row's last position: each target has a next token
    next_tokens = input_ids[:, 1:][targets[:, :-1]]
    return _summed(lm_head, hidden[targets], next_tokens, targets.sum(dim=1))


def _packed_logps(decoder: Any, lm_head: Any, prefix: torch.Tensor | None, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's prompts and completions in one row without padding, after the prefix's keys and values."""
    from roleforge.training.packed_attention import pack, packed

    prefix_tokens = 0 if prefix is None else prefix.numel()
    packing = pack({key: value.cpu() for key, value in batch.items()}, prefix_tokens)
    cache = _prefix_cache(decoder, prefix, 1)
    # A prepared 4D mask is passed through untouched: the packed attention masks by itself.
    placeholder = torch.zeros(1, 1, 1, 1, dtype=torch.bool)
    with packed(packing):
        hidden = decoder(input_ids=packing.input_ids, attention_mask=placeholder, position_ids=packing.positions,
                         past_key_values=cache, use_cache=cache is not None).last_hidden_state
    return _summed(lm_head, hidden[0, packing.predictors], packing.targets, packing.counts)


def _shared_prompt_logps(decoder: Any, lm_head: Any, prefix: torch.Tensor | None, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts run once per pair (after the prefix); the chosen and rejected completions continue from a copy
    of their pair's keys and values, at the positions they have in the full sequence."""
    from transformers import DynamicCache

    prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
    completion_ids, completion_mask = batch["completion_ids"], batch["completion_mask"]
    pairs, prefix_tokens = prompt_ids.size(0), 0 if prefix is None else prefix.numel()
    cache = _prefix_cache(decoder, prefix, pairs)
    attention = prompt_mask if cache is None else torch.cat([prompt_mask.new_ones(pairs, prefix_tokens), prompt_mask], dim=1)
    prompt_pass = decoder(input_ids=prompt_ids, attention_mask=attention, past_key_values=cache, use_cache=True)
    pair_of_row = torch.arange(pairs, device=prompt_ids.device).repeat(2)
    cache = DynamicCache(ddp_cache_data=[(keys[pair_of_row], values[pair_of_row])
                                         for keys, values, *_ in prompt_pass.past_key_values])
    prompt_lengths = prompt_mask.sum(dim=1)
    positions = (prefix_tokens + prompt_lengths[pair_of_row]).unsqueeze(1) + torch.arange(
        completion_ids.size(1), device=completion_ids.device)
    attention = torch.cat([attention[pair_of_row], completion_mask], dim=1)
    hidden = decoder(input_ids=completion_ids, attention_mask=attention, past_key_values=cache, position_ids=positions,
                     use_cache=True).last_hidden_state
    # Completion token j is predicted by the hidden state before it: the prompt's last one for j = 0.
    last_prompt = prompt_pass.last_hidden_state[torch.arange(pairs, device=prompt_ids.device), prompt_lengths - 1]
    predicting = torch.cat([last_prompt[pair_of_row].unsqueeze(1), hidden[:, :-1]], dim=1)
    targets = completion_mask.bool()
    return _summed(lm_head, predicting[targets], completion_ids[targets], targets.sum(dim=1))


def _summed(lm_head: Any, hidden: torch.Tensor, next_tokens: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the sum of its tokens' log-probs (the tokens given row by row, in order) and their count."""
    token_logps = completion_token_logps(lm_head, hidden, next_tokens)
    row_of_token = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    sums = torch.zeros(counts.numel(), dtype=token_logps.dtype, device=token_logps.device).index_add(0, row_of_token, token_logps)
    return sums, counts


def with_prefix(batch: dict[str, torch.Tensor], prefix: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch with the prefix written in front of every row (the same positions the shared KV cache gives)."""
    rows, width = batch["input_ids"].size(0), prefix.numel()
    return {**batch,
            "input_ids": torch.cat([prefix.unsqueeze(0).expand(rows, -1), batch["input_ids"]], dim=1),
            "attention_mask": torch.cat([batch["attention_mask"].new_ones(rows, width), batch["attention_mask"]], dim=1),
            "targets": torch.cat([batch["targets"].new_zeros(rows, width), batch["targets"]], dim=1)}


# Positions projected onto the vocabulary at a time. On a CPU, 128 x a 49k vocabulary in fp32 is 25 MB, under
# glibc's largest mmap threshold, so the chunks' buffers are reused from the heap instead of being faulted in
# afresh every step; an accelerator takes larger chunks, since each one is a few more kernel launches.
CPU_HEAD_CHUNK, ACCELERATOR_HEAD_CHUNK = 128, 2048


def completion_token_logps(lm_head: Any, hidden: torch.Tensor, next_tokens: torch.Tensor,
                           chunk: int | None = None) -> torch.Tensor:
    """log p(next token) at the given positions, the vocabulary logits made `chunk` positions at a time, so they are
    never all held at once. A frozen linear head (the LoRA recipes' case) takes the fused path, whose gradient is
    computed chunk by chunk in the forward pass; a head that trains or is adapted takes autograd's own."""
    chunk = chunk or (CPU_HEAD_CHUNK if hidden.device.type == "cpu" else ACCELERATOR_HEAD_CHUNK)
    weight = getattr(lm_head, "weight", None)
    if type(lm_head) is torch.nn.Linear and lm_head.bias is None and not weight.requires_grad:
        return _FrozenHeadLogps.apply(hidden, weight, next_tokens, chunk)
    parts = [torch.log_softmax(lm_head(hidden[i:i + chunk]).float(), dim=-1).gather(1, next_tokens[i:i + chunk].unsqueeze(1)).squeeze(1)
             for i in range(0, hidden.size(0), chunk)]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


class _FrozenHeadLogps(torch.autograd.Function):
    """log softmax(h W^T)[t] for a frozen W. Its gradient with respect to h, (onehot(t) - softmax(h W^T)) W, needs
    the chunk's logits, which exist only in the forward pass: it is made there, one chunk at a time, and backward
    scales it by the incoming gradient. Autograd's way holds the logits, their log-softmax and the logits' gradient
    for every position at once (three [positions, vocabulary] fp32 tensors); the matmuls are the same two."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, next_tokens: torch.Tensor, chunk: int) -> torch.Tensor:
        wants_grad = ctx.needs_input_grad[0]
        logps = torch.empty(hidden.size(0), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if wants_grad else None
        for start in range(0, hidden.size(0), chunk):
            rows = slice(start, start + chunk)
            logits = F.linear(hidden[rows], weight).float()
            tokens = next_tokens[rows].unsqueeze(1)
            normalizer = torch.logsumexp(logits, dim=-1, keepdim=True)
            logps[rows] = (logits.gather(1, tokens) - normalizer).squeeze(1)
            if wants_grad:  # d logp / d logits = onehot - softmax; made in place in the logits' buffer
                probs = logits.sub_(normalizer).exp_()
                probs.scatter_add_(1, tokens, probs.new_full(tokens.shape, -1.0))
                grad[rows] = (probs.to(weight.dtype) @ weight).neg_()
        ctx.save_for_backward(grad)
        return logps

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (grad,) = ctx.saved_tensors
        return grad * upstream.unsqueeze(1).to(grad.dtype), None, None, None


def dpo_losses(loss_types: list[str], weights: list[float], beta: float, policy: tuple[torch.Tensor, torch.Tensor],
               reference: tuple[torch.Tensor, torch.Tensor], chosen_tokens: torch.Tensor) -> torch.Tensor:
    """The weighted loss mix, per pair, with TRL's definitions (sft: mean NLL of the chosen completion tokens)."""
    chosen, rejected = policy
    logits = (chosen - reference[0]) - (rejected - reference[1])
    total = torch.zeros_like(chosen)
    for loss_type, weight in zip(loss_types, weights):
        if loss_type == "sigmoid":
            loss = -F.logsigmoid(beta * logits)
        elif loss_type == "hinge":
            loss = torch.relu(1 - beta * logits)
        elif loss_type == "ipo":
            loss = (logits - 1 / (2 * beta)) ** 2
        else:  # sft
            loss = (-chosen.sum() / chosen_tokens.sum().clamp(min=1)).expand_as(chosen)
        total = total + weight * loss
    return total


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
LARGEST_MMAP_THRESHOLD = 32 * 2**20  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit systems


def glibc() -> Any:
    """The process's C library when it is glibc (the allocator heap_kept tunes), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


@contextmanager
def heap_kept() -> Iterator[None]:
    """Keep the memory a training step frees in the heap, for the next step. By default glibc hands buffers above a
    threshold (128 KiB, raised as large ones are freed, to at most 32 MiB) to mmap and returns the heap's free top to
    the system past twice that, so each step's activations were faulted in, zeroed by the kernel, afresh: 32 pairs
    of SmolLM2-135M took 1.5-2.4M page faults and 9-11 s of system CPU. Inside, every buffer up to 32 MiB comes from
    the heap and the heap is not trimmed. On leaving, glibc gets the thresholds its own adjustment reaches in a
    process that has freed 32 MiB buffers (any training has), and the free memory is handed back."""
    libc = glibc()
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, LARGEST_MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        libc.mallopt(M_TRIM_THRESHOLD, 2 * LARGEST_MMAP_THRESHOLD)
        libc.malloc_trim(0)


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


def check_losses(dpo: dict[str, Any]) -> tuple[list[str], list[float]]:
    losses = dpo.get("loss_type", ["sigmoid"])
    losses = [losses] if isinstance(losses, str) else list(losses)
    unsupported = [loss for loss in losses if loss not in SUPPORTED_LOSSES]
    if unsupported:
        raise RoleforgeError(f"bad training recipe: loss_type {unsupported} is not supported by the roleforge engine "
                             f"(use {', '.join(SUPPORTED_LOSSES)}, or training.engine = \"trl\")")
    return losses, list(dpo.get("loss_weights") or [1.0] * len(losses))


@torch.no_grad()
def reference_logps(model: Any, prefix_ids: list[int], examples: list[dict[str, Any]], pad_id: int,
                    batch_size: int = 32) -> list[tuple[float, float]]:
    """(chosen, rejected) log-probs of every pair under the current model state (the reference), no grad."""
    from roleforge.models.base import inference_autocast

    prefix = torch.tensor(prefix_ids, dtype=torch.long, device=next(model.parameters()).device)
    order = length_buckets(examples, batch_size, 0)
    results: dict[int, tuple[float, float]] = {}
    was_training = model.training
    model.eval()
    with heap_kept():
        for start in range(0, len(order), batch_size):
            rows = [examples[i] for i in order[start:start + batch_size]]
            batch = {k: v.to(prefix.device) for k, v in collate(rows, pad_id).items()}
            with inference_autocast():
                sums, _ = sequence_logps(model, prefix, batch)
            chosen, rejected = sums.float().chunk(2)
            for row, c, r in zip(rows, chosen.tolist(), rejected.tolist()):
                results[row["index"]] = (c, r)
    model.train(was_training)
    return [results[e["index"]] for e in examples]


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

