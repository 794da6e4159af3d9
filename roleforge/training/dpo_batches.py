"""A role's preference pairs as token ids and batches for roleforge's DPO engine: the system prompt split off as
the prefix every pair shares, pairs batched by length, rows padded with the masks the forward paths need."""

from __future__ import annotations

import random
from typing import Any

import torch


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
        # An open side (an answer cut off at a token limit, training/replay.py) gets no end-of-sequence token.
        completions = [tokenizer(pair[side] + ("" if pair.get(f"{side}_open") else tokenizer.eos_token), add_special_tokens=False)["input_ids"]
                       for side in ("chosen", "rejected")]
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
    together, and training on such batches cost held-out accuracy (docs/perf-notes.md, Batch order)."""
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
    if any("chosen_soft_ids" in e for e in examples):
        batch["soft_ids"], batch["soft_weights"] = soft_targets(examples)
    if "ref_chosen" in examples[0]:
        batch["ref_chosen"] = torch.tensor([e["ref_chosen"] for e in examples])
        batch["ref_rejected"] = torch.tensor([e["ref_rejected"] for e in examples])
    return batch


def soft_targets(examples: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every completion token's target as (k candidate ids, their weights), in the order the forward paths give the
    tokens (chosen rows, then rejected rows, each in order): a chosen completion's own soft targets where it has them
    (`chosen_soft_ids`/`chosen_soft_weights`), else its token with weight 1."""
    k = max(len(e["chosen_soft_ids"][0]) for e in examples if e.get("chosen_soft_ids"))
    ids, weights = [], []
    for side in ("chosen", "rejected"):
        for e in examples:
            if side == "chosen" and e.get("chosen_soft_ids"):
                ids += [row + [0] * (k - len(row)) for row in e["chosen_soft_ids"]]
                weights += [row + [0.0] * (k - len(row)) for row in e["chosen_soft_weights"]]
            else:
                ids += [[token] + [0] * (k - 1) for token in e[f"{side}_ids"]]
                weights += [[1.0] + [0.0] * (k - 1) for _ in e[f"{side}_ids"]]
    return torch.tensor(ids, dtype=torch.long), torch.tensor(weights, dtype=torch.float32)


def with_prefix(batch: dict[str, torch.Tensor], prefix: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch with the prefix written in front of every row (the same positions the shared KV cache gives)."""
    rows, width = batch["input_ids"].size(0), prefix.numel()
    return {**batch,
            "input_ids": torch.cat([prefix.unsqueeze(0).expand(rows, -1), batch["input_ids"]], dim=1),
            "attention_mask": torch.cat([batch["attention_mask"].new_ones(rows, width), batch["attention_mask"]], dim=1),
            "targets": torch.cat([batch["targets"].new_zeros(rows, width), batch["targets"]], dim=1)}
