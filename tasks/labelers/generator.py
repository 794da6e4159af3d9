"""Generated labels for tool-use roles: from one good tool call, several typical bad answers to reject.

A role can bootstrap from a handful of good examples: each compliant response (rated 4+ or preferred in an
A/B choice) yields pairs against a refusal, prose without JSON, malformed JSON and a call to the wrong tool.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from roleforge.data_contracts.preference import PreferencePair
from roleforge.tasks.labelers import LabelResult, preferred
from roleforge.tasks.tool_use import TOOLS, check_tool_use, parse_action

FAILURE_MODES = ("refusal", "prose", "malformed_json", "wrong_tool")


def rejected_variant(prompt: str, chosen: str, mode: str) -> str:
    """A plausible wrong answer to prompt of the given failure mode, derived from the good answer."""
    action = parse_action(chosen) or {"tool": "search", "args": {}}
    thought = chosen.split("\n", 1)[0]
    args = ", ".join(f"{k}={v}" for k, v in action["args"].items())
    if mode == "refusal":
        return "I'm sorry, but I can't help with that request."
    if mode == "prose":
        return f"Sure! To handle \"{prompt.strip()}\" I would use the {action['tool']} with {args or 'the details you gave'}."
    if mode == "malformed_json":
        return f"{thought}\nAction:\n```json\n{{'tool': '{action['tool']}', 'args': {action['args']}\n```"
    if mode == "wrong_tool":
        wrong = TOOLS[(TOOLS.index(action["tool"]) + 1) % len(TOOLS)] if action["tool"] in TOOLS else TOOLS[0]
        return f"{thought}\nAction:\n```json\n{json.dumps({'tool': wrong, 'args': action['args']})}\n```"
    raise ValueError(f"unknown failure mode {mode!r}")


@dataclass
class RejectedResponseGenerator:
    modes: tuple[str, ...] = FAILURE_MODES
    per_response: int = 2  # failure modes per good response, picked by a hash so reruns pick the same ones
    name: str = "rejected_generator"
    confidence: float = 0.9

    def label(self, rows: list[dict[str, Any]]) -> LabelResult:
        result = LabelResult()
        seen: set[tuple[str, str]] = set()
        for row, response in _good_tool_calls(rows):
            if (row["prompt"], response) in seen:
                continue
            seen.add((row["prompt"], response))
            start = int(hashlib.sha256(f"{row['prompt']}\x00{response}".encode()).hexdigest()[:8], 16)
            for offset in range(min(self.per_response, len(self.modes))):
                mode = self.modes[(start + offset) % len(self.modes)]
                result.pairs.append(PreferencePair(
                    role=row["agent_role"], prompt=row["prompt"], chosen=response,
                    rejected=rejected_variant(row["prompt"], response, mode), source="generated",
                    labeler=f"{self.name}:{mode}", confidence=self.confidence, feedback_ids=(row["id"],), rater=row["rater"]))
        return result


def _good_tool_calls(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    good = []
    for row in rows:
        if row["kind"] == "rating" and row["rating"] >= 4:
            response = row["response"]
        elif row["kind"] == "ab":
            response = preferred(row)[0]
        else:
            continue
        if check_tool_use(response).compliant():
            good.append((row, response))
    return good
