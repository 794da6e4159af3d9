"""The forward paths of roleforge's DPO engine: each row's summed completion log-probability, with the shared
prefix run once and, on a CPU, each pair's prompt once for both of its completions."""

from __future__ import annotations

from typing import Any

import torch

from roleforge.training.dpo_batches import with_prefix
from roleforge.training.frozen_head import completion_token_logps

# A batch's soft targets: (candidate token ids, their weights), [completion tokens, k] each; None for one-hot.
Soft = tuple[torch.Tensor, torch.Tensor] | None


def logps_path(model: Any, batch: dict[str, torch.Tensor]) -> str:
    """How sequence_logps runs a batch:
    - "checkpointed": prefix and prompt in front of every row (a checkpointed layer drops any KV cache);
    - "packed": on a CPU, with a model loaded with the packed attention (packed_attention.py): the batch's prompts
      and completions in one row with no padding, each pair's prompt once for both completions;
    - "shared_prompt": each pair's prompt once for both completions, on a CPU, where time goes with tokens, in two
      padded passes (models without the packed attention);
    - "rows": each row's prompt and completion in one pass after the shared prefix, on an accelerator, where a
      second pass per layer costs more in kernel launches than the prompt tokens it saves (docs/perf-notes.md)."""
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
    # Soft targets (collate's soft_ids/soft_weights) come in the order every path gives its tokens: row by row.
    soft = (batch["soft_ids"], batch["soft_weights"]) if "soft_ids" in batch else None
    if path == "checkpointed":
        if prefix is not None and prefix.numel():
            batch = with_prefix(batch, prefix)
        return _row_logps(decoder, lm_head, None, batch, soft)
    if path == "packed":
        return _packed_logps(decoder, lm_head, prefix, batch, soft)
    if path == "shared_prompt":
        return _shared_prompt_logps(decoder, lm_head, prefix, batch, soft)
    return _row_logps(decoder, lm_head, prefix, batch, soft)


def _prefix_cache(decoder: Any, prefix: torch.Tensor | None, rows: int) -> Any:
    """The prefix's keys and values, computed once and viewed as `rows` rows; None without a prefix."""
    from transformers import DynamicCache

    if prefix is None or not prefix.numel():
        return None
    prefix_cache = decoder(input_ids=prefix.unsqueeze(0), use_cache=True).past_key_values
    return DynamicCache(ddp_cache_data=[(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1))
                                        for keys, values, *_ in prefix_cache])


def _row_logps(decoder: Any, lm_head: Any, prefix: torch.Tensor | None, batch: dict[str, torch.Tensor],
               soft: Soft = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's prompt and completion through the decoder after the shared prefix."""
    input_ids, attention = batch["input_ids"], batch["attention_mask"]
    rows = input_ids.size(0)
    cache = _prefix_cache(decoder, prefix, rows)
    if cache is not None:
        attention = torch.cat([attention.new_ones(rows, prefix.numel()), attention], dim=1)
    hidden = decoder(input_ids=input_ids, attention_mask=attention, past_key_values=cache, use_cache=cache is not None).last_hidden_state
    targets = batch["targets"]  # never set on a row's last position: each target has a next token
    next_tokens = input_ids[:, 1:][targets[:, :-1]]
    return _summed(lm_head, hidden[targets], next_tokens, targets.sum(dim=1), soft)


def _packed_logps(decoder: Any, lm_head: Any, prefix: torch.Tensor | None, batch: dict[str, torch.Tensor],
                  soft: Soft = None) -> tuple[torch.Tensor, torch.Tensor]:
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
    return _summed(lm_head, hidden[0, packing.predictors], packing.targets, packing.counts, soft)


def _shared_prompt_logps(decoder: Any, lm_head: Any, prefix: torch.Tensor | None, batch: dict[str, torch.Tensor],
                         soft: Soft = None) -> tuple[torch.Tensor, torch.Tensor]:
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
    return _summed(lm_head, predicting[targets], completion_ids[targets], targets.sum(dim=1), soft)


def _summed(lm_head: Any, hidden: torch.Tensor, next_tokens: torch.Tensor, counts: torch.Tensor,
            soft: Soft = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the sum of its tokens' log-probs (the tokens given row by row, in order) and their count; with
    `soft`, each token's weighted log-probs of its soft target's candidates instead."""
    if soft is None:
        token_logps = completion_token_logps(lm_head, hidden, next_tokens)
    else:
        ids, weights = (tensor.to(hidden.device) for tensor in soft)
        if ids.size(0) != next_tokens.size(0):
            raise ValueError(f"{ids.size(0)} soft targets for {next_tokens.size(0)} completion tokens")
        token_logps = completion_token_logps(lm_head, hidden, ids, weights=weights)
    row_of_token = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    sums = torch.zeros(counts.numel(), dtype=token_logps.dtype, device=token_logps.device).index_add(0, row_of_token, token_logps)
    return sums, counts
