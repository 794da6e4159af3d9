"""Replay: the base model's own answers to general prompts, trained on beside a role's pairs, so that an adapter
learns the role's answer shape for the role's questions and keeps the base model's answers everywhere else.

Each replay pair holds a general prompt, the base model's greedy answer as chosen, and one of the role's preferred
answers (written for another prompt) as rejected: the SFT term keeps the base's answer likely, and the DPO term
says that the role's shape is wrong for a question outside the role. An answer cut off at the token limit is kept
as an open one (`chosen_open`): trained on without an end-of-sequence token, it keeps the base's words likely
without teaching a stop mid-sentence."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

REPLAY_SOURCE = "replay"


def general_prompts(split: str = "replay", path: Path | None = None) -> list[str]:
    """The bundled general prompts of one split: "replay" (trained on) or "drift" (a fifth, by hash, kept apart to
    measure how far a candidate drifts from the base). Never the retained-capability questions the gate asks."""
    from roleforge.sample import GENERAL_PROMPTS

    lines = (path or GENERAL_PROMPTS).read_text(encoding="utf-8").splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines if line.strip()]
    digests = {p: int(hashlib.sha256(p.encode()).hexdigest(), 16) for p in prompts}
    # In hash order: a mix of kinds in any prefix, the same order every night.
    return sorted((p for p in prompts if (digests[p] % 5 == 0) == (split == "drift")), key=digests.__getitem__)


def reference_answers(model: Any, tokenizer: Any, system_prompt: str, prompts: list[str], max_new_tokens: int,
                      cache_dir: Path | None, identity: str) -> dict[str, str]:
    """The model's greedy answer to each prompt under the role's system prompt, kept in `cache_dir` by the model's
    identity, the system prompt and the prompts: a reference model's answers never change, so they are made once."""
    from roleforge.models.generation import generate_answers
    from roleforge.ops.files import write_atomic

    key = hashlib.sha256(json.dumps([identity, system_prompt, prompts, max_new_tokens]).encode()).hexdigest()[:32]
    cached = cache_dir / f"{key}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            return json.loads(cached.read_text(encoding="utf-8"))
        except ValueError:
            pass  # unreadable: made again below
    answers = generate_answers(model, tokenizer, system_prompt, prompts, max_new_tokens, batch_size=64)
    found = dict(zip(prompts, answers))
    if cached is not None:
        write_atomic(cached, json.dumps(found, ensure_ascii=False))
    return found


def finished(answers: dict[str, str], tokenizer: Any, max_new_tokens: int) -> set[str]:
    """The prompts whose answer ended before max_new_tokens; the others were cut off mid-answer."""
    return {prompt for prompt, answer in answers.items()
            if len(tokenizer(answer, add_special_tokens=False)["input_ids"]) < max_new_tokens - 1}


def replay_pairs(answers: dict[str, str], role_pairs: list[dict[str, Any]], count: int, seed: int,
                 complete: set[str] | None = None) -> list[dict[str, Any]]:
    """Up to `count` replay pairs: a general prompt, the base's answer as chosen, a role-shaped answer as rejected.
    An answer whose prompt is not in `complete` (None: all are) is marked `chosen_open`; empty answers are skipped."""
    if count <= 0 or not answers or not role_pairs:
        return []
    rng = random.Random(seed)
    prompts = sorted(prompt for prompt, answer in answers.items() if answer.strip())
    rng.shuffle(prompts)
    shaped = sorted({pair["chosen"] for pair in role_pairs})
    pairs = []
    for prompt in prompts[:count]:
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:16]
        pair = {"prompt": prompt, "chosen": answers[prompt], "rejected": rejected_for(prompt, shaped),
                "pair_id": f"{REPLAY_SOURCE}-{digest}", "source": REPLAY_SOURCE}
        if complete is not None and prompt not in complete:
            pair["chosen_open"] = True
        pairs.append(pair)
    return pairs


def rejected_for(prompt: str, shaped: list[str]) -> str:
    """The role-shaped answer a replayed prompt is paired with: the one whose hash with the prompt is least. A night
    whose role pairs changed in part keeps most prompts' pick, and so their kept reference log-probs
    (reference_store.py); a draw from the whole list would pick anew whenever the list changed."""
    return min(shaped, key=lambda answer: hashlib.sha256(f"{prompt}\0{answer}".encode()).digest())
