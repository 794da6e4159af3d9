"""Batched generation in which each row may use its own adapter (roleforge/models/multilora.py), stop on its own
(end of sequence, a stop string, its own token limit) and stream as it goes. Serving and evaluation share it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from roleforge.ops.memory import trim_heap
from roleforge.ops.progress import advance
from roleforge.training.preemption import stop_if_shutdown

if TYPE_CHECKING:
    from roleforge.models.multilora import MultiLoRA


@dataclass
class Request:
    """One answer to generate, and what came of it."""

    prompt: str  # in the model's chat template, ready for the answer
    max_new_tokens: int
    adapter: str | None = None  # an attached adapter's name; None: the base model
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    on_text: Callable[[str], None] | None = None  # streamed text deltas, called from the generating thread
    text: str = ""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _ids: list[int] = field(default_factory=list, repr=False)
    _sent: int = 0

    @property
    def sampling(self) -> tuple[float, float]:
        """Requests batch together only when they decode the same way."""
        return (0.0, 1.0) if self.temperature <= 0 else (round(self.temperature, 4), round(self.top_p, 4))


def end_ids(model: Any, tokenizer: Any) -> set[int]:
    """The token ids that end an answer: the generation config's and the tokenizer's end of sequence."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    ids.discard(None)
    return ids


def generate_batch(model: Any, tokenizer: Any, requests: list[Request], eos_ids: set[int],
                   lora: MultiLoRA | None = None) -> None:
    """Answers every request (all with the same sampling) in one batch, filling in text, tokens and finish reason.

    Each row goes through the adapter `lora` attaches under its name (None: the base model). The prompts' common
    token prefix (the system prompt, in evaluation) is computed once for the batch; a finished row leaves the batch
    at once, so the others' steps no longer pay for it. Rows are left-padded and positioned by their own tokens, so a
    row's greedy answer is the one it gets alone. Decoding is greedy, or temperature and top-p sampling: other
    processors a base model's generation config may name (repetition penalty, ...) are not applied.
    """
    import torch

    if lora is None and any(r.adapter for r in requests):
        raise ValueError("a request names an adapter but no adapters are attached")
    ids = [tokenizer(r.prompt, add_special_tokens=False)["input_ids"] for r in requests]
    for request, row in zip(requests, ids):
        request.prompt_tokens = len(row)
    rows = RowStreamer(tokenizer, requests, eos_ids)
    live = list(range(len(requests)))  # the rows still generating, in batch order
    temperature, top_p = requests[0].sampling
    adapters = [r.adapter for r in requests]
    with torch.no_grad(), lora.rows(adapters) if lora is not None else nullcontext():
        cache, mask, logits = _prefill(model, ids, tokenizer.pad_token_id, adapters, lora)
        while True:
            stop_if_shutdown("generating answers")
            tokens = _pick(logits, temperature, top_p).tolist()
            for row, token in zip(live, tokens):
                rows.take(row, token)
            kept = [i for i, row in enumerate(live) if not rows.done[row]]
            if not kept:
                break
            if len(kept) < len(live):
                index = torch.tensor(kept, device=mask.device)
                cache.batch_select_indices(index)
                mask, live, tokens = mask[index], [live[i] for i in kept], [tokens[i] for i in kept]
                if lora is not None:
                    lora.select([adapters[row] for row in live])
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            logits = model(input_ids=torch.tensor(tokens, device=mask.device)[:, None], attention_mask=mask,
                           position_ids=mask.sum(dim=1, keepdim=True) - 1, past_key_values=cache, use_cache=True,
                           cache_position=torch.tensor([mask.shape[1] - 1], device=mask.device)).logits[:, -1]


