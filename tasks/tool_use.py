"""The tool-use answer format: a `Thought:` line, then `Action:` and a ```json block with a known tool call."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

TOOLS = ("calculator", "search", "calendar")
# The system prompt of the tool-agent role (sample data, training, evaluation): the format checked below.
TOOL_AGENT_SYSTEM_PROMPT = (
    "You are a tool-using agent. Tools: calculator (args: expression), search (args: query), "
    "calendar (args: action, title, date, time). Answer every request with one line that starts with "
    '"Thought:", then a line "Action:", then a ```json block holding {"tool": ..., "args": {...}}.'
)
JSON_BLOCK = re.compile(r"```json\s*\n(.*?)\n?```", re.DOTALL)


@dataclass(frozen=True)
class ToolUseCheck:
    """What an answer gets right about the format, from the weakest requirement to full compliance."""

    thought: bool  # the answer starts with a `Thought:` line
    json_valid: bool  # an `Action:` followed by a ```json block holding an object with `tool` and `args`
    tool: str | None  # the tool it calls, when the JSON is valid
    known_tool: bool

    def compliant(self, expected_tool: str | None = None) -> bool:
        return self.thought and self.json_valid and self.known_tool and (expected_tool is None or self.tool == expected_tool)


def parse_action(text: str) -> dict[str, Any] | None:
    """The JSON action after `Action:`, or None when there is none or it does not parse."""
    _, found, after = text.partition("Action:")
    match = JSON_BLOCK.search(after) if found else None
    if match is None:
        return None
    try:
        action = json.loads(match.group(1))
    except json.JSONDecodeError:
        return None
    if not isinstance(action, dict) or not isinstance(action.get("tool"), str) or not isinstance(action.get("args"), dict):
        return None
    return action


def check_tool_use(text: str, tools: tuple[str, ...] = TOOLS) -> ToolUseCheck:
    action = parse_action(text)
    tool = action["tool"] if action else None
    return ToolUseCheck(thought=text.lstrip().startswith("Thought:"), json_valid=action is not None, tool=tool,
                        known_tool=tool in tools)
