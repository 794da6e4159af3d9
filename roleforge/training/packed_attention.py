"""Padding-free preference batches on a CPU: a batch's prompts and completions packed into one row of tokens.

In a padded batch every row is as long as its longest, and on the sample tool-use pairs a fifth of the tokens a
training step ran were padding; on a CPU the projections and MLP cost the same for a padding token as for a real
one. Packed, the batch is one row holding each pair's prompt once and both its completions after it, so a pair's
prompt is computed once for its chosen and rejected completion, in the same pass, and nothing is padded.

Only attention needs to know where each sequence starts: the packing hands the attention function, through a
context variable, which tokens each query attends to. Each prompt, and each completion, is one unit of a small
padded attention batch (the shared prefix's keys, its prompt's keys, its own keys before it), so attention costs
what it costs per row and never grows with the length of the packed row. The projections, norms and MLP run on the
packed tokens alone.

Models are loaded on a CPU with the attention implementation registered here (`models.pooled_attention`); outside
a packed call it is the model's own eager attention where gradients flow, and SDPA for generation and scoring.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

PACKED_ATTENTION = "roleforge_packed_eager"
ARCHITECTURES = ("llama",)  # model types whose attention is checked against full sequences (tests/test_fast_dpo.py)


@dataclass
class AttentionGroup:
    """Units of the same shape, attended together: `queries` [units, Tq] are positions in the packed row (the pad
    positions of a short unit repeat one of its tokens; their output is never read), `keys` [units, Tk] positions
    in the layer's keys (the prefix's, then the packed row's), `blocked` [units, 1, Tq, 1, Tk] what each query may
    not see."""
    queries: torch.Tensor
    keys: torch.Tensor
    blocked: torch.Tensor


@dataclass
class Packing:
    """One batch of pairs as a single row (prompts, then chosen completions, then rejected ones)."""
    input_ids: torch.Tensor  # [1, tokens]
    positions: torch.Tensor  # [1, tokens]: each token's position in its own full sequence (prefix, prompt, completion)
    groups: list[AttentionGroup]
    back: torch.Tensor  # [tokens]: where each packed token's output lies in the groups' outputs, flattened in order
    predictors: torch.Tensor  # [completion tokens]: the packed position whose hidden state predicts each one
    targets: torch.Tensor  # [completion tokens], row by row
    counts: torch.Tensor  # [rows]: completion tokens per row (chosen rows, then rejected rows)


_current: ContextVar[Packing | None] = ContextVar("roleforge_packing", default=None)


def _starts(lengths: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(lengths, 0) - lengths


def _unit_queries(starts: torch.Tensor, lengths: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed positions of each unit's tokens, [units, width], and which of them are real."""
    offsets = torch.arange(width)
    real = offsets < lengths.unsqueeze(1)
    return torch.where(real, starts.unsqueeze(1) + offsets, starts.unsqueeze(1)), real


def _causal(real: torch.Tensor) -> torch.Tensor:
    """[units, queries, keys]: each of a unit's tokens sees its real tokens up to itself (a pad query sees them all)."""
    step = torch.arange(real.size(1))
    return (step.view(1, 1, -1) <= step.view(1, -1, 1)) & real.unsqueeze(1)


