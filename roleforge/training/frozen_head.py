"""Completion-token log-probabilities through the LM head, the vocabulary logits made a chunk at a time; for a
frozen head (the LoRA recipes' case) a custom autograd function makes their gradient in the forward pass."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# Positions projected onto the vocabulary at a time. On a CPU, 128 x a 49k vocabulary in fp32 is 25 MB, under
# glibc's largest mmap threshold, so the chunks' buffers are reused from the heap instead of being faulted in
# afresh every step; an accelerator takes larger chunks, since each one is a few more kernel launches.
CPU_HEAD_CHUNK, ACCELERATOR_HEAD_CHUNK = 128, 2048


def head_chunk(device: torch.device) -> int:
    """Positions projected onto the vocabulary at a time on this device."""
    return CPU_HEAD_CHUNK if device.type == "cpu" else ACCELERATOR_HEAD_CHUNK


def completion_token_logps(lm_head: Any, hidden: torch.Tensor, next_tokens: torch.Tensor,
                           chunk: int | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """log p(next token) at the given positions, the vocabulary logits made `chunk` positions at a time, so they are
    never all held at once. With `weights`, `next_tokens` holds k candidate tokens per position ([positions, k]) and
    the result is sum_j weights[:, j] * log p(next_tokens[:, j]): a soft target (replay.py's distilled answers). A
    frozen linear head (the LoRA recipes' case) takes the fused path, whose gradient is computed chunk by chunk in the
    forward pass; a head that trains or is adapted takes autograd's own."""
    chunk = chunk or head_chunk(hidden.device)
    if weights is None:
        next_tokens = next_tokens.unsqueeze(1)
    weight = getattr(lm_head, "weight", None)
    if type(lm_head) is torch.nn.Linear and lm_head.bias is None and not weight.requires_grad:
        return _FrozenHeadLogps.apply(hidden, weight, next_tokens, weights, chunk)
    parts = []
    for i in range(0, hidden.size(0), chunk):
        picked = torch.log_softmax(lm_head(hidden[i:i + chunk]).float(), dim=-1).gather(1, next_tokens[i:i + chunk])
        parts.append(picked.squeeze(1) if weights is None else (picked * weights[i:i + chunk]).sum(1))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


class _FrozenHeadLogps(torch.autograd.Function):
    """sum_j w_j log softmax(h W^T)[t_j] for a frozen W (one target of weight 1 when no weights are given). Its
    gradient with respect to h, (sum_j w_j onehot(t_j) - (sum_j w_j) softmax(h W^T)) W, needs the chunk's logits,
    which exist only in the forward pass: it is made there, one chunk at a time, and backward scales it by the
    incoming gradient. Autograd's way holds the logits, their log-softmax and the logits' gradient for every position
    at once (three [positions, vocabulary] fp32 tensors); the matmuls are the same two."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, next_tokens: torch.Tensor,
                weights: torch.Tensor | None, chunk: int) -> torch.Tensor:
        wants_grad = ctx.needs_input_grad[0]
        logps = torch.empty(hidden.size(0), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if wants_grad else None
        for start in range(0, hidden.size(0), chunk):
            rows = slice(start, start + chunk)
            logits = F.linear(hidden[rows], weight).float()
            tokens = next_tokens[rows]
            normalizer = torch.logsumexp(logits, dim=-1, keepdim=True)
            picked = logits.gather(1, tokens) - normalizer
            if weights is None:
                logps[rows] = picked.squeeze(1)
            else:
                logps[rows] = (picked * weights[rows]).sum(1)
            if wants_grad:  # d / d logits = sum_j w_j onehot(t_j) - (sum_j w_j) softmax; made in the logits' buffer
                probs = logits.sub_(normalizer).exp_()
                if weights is None:
                    probs.scatter_add_(1, tokens, probs.new_full(tokens.shape, -1.0))
                else:
                    probs.mul_(weights[rows].sum(1, keepdim=True)).scatter_add_(1, tokens, -weights[rows])
                grad[rows] = (probs.to(weight.dtype) @ weight).neg_()
        ctx.save_for_backward(grad)
        return logps

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        (grad,) = ctx.saved_tensors
        return grad * upstream.unsqueeze(1).to(grad.dtype), None, None, None, None
