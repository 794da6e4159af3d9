"""Inference: the base model loaded once, every role's champion adapter attached by name, requests routed by role.

A role without a champion is served by the base model: the fallback the registry keeps until a candidate wins.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roleforge.config.settings import Settings
from roleforge.data_contracts.feedback_spellings import FIELD_ALIASES, field_key
from roleforge.ops.errors import RoleforgeError

if TYPE_CHECKING:
    from roleforge.models.multilora import MultiLoRA


class RoleRouter:
    """Greedy, batched generation for many roles on one copy of the base model."""

    def __init__(self, base_model: Path, adapters: dict[str, Path]) -> None:
        from roleforge.models.base import attach_adapter, load_model, load_tokenizer

        self.tokenizer = load_tokenizer(base_model)
        model = load_model(base_model)
        self.adapters = dict(adapters)
        for role, path in self.adapters.items():
            model = attach_adapter(model, path, adapter_name=role)
        self.model = model.eval()

    def _serving(self, role: str) -> Any:
        if role in self.adapters:
            self.model.set_adapter(role)
            return nullcontext()
        return self.model.disable_adapter() if self.adapters else nullcontext()

    def generate(self, role: str, system_prompt: str, prompts: list[str], max_new_tokens: int = 160,
                 batch_size: int = 8) -> list[str]:
        """Answers of the role's champion (or the base model) to each prompt, in order."""
        with self._serving(role):
            return generate_answers(self.model, self.tokenizer, system_prompt, prompts, max_new_tokens, batch_size)


def generate_answers(model: Any, tokenizer: Any, system_prompt: str, prompts: list[str], max_new_tokens: int = 160,
                     batch_size: int = 8, new_tokens: list[int] | None = None) -> list[str]:
    """Greedy answers of the model (with whichever adapter is active: a PEFT model's, or the one a MultiLoRA's
    `rows(name)` runs every row through) to each prompt, in order, batched. When new_tokens is given, each answer's
    count of generated tokens (up to and including its end-of-sequence) is appended to it."""
    import torch

    from roleforge.models.base import chat_prompts, inference_autocast
    from roleforge.models.batching import Request, generate_all

    requests = [Request(prompt=text, max_new_tokens=max_new_tokens) for text in chat_prompts(tokenizer, system_prompt, prompts)]
    with torch.no_grad(), inference_autocast():
        generate_all(model, tokenizer, requests, batch_size)
    if new_tokens is not None:
        new_tokens.extend(r.completion_tokens + (r.finish_reason == "stop") for r in requests)
    return [request.text.strip() for request in requests]


def answer_mixed(model: Any, tokenizer: Any, system_prompt: str, asks: list[tuple[str | None, str, int]],
                 batch_size: int = 64, lora: MultiLoRA | None = None) -> list[str]:
    """Greedy answers to (adapter, prompt, max_new_tokens) asks, in order: every adapter's questions in the same
    batches (the adapters `lora` attaches; None is the base model), each row stopping at its own end or limit."""
    import torch

    from roleforge.models.base import chat_prompts, inference_autocast
    from roleforge.models.batching import Request, generate_all

    texts = chat_prompts(tokenizer, system_prompt, [prompt for _, prompt, _ in asks])
    requests = [Request(prompt=text, max_new_tokens=limit, adapter=adapter) for (adapter, _, limit), text in zip(asks, texts)]
    with torch.no_grad(), inference_autocast():
        generate_all(model, tokenizer, requests, batch_size, lora)
    return [request.text.strip() for request in requests]


def champion_adapters(settings: Settings, roles: list[str]) -> dict[str, tuple[Path, str]]:
    """Each role's champion adapter directory and version, for the roles that have one."""
    from roleforge.registry.tracking import champion_adapter, mlflow_client

    client = mlflow_client(settings.resolved_tracking_uri)
    found = {}
    for role in roles:
        path, version = champion_adapter(client, settings.registered_model_name(role), settings.path("registry-cache"))
        if path is not None and version is not None:
            found[role] = (path, version)
    return found