def pack(batch: dict[str, torch.Tensor], prefix_tokens: int) -> Packing:
    """The packing of a collated batch of pairs (`prompt_ids`/`completion_ids` with their masks, right-padded)."""
    prompt_mask, completion_mask = batch["prompt_mask"].bool(), batch["completion_mask"].bool()
    pairs, rows = prompt_mask.size(0), completion_mask.size(0)
    prompt_lengths, completion_lengths = prompt_mask.sum(1), completion_mask.sum(1)
    pair_of_row = torch.arange(rows) % pairs
    prompt_tokens = int(prompt_lengths.sum())
    prompt_starts = _starts(prompt_lengths)
    completion_starts = prompt_tokens + _starts(completion_lengths)
    total = prompt_tokens + int(completion_lengths.sum())
    input_ids = torch.cat([batch["prompt_ids"][prompt_mask], batch["completion_ids"][completion_mask]])

    prompt_width, completion_width = int(prompt_lengths.max()), int(completion_lengths.max())
    prompt_queries, prompt_real = _unit_queries(prompt_starts, prompt_lengths, prompt_width)
    completion_queries, completion_real = _unit_queries(completion_starts, completion_lengths, completion_width)
    completion_queries = completion_queries.clamp(max=total - 1)  # a unit with no token at all points anywhere
    positions = torch.cat([
        (prefix_tokens + torch.arange(prompt_width)).expand(pairs, -1)[prompt_real],
        (prefix_tokens + prompt_lengths[pair_of_row].unsqueeze(1) + torch.arange(completion_width))[completion_real]])

    prefix = torch.arange(prefix_tokens)
    # A prompt sees the prefix and its own tokens up to itself.
    prompt_keys = torch.cat([prefix.expand(pairs, -1), prefix_tokens + prompt_queries], dim=1)
    prompt_allowed = torch.cat([torch.ones(pairs, prompt_width, prefix_tokens, dtype=torch.bool),
                                _causal(prompt_real)], dim=2)
    # A completion sees the prefix, its pair's whole prompt, and its own tokens up to itself.
    completion_keys = torch.cat([prefix.expand(rows, -1), prefix_tokens + prompt_queries[pair_of_row],
                                 prefix_tokens + completion_queries], dim=1)
    completion_allowed = torch.cat([
        torch.ones(rows, completion_width, prefix_tokens, dtype=torch.bool),
        prompt_real[pair_of_row].unsqueeze(1).expand(-1, completion_width, -1), _causal(completion_real)], dim=2)
    groups = [AttentionGroup(prompt_queries, prompt_keys, ~prompt_allowed.view(pairs, 1, prompt_width, 1, -1)),
              AttentionGroup(completion_queries, completion_keys,
                             ~completion_allowed.view(rows, 1, completion_width, 1, -1))]

    flat_prompt = torch.arange(pairs * prompt_width).view(pairs, prompt_width)[prompt_real]
    flat_completion = torch.arange(rows * completion_width).view(rows, completion_width)[completion_real]
    flat_completion += pairs * prompt_width
    # Completion token j is predicted by the hidden state before it: its prompt's last one for j = 0.
    previous = completion_queries - 1
    previous[:, 0] = (prompt_starts + prompt_lengths - 1)[pair_of_row]
    return Packing(input_ids=input_ids.unsqueeze(0), positions=positions.unsqueeze(0), groups=groups,
                   back=torch.cat([flat_prompt, flat_completion]), predictors=previous[completion_real],
                   targets=batch["completion_ids"][completion_mask], counts=completion_lengths)


@contextmanager
def packed(packing: Packing) -> Iterator[None]:
    """Attention calls inside attend along `packing`."""
    token = _current.set(packing)
    try:
        yield
    finally:
        _current.reset(token)


def packed_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers' attention interface: query [1, heads, tokens, dim], key and value [1, kv heads, prefix +
    tokens, dim]; returns [1, tokens, heads, dim]. Outside a packed call, the model's own eager attention, or SDPA
    where no gradient is asked for."""
    packing = _current.get()
    if packing is None:
        if not torch.is_grad_enabled():
            # Generation and scoring: one fused kernel per layer, where eager attention runs its matmuls, mask and
            # softmax apart (docs/perf-notes.md).
            return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                          **kwargs)
        eager = sys.modules[type(module).__module__].eager_attention_forward
        return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    heads, kv_heads, dim = query.size(1), key.size(1), query.size(-1)
    group_size = heads // kv_heads
    tokens = (query[0] * scaling).transpose(0, 1)  # [tokens, heads, dim]
    outputs = []
    for group in packing.groups:
        units, width = group.queries.shape
        # Query rows ordered (token, head within its kv group): each kv head's queries in one matmul, no key copies.
        # index_select, not indexing: its backward is index_add_, three times faster on a CPU than indexing's
        # accumulating index_put_ for these shapes.
        q = tokens.index_select(0, group.queries.flatten()).view(units, width, kv_heads, group_size, dim)
        q = q.transpose(1, 2).reshape(units, kv_heads, width * group_size, dim)
        keys = group.keys.flatten()
        k = key[0].index_select(1, keys).view(kv_heads, units, -1, dim).transpose(0, 1)  # [units, kv heads, keys, dim]
        v = value[0].index_select(1, keys).view(kv_heads, units, -1, dim).transpose(0, 1)
        scores = torch.matmul(q, k.transpose(-1, -2)).view(units, kv_heads, width, group_size, -1)
        scores = scores.masked_fill_(group.blocked, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
        out = torch.matmul(weights.view(units, kv_heads, width * group_size, -1), v)
        out = out.view(units, kv_heads, width, group_size, dim).transpose(1, 2)
        outputs.append(out.reshape(units * width, heads, dim))
    return torch.cat(outputs).index_select(0, packing.back).unsqueeze(0), None


def register() -> str:
    """Registers the packed attention with transformers (once) and returns its name, for `attn_implementation`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    return PACKED_ATTENTION


def supports(model: Any) -> bool:
    """Whether `model` (a decoder body) attends through the packed attention."""
    config = model.config
    return config._attn_implementation == PACKED_ATTENTION and config.model_type in ARCHITECTURES