def _prefill(model: Any, ids: list[list[int]], pad_id: int, adapters: list[str | None],
             lora: MultiLoRA | None) -> tuple[Any, Any, Any]:
    """The KV cache of every prompt, its attention mask, and each row's next-token logits. The common prefix runs
    once per adapter (an adapter changes its keys and values) and is shared; each row's own tokens follow it,
    left-padded to the longest."""
    import torch
    from roleforge.models.kv_cache import GrowingCache

    shared = 0
    while shared < min(len(row) for row in ids) - 1 and len({row[shared] for row in ids}) == 1:
        shared += 1
    device, cache = model.device, GrowingCache()
    if shared < 8 or len(ids) == 1:  # too little to share: one pass over the whole prompts
        shared = 0
    else:
        distinct = list(dict.fromkeys(adapters))
        if lora is not None:
            lora.select(distinct)
        model(input_ids=torch.tensor([ids[0][:shared]] * len(distinct), device=device), past_key_values=cache, use_cache=True,
              logits_to_keep=1)  # only the cache is wanted: no vocabulary projection of every prefix position
        cache.batch_select_indices(torch.tensor([distinct.index(a) for a in adapters], device=device))
        if lora is not None:
            lora.select(adapters)
    own = [row[shared:] for row in ids]
    width = max(len(row) for row in own)
    tokens = torch.tensor([[pad_id] * (width - len(row)) + row for row in own], device=device)
    mask = torch.tensor([[1] * shared + [0] * (width - len(row)) + [1] * len(row) for row in own], device=device)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, shared:]
    logits = model(input_ids=tokens, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                   cache_position=torch.arange(shared, shared + width, device=device), logits_to_keep=1).logits[:, -1]
    return cache, mask, logits


def _pick(logits: Any, temperature: float, top_p: float) -> Any:
    """The next token of each row: the most likely one, or a sample at `temperature` from the smallest set of tokens
    whose probability reaches top_p."""
    import torch

    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    ordered, order = probs.sort(dim=-1, descending=True)
    ordered[(ordered.cumsum(dim=-1) - ordered) >= top_p] = 0  # the top token always stays
    return order.gather(-1, torch.multinomial(ordered, 1)).squeeze(-1)


def generate_all(model: Any, tokenizer: Any, requests: list[Request], batch_size: int,
                 lora: MultiLoRA | None = None) -> None:
    """Every request answered in batches of batch_size, any mix of adapters per batch. Requests are grouped by
    sampling, token limit and prompt length first, so that a batch's rows pad and run for about as long."""
    eos_ids = end_ids(model, tokenizer)
    ordered = sorted(requests, key=lambda r: (r.sampling, r.max_new_tokens, len(r.prompt)))
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start:start + batch_size]
        for key in dict.fromkeys(r.sampling for r in chunk):
            generate_batch(model, tokenizer, [r for r in chunk if r.sampling == key], eos_ids, lora)
        # A batch's KV caches grow a step at a time and are freed at its end: the heap hands them back rather than
        # keep them, scattered between what stays, for batches whose shapes differ (docs/perf-notes.md).
        trim_heap()
        advance(start + len(chunk), len(ordered), "answers")  # a stage's progress (evaluation); serving has none


class RowStreamer:
    """Each row's tokens as they come, kept apart: its text so far, its own stop, and its streamed deltas. A delta is
    held back while it could still be the start of a stop string or an unfinished UTF-8 character."""

    def __init__(self, tokenizer: Any, requests: list[Request], eos_ids: set[int]) -> None:
        self.tokenizer, self.requests, self.eos_ids = tokenizer, requests, eos_ids
        self.done = [False] * len(requests)

    def take(self, row: int, token: int) -> None:
        """The row's next token; the row is done once it ends, meets a stop string or reaches its limit."""
        if self.done[row]:
            return
        request = self.requests[row]
        if token in self.eos_ids:
            self._finish(row, "stop")
            return
        request._ids.append(token)
        request.completion_tokens += 1
        text = self.tokenizer.decode(request._ids, skip_special_tokens=True)
        cut = _first_stop(text, request.stop)
        if cut is not None:
            request.text = text[:cut]
            self._finish(row, "stop", complete=True)
            return
        request.text = text
        if request.completion_tokens >= request.max_new_tokens:
            self._finish(row, "length")
        else:
            self._emit(request, _safe_end(text, request.stop))

    def _finish(self, row: int, reason: str, complete: bool = False) -> None:
        """complete: the text ends where a stop string began, not in the middle of a character."""
        request = self.requests[row]
        self.done[row] = True
        request.finish_reason = reason
        if not complete:
            request.text = request.text.rstrip("\ufffd")
        self._emit(request, len(request.text))

    @staticmethod
    def _emit(request: Request, upto: int) -> None:
        if upto > request._sent:
            delta, request._sent = request.text[request._sent:upto], upto
            if request.on_text is not None:
                request.on_text(delta)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return min(found) if found else None


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of text can be sent: not a trailing partial character, nor a tail that may begin a stop string."""
    end = len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[end - size:end] == stop[:size]:
                end -= size
                break
    return end
