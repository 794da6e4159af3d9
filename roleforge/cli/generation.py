"""Answers from a role's champion or the base model: generate, chat, and the tool-use and role evaluations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from roleforge.cli.common import command_settings, emit
from roleforge.ops.errors import RoleforgeError


def _router(settings: Any, role: str, model: str) -> tuple[Any, str | None]:
    """A router serving the role's champion (model="champion") or the base model (model="base")."""
    settings.role(role)
    from roleforge.models.generation import RoleRouter, champion_adapters

    base_model = settings.base_model_dir()
    found = champion_adapters(settings, [role]) if model == "champion" else {}
    if model == "champion" and role not in found:
        raise RoleforgeError(f"role {role} has no champion yet: run `roleforge run` first, or use --model base")
    router = RoleRouter(base_model, {r: path for r, (path, _) in found.items()})
    return router, found[role][1] if role in found else None


def cmd_generate(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    from roleforge.models.generation import read_prompts

    rows = read_prompts(args.prompts, "prompt")
    router, version = _router(settings, args.role, args.model)
    answers = router.generate(args.role, settings.role(args.role).system_prompt, [r["prompt"] for r in rows],
                              max_new_tokens=args.max_new_tokens)
    for row, answer in zip(rows, answers):
        print(json.dumps({"role": args.role, "model": args.model, "version": version, "prompt": row["prompt"], "response": answer}))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    router, version = _router(settings, args.role, args.model)
    print(f"{args.role} ({args.model}{' v' + version if version else ''}); an empty line or Ctrl-D ends the chat.")
    while True:
        try:
            prompt = input("you> ").strip()
        except EOFError:
            break
        if not prompt:
            break
        print(f"{args.role}> {router.generate(args.role, settings.role(args.role).system_prompt, [prompt])[0]}", flush=True)
    return 0


def cmd_evaluate_tool_use(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    from roleforge.models.generation import read_tool_use_prompts, tool_use_rates

    rows = read_tool_use_prompts(args.prompts)
    router, version = _router(settings, args.role, args.model)

    answers = router.generate(args.role, settings.role(args.role).system_prompt, [r["request"] for r in rows])
    report = {"role": args.role, "model": args.model, "version": version, **tool_use_rates(answers, rows)}
    if args.answers:
        from roleforge.evaluation.tool_use import check_tool_use

        with open(args.answers, "w", encoding="utf-8") as out:
            for row, answer in zip(rows, answers):
                check = check_tool_use(answer)
                out.write(json.dumps({"request": row["request"], "tool": row["tool"], "answer": answer, "called": check.tool,
                                      "compliant": check.compliant(row["tool"]), "args": check.args,
                                      "args_valid": check.args_valid(row)}) + "\n")
    if not args.json:
        args_valid = f"{report['args_valid_rate']:.3f} of {report['args_checked']}" if report["args_checked"] else "n/a (no row states a right call)"
        print(f"{args.role} {args.model}{' v' + version if version else ''}: n={report['n']} "
              f"thought={report['thought_rate']:.3f} json_valid={report['json_valid_rate']:.3f} "
              f"full_compliance={report['full_compliance_rate']:.3f} args_valid={args_valid}")
    emit(report, args.json)
    return 0


def cmd_evaluate_role(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    from roleforge.evaluation.role_report import role_prompts, role_report
    from roleforge.models.generation import champion_adapters

    args.role = settings.role_name(args.role)
    config = settings.role(args.role)
    rows = role_prompts(args.role, Path(args.prompts) if args.prompts else None, config.output, settings.role_spellings())
    adapter, version = (Path(args.adapter), None) if args.adapter else champion_adapters(settings, [args.role]).get(args.role, (None, None))
    base_model = settings.base_model_dir()
    report = role_report(base_model, adapter, config.system_prompt, config.output, rows,
                         config.evaluation.max_new_tokens, config.evaluation.capability_max_new_tokens, config.gate.confidence,
                         config.evaluation.capability_checks)
    answers = report.pop("answers")
    report = {"role": args.role, "adapter_path": str(adapter) if adapter else None, "version": version, **report}
    if args.answers:
        Path(args.answers).write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
    if not args.json:
        for side in ("base", "adapter"):
            if side in report:
                kept = report[side].get("contract")
                print(f"{args.role} {side}: capability {report[side]['capability_passed']}/{report['capability_questions']}"
                      + (f", contract {kept['compliant']}/{kept['answers']} [{kept['low']:.2f}, {kept['high']:.2f}]" if kept else "")
                      + "".join(f", {k} {v:.3f}" for k, v in report[side].get("tool_use", {}).items() if k.endswith("rate")))
    emit(report, args.json)
    return 0