def tool_use_rates(answers: list[str], rows_or_tools: list[dict[str, Any]] | list[str]) -> dict[str, float | int]:
    """The agentic-DPO table's three rates: Thought prefix, valid JSON action, and full compliance (both, with
    a known tool that is the right one for the request); and how often the call's arguments are right.

    Args:
        answers: the model's answer to each request.
        rows_or_tools: per answer, its request row (`tool`, and what a right call does: see
            `tool_use.check_arguments`) or just the name of the tool it should call.

    `args_valid_rate` is the share of right-tool calls whose arguments pass, over the `args_checked` answers whose
    rows state something checkable; it is 0.0 when none do (a list of tool names states nothing).
    """
    from roleforge.evaluation.tool_use import check_tool_use

    rows = [{"tool": r} if isinstance(r, str) else r for r in rows_or_tools]
    checks = [check_tool_use(answer) for answer in answers]
    n = len(checks)
    verdicts = [c.args_valid(row) for c, row in zip(checks, rows)]
    checked = sum(v is not None for v in verdicts)
    if n == 0:
        return {"n": 0, "thought_rate": 0.0, "json_valid_rate": 0.0, "full_compliance_rate": 0.0,
                "args_checked": 0, "args_valid_rate": 0.0}
    return {
        "n": n,
        "thought_rate": sum(c.thought for c in checks) / n,
        "json_valid_rate": sum(c.json_valid for c in checks) / n,
        "full_compliance_rate": sum(c.compliant(row["tool"]) for c, row in zip(checks, rows)) / n,
        "args_checked": checked,
        "args_valid_rate": sum(v is True for v in verdicts) / checked if checked else 0.0,
    }


# Other names a prompts file's rows give the prompt (`question` in a spreadsheet of test questions, ...): the feedback
# contract's aliases of its prompt, a tool request's name, and plain text.
PROMPT_NAMES = ("prompt", "request", *(alias for alias, field in FIELD_ALIASES.items() if field == "prompt"), "text")


def read_prompts(path: str | Path, key: str, alternative: str | None = None) -> list[dict[str, Any]]:
    """A prompts file's rows, each with `key`: JSON lines (each with `key`, `alternative` or another name for the
    prompt: PROMPT_NAMES), plain text lines (each the prompt itself), a CSV with a header (the prompt's column, or
    its only column), or a `.json` array of prompts or of rows."""
    path = Path(path)
    # utf-8-sig: an editor's byte-order mark would make the first JSON line a plain-text prompt.
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        items = _csv_rows(text)
    elif suffix == ".json":
        items = _json_items(path, text)
    else:
        items = _line_items(text)
    rows = []
    for number, item in items:
        row = _prompt_row(item, key, alternative)
        if row is None and suffix == ".csv":
            raise RoleforgeError(f"{path}:{number}: no text in a prompt column (name one {key!r}, or give one column)")
        if row is None:
            raise RoleforgeError(f"{path}:{number}: expected a JSON object with a string {key!r}"
                                 + (f" (or {alternative!r})" if alternative else ""))
        rows.append(row)
    if not rows:
        raise RoleforgeError(f"{path}: no prompts")
    return rows


def _line_items(text: str) -> list[tuple[int, Any]]:
    """Each non-blank line, numbered: its JSON object, or its text (a line that happens to be JSON of another kind,
    such as "2024", is text too)."""
    import json

    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            item = None
        items.append((number, item if isinstance(item, dict) else line.strip()))
    return items


def _csv_rows(text: str) -> list[tuple[int, Any]]:
    """A CSV's rows as dicts under its headers as fields are matched (`Question ` is question); a one-column CSV's
    cells are the prompts, whatever its header. Numbered by file line, the header being line 1."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text))
    header = [field_key(name) for name in next(reader, [])]
    rows = []
    for cells in reader:
        if any(cell.strip() for cell in cells):
            rows.append((reader.line_num, cells[0].strip() if len(header) == 1 else dict(zip(header, cells))))
    return rows


def _json_items(path: Path, text: str) -> list[tuple[int, Any]]:
    import json

    try:
        document = json.loads(text)
    except json.JSONDecodeError:  # JSON lines under a .json name
        return _line_items(text)
    if isinstance(document, dict):  # one row
        return [(1, document)]
    if not isinstance(document, list):
        raise RoleforgeError(f"{path}: expected a JSON array of prompts, or of objects with a prompt")
    return [(number, item.strip() if isinstance(item, str) else item) for number, item in enumerate(document, start=1)]


def _prompt_row(item: Any, key: str, alternative: str | None) -> dict[str, Any] | None:
    """The row with its prompt under `key`, or None where it has none."""
    if isinstance(item, str):
        item = {key: item}
    if not isinstance(item, dict):
        return None
    if key not in item:
        given = next((name for name in (alternative, *PROMPT_NAMES) if name and name in item), None)
        if given is not None:
            item = {**item, key: item[given]}
    if not isinstance(item.get(key), str) or not item[key].strip():
        return None
    return item


def read_tool_use_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Tool-use requests: JSONL rows with `request` (the user's text) and `tool` (the tool that should be called),
    and optionally what a right call does (`answer`, `query_terms`, calendar `action`/`title`/`date`/`time`)."""
    from roleforge.evaluation.tool_use import request_row_problem

    rows = read_prompts(path, "request")
    if any(not isinstance(r.get("tool"), str) for r in rows):
        raise RoleforgeError(f"{path}: every row needs `request` and `tool`")
    for number, row in enumerate(rows, start=1):
        if (problem := request_row_problem(row)) is not None:
            raise RoleforgeError(f"{path}: request {number}: {problem}")
    return rows
