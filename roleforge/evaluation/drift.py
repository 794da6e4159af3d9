"""Logit drift: how far an adapter moves the model's next-token distributions away from the base model's on general
prompts, read on the base model's own answers. A cheap, continuous signal of forgetting, beside the capability set."""

from __future__ import annotations

from typing import Any


def mean_token_kl(model: Any, tokenizer: Any, system_prompt: str, prompts: list[str], answers: list[str],
                  adapter: str, reference: str | None = None, batch_size: int = 8) -> float:
    """Mean over answer tokens of KL(reference || model with `adapter` active), in nats per token, teacher-forced on
    the reference's answers. `model` is a PeftModel holding `adapter` (and `reference`, if given: a role's SFT
    adapter); without `reference` the reference is the same model with adapters off."""
    from contextlib import nullcontext

    import torch
    import torch.nn.functional as F

    from roleforge.models.base import chat_prompts, inference_autocast
    from roleforge.training.dpo_batches import pad_sequences

    texts = chat_prompts(tokenizer, system_prompt, prompts)
    total, tokens = 0.0, 0
    for start in range(0, len(texts), batch_size):
        prompt_ids = tokenizer(texts[start:start + batch_size], add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer([a + tokenizer.eos_token for a in answers[start:start + batch_size]],
                               add_special_tokens=False)["input_ids"]
        batch = pad_sequences([p + a for p, a in zip(prompt_ids, answer_ids)], [len(p) for p in prompt_ids],
                              tokenizer.pad_token_id)
        batch = {key: value.to(model.device) for key, value in batch.items()}
        mask = batch.pop("targets")  # the positions that predict an answer token
        with torch.no_grad(), inference_autocast():
            if reference is not None:
                model.set_adapter(reference)
            with model.disable_adapter() if reference is None else nullcontext():
                base = model(**batch).logits[mask].float()
            model.set_adapter(adapter)
            tuned = model(**batch).logits[mask].float()
        total += float(F.kl_div(F.log_softmax(tuned, -1), F.log_softmax(base, -1), log_target=True, reduction="sum"))
        tokens += int(mask.sum())
    return total / max(tokens, 1)
