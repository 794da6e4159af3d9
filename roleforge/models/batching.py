"""Batched generation in which each row may use its own adapter (PEFT's mixed adapter batches), stop on its own
(end of sequence, a stop string, its own token limit) and stream as it goes. Serving and evaluation share it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from roleforge.ops.progress import advance

if TYPE_CHECKING:
    from roleforge.models.multilora import MultiLoRA

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


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
    """One generate call for every request (all with the same sampling), filling in text, tokens and finish reason.
    Rows are left-padded, so each row's greedy answer is the one it would get alone. Each row's adapter is taken
    from `lora` when given (the model then carries its layers), else from the PEFT model's mixed batches."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer([r.prompt for r in requests], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(model.device)
    finally:
        tokenizer.padding_side = side
    for request, length in zip(requests, batch["attention_mask"].sum(dim=1).tolist()):
        request.prompt_tokens = int(length)
    streamer = RowStreamer(tokenizer, requests, eos_ids)

    class RowsDone(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.tensor(streamer.done, dtype=torch.bool, device=input_ids.device)

    temperature, top_p = requests[0].sampling
    options: dict[str, Any] = {"do_sample": False} if temperature <= 0 else {
        "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    selection: Any = nullcontext()
    if lora is not None:
        selection = lora.rows([r.adapter for r in requests])
    elif hasattr(model, "peft_config"):
        options["adapter_names"] = [r.adapter or BASE for r in requests]
    elif any(r.adapter for r in requests):
        raise ValueError("a request names an adapter but the model has none attached")
    with torch.no_grad(), selection:
        model.generate(**batch, max_new_tokens=max(r.max_new_tokens for r in requests), streamer=streamer,
                       stopping_criteria=StoppingCriteriaList([RowsDone()]), pad_token_id=tokenizer.pad_token_id, **options)
    streamer.end()


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
        advance(start + len(chunk), len(ordered), "answers")  # a stage's progress (evaluation); serving has none


class RowStreamer:
    """Receives each decoding step's tokens for the whole batch (transformers' streamer protocol) and keeps every row
    apart: its text so far, its own stop, and its streamed deltas. A delta is held back while it could still be the
    start of a stop string or an unfinished UTF-8 character."""

    def __init__(self, tokenizer: Any, requests: list[Request], eos_ids: set[int]) -> None:
        self.tokenizer, self.requests, self.eos_ids = tokenizer, requests, eos_ids
        self.done = [False] * len(requests)
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate first hands over the prompt ids
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            request = self.requests[row]
            if token in self.eos_ids:
                self._finish(row, "stop")
                continue
            request._ids.append(token)
            request.completion_tokens += 1
            text = self.tokenizer.decode(request._ids, skip_special_tokens=True)
            cut = _first_stop(text, request.stop)
            if cut is not None:
                request.text = text[:cut]
                self._finish(row, "stop", complete=True)
                continue
            request.text = text
            if request.completion_tokens >= request.max_new_tokens:
                self._finish(row, "length")
            else:
                self._emit(request, _safe_end(text, request.stop))

    def end(self) -> None:
        for row in range(len(self.requests)):
            if not self.done[row]:
                self._finish(row, "length")

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
