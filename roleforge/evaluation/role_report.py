"""Base model vs a role's adapter on prompts the role was never trained on: output contract, retained capability
and, for a tool-using role, tool calls that do the job. What `roleforge evaluate role` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from roleforge.evaluation.capability import capability_items, lost_and_gained, mcnemar_p_value, passes
from roleforge.evaluation.contracts import OutputContract, compliance

ADAPTER = "evaluated"


def role_prompts(role: str, path: Path | None, contract: OutputContract,
                 spellings: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The prompts to ask: `path` (JSONL with `prompt` or `request`, and optionally `role`), else the bundled set
    written apart from the sample generator (tool requests for a tool-call contract, the role's rows otherwise).
    A row's `role` may be any spelling of it (`spellings`: Settings.role_spellings())."""
    from roleforge.data_contracts.feedback import canonical_role
    from roleforge.models.generation import read_prompts
    from roleforge.ops.errors import RoleforgeError
    from roleforge.sample import ROLE_EVAL, TOOL_USE_EVAL

    source = path or (TOOL_USE_EVAL if contract.tool_call else ROLE_EVAL)

    def named(row: dict[str, Any]) -> str:
        given = str(row.get("role", row.get("agent_role", role)))
        return (canonical_role(given, spellings) or given) if spellings else given

    rows = [row for row in read_prompts(source, "prompt", alternative="request") if named(row) == role]
    if not rows:
        raise RoleforgeError(f"{source}: no prompts for role {role!r} (rows need `prompt` or `request`; pass --prompts FILE)")
    return rows


def role_report(base_model: Path, adapter: Path | None, system_prompt: str, contract: OutputContract,
                rows: list[dict[str, Any]], max_new_tokens: int = 96, capability_max_new_tokens: int = 48,
                confidence: float = 0.95, capability: bool = True) -> dict[str, Any]:
    """Both models' answers to `rows` and (with `capability`) to the retained-capability questions, and what they
    make of each."""
    from roleforge.models.base import load_tokenizer
    from roleforge.models.generation import answer_mixed, tool_use_rates
    from roleforge.models.multilora import inference_adapters

    tokenizer = load_tokenizer(base_model)
    items = capability_items() if capability else []
    prompts, questions = [row["prompt"] for row in rows], [item["question"] for item in items]
    sides = {"base": None, "adapter": ADAPTER} if adapter is not None else {"base": None}
    plan = [(side, group, name, question, limit) for side, name in sides.items()
            for group, asked, limit in (("prompts", prompts, max_new_tokens), ("capability", questions, capability_max_new_tokens))
            for question in asked]
    with inference_adapters(base_model, {ADAPTER: adapter}) as (model, lora):  # both models in the same batches
        answered = answer_mixed(model, tokenizer, system_prompt, [(n, q, k) for _, _, n, q, k in plan], lora=lora)
    answers: dict[str, dict[str, list[str]]] = {side: {"prompts": [], "capability": []} for side in sides}
    for (side, group, _, _, _), answer in zip(plan, answered):
        answers[side][group].append(answer)
    report: dict[str, Any] = {"prompts": len(rows), "capability_questions": len(items)}
    passed = {side: [passes(item, answer) for item, answer in zip(items, given["capability"])]
              for side, given in answers.items()}
    for side, given in answers.items():
        report[side] = {"capability_passed": sum(passed[side])}
        if not contract.empty:
            report[side]["contract"] = compliance(contract, given["prompts"], confidence).model_dump()
        if contract.tool_call:
            report[side]["tool_use"] = tool_use_rates(given["prompts"], rows)
    if "adapter" in answers and items:
        lost, gained = lost_and_gained(passed["adapter"], passed["base"])
        report["capability"] = {"lost": lost, "gained": gained, "p_value": mcnemar_p_value(lost, gained)}
    report["answers"] = [{"prompt": p, **{side: given["prompts"][i] for side, given in answers.items()}}
                         for i, p in enumerate(prompts)]
    return report
