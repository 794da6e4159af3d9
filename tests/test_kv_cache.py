"""The in-place KV cache of batched decoding (roleforge/models/kv_cache.py) gives what transformers' own cache gives,
through growth past its first room and rows leaving the batch; the pool's attention decodes as plain SDPA does."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from roleforge.models import kv_cache
from roleforge.models.base import load_model, load_tokenizer, pooled_attention
from roleforge.models.generation import generate_answers


def _decode(model, cache, ids, steps, leave_at):
    """Greedy steps from a prompt batch; at step `leave_at` the first row leaves. The logits of every step."""
    mask = torch.ones_like(ids)
    logits = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True).logits[:, -1]
    seen = [logits]
    for step in range(steps):
        tokens = logits.argmax(-1)
        if step == leave_at:
            keep = torch.arange(1, tokens.size(0))
            cache.batch_select_indices(keep)
            mask, tokens = mask[keep], tokens[keep]
        mask = torch.cat([mask, mask.new_ones(mask.size(0), 1)], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, past_key_values=cache, use_cache=True,
                       cache_position=torch.tensor([mask.size(1) - 1])).logits[:, -1]
        seen.append(logits)
    return seen


def test_growing_cache_decodes_as_the_dynamic_cache(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(kv_cache, "FIRST_ROOM", 3)  # so that the buffers grow twice within the steps
    model = load_model(tiny_model_dir).eval()
    ids = torch.randint(5, 200, (3, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _decode(model, DynamicCache(), ids, steps=20, leave_at=4)
        cache = kv_cache.GrowingCache()
        got = _decode(model, cache, ids, steps=20, leave_at=4)
    for step, (a, b) in enumerate(zip(expected, got)):
        torch.testing.assert_close(b, a, msg=f"step {step}")
    assert cache.get_seq_length() == 6 + 20
    assert cache.layers[0]._keys.shape[-2] > 2 * 6  # grown past its first room (6 tokens + 3, at least doubled)


def test_pool_attention_generates_as_sdpa(tiny_model_dir):
    """The pool's models (packed attention in training) answer with SDPA when no gradient is asked for."""
    tokenizer = load_tokenizer(tiny_model_dir)
    prompts = ["plan the quarter", "hire or wait", "cash for two years"]
    pooled = generate_answers(load_model(tiny_model_dir, attention=pooled_attention()).eval(), tokenizer, "You are the CFO.",
                              prompts, 12, batch_size=3)
    plain = generate_answers(load_model(tiny_model_dir, attention="sdpa").eval(), tokenizer, "You are the CFO.",
                             prompts, 12, batch_size=3)
    assert pooled == plain
