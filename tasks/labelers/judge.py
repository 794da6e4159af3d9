"""Teacher judges: a model compares two responses, asked in both orders to cancel position bias.

`LocalJudge` reads the log-probabilities of "A" and "B" from a local Hugging Face causal LM (the default base model
works offline); `HttpJudge` asks any OpenAI-compatible chat endpoint (Azure AI Foundry, vLLM, ...). Either way a
pair is made only when both orders agree and the verdict is clear of the abstain band; a verdict that could not be
had or parsed is skipped and counted, never turned into a pair.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from roleforge.tasks.labelers import Comparison, LabelResult, comparisons

JUDGE_PROMPT = (
    "Two assistants answered the same request while playing this role:\n{system}\n\nRequest: {prompt}\n\n"
    "Answer A:\n{a}\n\nAnswer B:\n{b}\n\nWhich answer serves the role better? Reply with the single letter A or B."
)
VERDICT = re.compile(r"^\W*(A|B)\b")


class Judge(Protocol):
    name: str

    def prefer_a(self, system_prompt: str, items: Sequence[tuple[str, str, str]]) -> list[float | str]:
        """For each (prompt, a, b): the probability that A is better, or a reason why there is no verdict."""


def judge_message(system_prompt: str, prompt: str, a: str, b: str) -> str:
    return JUDGE_PROMPT.format(system=system_prompt, prompt=prompt, a=a, b=b)


@dataclass
class LocalJudge:
    """P(A better) = softmax over the next-token logits of "A" and "B" after the judge prompt.

    `model` is a loaded causal LM, or a model directory: then each call borrows the process's generating copy of
    that model from the pool (roleforge/models/base.py) instead of keeping a copy of its own for the process's life.
    """

    model: Any
    tokenizer: Any
    batch_size: int = 8
    name: str = "local_judge"

    def prefer_a(self, system_prompt: str, items: Sequence[tuple[str, str, str]]) -> list[float | str]:
        import torch

        from roleforge.models.base import decoder_and_head, inference_autocast

        letters = [self.tokenizer.encode(letter, add_special_tokens=False)[0] for letter in ("A", "B")]
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": judge_message(system_prompt, *item)}],
                                                    tokenize=False, add_generation_prompt=True) for item in items]
        results: list[float | str] = []
        self.tokenizer.padding_side = "right"
        with self._borrowed() as model:
            decoder, lm_head = decoder_and_head(model)
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                       add_special_tokens=False).to(model.device)
                last = batch["attention_mask"].sum(dim=1) - 1
                with torch.no_grad(), inference_autocast():
                    hidden = decoder(**batch).last_hidden_state[torch.arange(len(last)), last]
                    pair_logits = lm_head(hidden)[:, letters].float()  # only the next-token logits are needed
                results.extend(torch.softmax(pair_logits, dim=-1)[:, 0].tolist())
        return results

    @property
    def dtype(self) -> str:
        """The weights' dtype the verdicts come from (part of a kept calibration's key)."""
        if isinstance(self.model, Path):
            from roleforge.models.base import inference_dtype

            return inference_dtype()
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")

    def _borrowed(self) -> AbstractContextManager[Any]:
        if not isinstance(self.model, Path):
            return nullcontext(self.model)
        from roleforge.models.base import BASE_MODELS, inference_dtype

        return BASE_MODELS.lend(self.model, dtype=inference_dtype())


@dataclass
class HttpJudge:
    """An OpenAI-compatible /chat/completions endpoint; a hard A/B answer counts as probability 1 or 0."""

    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5
    concurrency: int = 4
    name: str = "http_judge"

    def _ask(self, client: Any, message: str) -> float | str:
        import httpx

        payload = {"model": self.model, "temperature": 0, "max_tokens": 2,
                   "messages": [{"role": "user", "content": message}]}
        reason = "no answer"
        for attempt in range(self.retries + 1):
            try:
                response = client.post("/chat/completions", json=payload)
                if response.status_code in (429, 500, 502, 503, 504):
                    reason = f"http {response.status_code}"
                else:
                    response.raise_for_status()
                    content = response.json()["choices"][0]["message"]["content"]
                    match = VERDICT.match(content or "")
                    return (1.0 if match.group(1) == "A" else 0.0) if match else "unparseable answer"
            except (httpx.TransportError, httpx.HTTPStatusError) as error:
                reason = f"{type(error).__name__}"
            except (ValueError, KeyError, IndexError, TypeError):
                return "unparseable answer"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt * (1 + random.random()))
        return reason

    def prefer_a(self, system_prompt: str, items: Sequence[tuple[str, str, str]]) -> list[float | str]:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        with httpx.Client(base_url=self.url.rstrip("/"), headers=headers, timeout=self.timeout_s) as client, \
                ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda item: self._ask(client, judge_message(system_prompt, *item)), items))


def combine(forward: float | str, backward: float | str, abstain_margin: float) -> tuple[bool, float] | str:
    """Merge the verdicts of both orders: (first wins, confidence), or the reason there is no pair."""
    if isinstance(forward, str) or isinstance(backward, str):
        return forward if isinstance(forward, str) else backward  # type: ignore[return-value]
    first_forward, first_backward = forward, 1.0 - backward
    if (first_forward > 0.5) != (first_backward > 0.5):
        return "abstain: the two orders disagree"
    mean = (first_forward + first_backward) / 2
    if abs(mean - 0.5) < abstain_margin:
        return "abstain: too close to call"
    return mean > 0.5, max(mean, 1.0 - mean)


@dataclass
class JudgeLabeler:
    """Lets a judge rank the response pairs humans left undecided."""

    judge: Judge
    system_prompt: str
    min_gap: int = 2
    max_comparisons: int = 64
    abstain_margin: float = 0.1
    batch_size: int = 16

    @property
    def name(self) -> str:
        return self.judge.name

    def label(self, rows: list[dict[str, Any]]) -> LabelResult:
        from tqdm.auto import tqdm

        todo = sorted(comparisons(rows, self.min_gap, include_ab=False), key=lambda c: (c.prompt, c.first, c.second))
        todo = todo[: self.max_comparisons]
        result = LabelResult()
        with tqdm(total=len(todo), desc=f"{self.judge.name}", unit="pair", disable=not todo, leave=False) as progress:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start:start + self.batch_size]
                verdicts = self.judge.prefer_a(self.system_prompt, [(c.prompt, c.first, c.second) for c in batch] +
                                               [(c.prompt, c.second, c.first) for c in batch])
                for comparison, forward, backward in zip(batch, verdicts[: len(batch)], verdicts[len(batch):]):
                    self._add(result, comparison, combine(forward, backward, self.abstain_margin))
                progress.update(len(batch))
        return result

    def _add(self, result: LabelResult, comparison: Comparison, verdict: tuple[bool, float] | str) -> None:
        if isinstance(verdict, str):
            if verdict.startswith("abstain"):
                result.abstained += 1
            else:
                result.skipped[verdict] += 1
            return
        first_wins, confidence = verdict
        result.pairs.append(comparison.pair(first_wins, "teacher", self.judge.name, confidence))
