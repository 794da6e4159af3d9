"""`roleforge export vllm`: every role's champion adapter and the `vllm serve` command that serves the same roles, in
one folder to copy to a GPU server. vLLM is not a dependency: the folder is all files, and only the server runs vLLM."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
from pathlib import Path

from roleforge.cli.common import command_settings, emit, role_names
from roleforge.ops.errors import RoleforgeError
from roleforge.ops.files import write_atomic

# vLLM sizes every LoRA slot by --max-lora-rank and accepts only these values (its LoRAConfig).
VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# A LoRA name is what a request sends as `model` and one `name=path` item of --lora-modules: no `=`, `/` or spaces.
LORA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def cmd_export_vllm(args: argparse.Namespace) -> int:
    settings = command_settings()
    from roleforge.models.generation import champion_adapters

    roles = role_names(settings, args.roles) or list(settings.roles)
    out = Path(args.out)
    check_export_dir(out, args.force)
    champions = champion_adapters(settings, roles)
    if not champions:
        raise RoleforgeError(f"no role of {', '.join(roles)} has a champion yet: run `roleforge run` first")
    ranks = {role: servable_rank(role, path) for role, (path, _) in champions.items()}
    base_model = base_model_reference(args.base_model) if args.base_model else str(settings.base_model_dir().resolve())
    adapters = {role: f"adapters/{role}" for role in champions}
    command = vllm_command(base_model, lora_rank_slot(max(ranks.values())), adapters)

    if args.force:
        shutil.rmtree(out / "adapters", ignore_errors=True)  # a role exported before and not now must not stay served
    for role, (path, _) in champions.items():
        copy_adapter(path, out / adapters[role], base_model)
    serve = write_atomic(out / "serve.sh", serve_script(command))
    serve.chmod(0o755)
    base_only = [role for role in roles if role not in champions]
    roles_file = {
        "base_model": base_model,
        "roles": {role: {"model": role, "version": version, "adapter": adapters[role], "registered_model":
                         settings.registered_model_name(role), "system_prompt": settings.role(role).system_prompt}
                  for role, (_, version) in champions.items()},
        "base_only": {role: {"model": base_model, "registered_model": settings.registered_model_name(role),
                             "system_prompt": settings.role(role).system_prompt} for role in base_only},
    }
    write_atomic(out / "roles.json", json.dumps(roles_file, indent=2) + "\n")
    write_atomic(out / "README.md", export_readme(next(iter(champions)), base_only))

    if not args.json:
        print(f"exported {len(champions)} champion adapter(s) to {out}; on a GPU server with vLLM run {out / 'serve.sh'}")
        if base_only:
            print(f"without a champion, served by the base model: {', '.join(base_only)}")
    emit({"out": str(out), "roles": {role: version for role, (_, version) in champions.items()}, "base_only": base_only,
          "command": shlex.join(command)}, args.json)
    return 0


def check_export_dir(out: Path, force: bool) -> None:
    """The export goes to a new or empty directory, so that it never mixes with other files unless asked to."""
    if out.exists() and not out.is_dir():
        raise RoleforgeError(f"--out {out} is a file: name a new or empty directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RoleforgeError(f"--out {out} is not empty: name a new or empty directory, or pass --force to export over it")


def servable_rank(role: str, adapter_dir: Path) -> int:
    """The LoRA rank of a role's champion, after checking that vLLM can serve the role's name and the adapter."""
    if not LORA_NAME.fullmatch(role):
        raise RoleforgeError(f"role name {role!r} cannot be a vLLM LoRA name: use letters, digits, '.', '_' and '-'")
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise RoleforgeError(f"the champion adapter of {role} has no adapter_config.json at {adapter_dir}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    # What vLLM's PEFTHelper refuses at load time: better said here than on the GPU server.
    unservable = [problem for problem, present in [
        (f"PEFT type {config.get('peft_type')}", config.get("peft_type", "LORA") != "LORA"),
        ("DoRA", bool(config.get("use_dora"))),
        ("modules_to_save", bool(config.get("modules_to_save"))),
        (f"bias={config.get('bias')}", config.get("bias", "none") != "none")] if present]
    if unservable:
        raise RoleforgeError(f"vLLM cannot serve the champion adapter of {role} ({', '.join(unservable)}): retrain it "
                             f"as a plain LoRA adapter")
    return int(config["r"])


def lora_rank_slot(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds an adapter of this rank."""
    for slot in VLLM_MAX_LORA_RANKS:
        if slot >= rank:
            return slot
    raise RoleforgeError(f"LoRA rank {rank} is over vLLM's largest --max-lora-rank, {VLLM_MAX_LORA_RANKS[-1]}")


def base_model_reference(given: str) -> str:
    """A local base model as an absolute path (serve.sh runs from its own directory); anything else, such as a Hugging
    Face repository id, as given."""
    path = Path(given).expanduser()
    return str(path.resolve()) if path.exists() else given


def vllm_command(base_model: str, max_lora_rank: int, adapters: dict[str, str]) -> list[str]:
    """`vllm serve` with one LoRA module per role, named after the role (the request's `model`)."""
    return ["vllm", "serve", base_model, "--enable-lora", "--max-lora-rank", str(max_lora_rank),
            "--max-loras", str(len(adapters)), "--lora-modules", *(f"{role}={path}" for role, path in adapters.items())]


def copy_adapter(source: Path, target: Path, base_model: str) -> None:
    """A copy of the adapter directory whose config names the base model that serve.sh loads."""
    shutil.copytree(source, target)
    config_path = target / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model
    write_atomic(config_path, json.dumps(config, indent=2) + "\n")


def serve_script(command: list[str]) -> str:
    """serve.sh: the command, one line for the model, the LoRA settings and the modules, run from the script's folder."""
    options, modules = command.index("--enable-lora"), command.index("--lora-modules")
    lines = " \\\n  ".join(shlex.join(part) for part in (command[:options], command[options:modules], command[modules:]))
    return ("#!/bin/sh\n"
            "# Written by `roleforge export vllm`. Extra arguments go to vllm (--port, --tensor-parallel-size, ...).\n"
            "set -e\n"
            'cd "$(dirname "$0")"  # the adapters\' paths are relative to this folder\n'
            f'exec {lines} \\\n  "$@"\n')


def export_readme(example_role: str, base_only: list[str]) -> str:
    base_only_line = (f"Roles without a champion ({', '.join(base_only)}) are served by the base model: send the base "
                      "model's name (`base_model` in roles.json) as `model`.\n\n" if base_only else "")
    return f"""# Role champions for vLLM

Written by `roleforge export vllm`. Copy this folder to a GPU server with vLLM installed and run:

    ./serve.sh            # extra arguments go to `vllm serve`, e.g. ./serve.sh --port 8000

Each role's champion LoRA adapter is in `adapters/<role>/`, served under the role's name: a client picks a role by
sending its name as `model` to the OpenAI-compatible API (`/v1/chat/completions`).

vLLM does not know the roles' system prompts: a client must send the role's `system_prompt` from roles.json as the
first (system) message, as roleforge does, or the adapter answers out of role.

{base_only_line}Example, for {example_role}:

    curl http://localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{{"model": "{example_role}",
      "messages": [{{"role": "system", "content": "<system_prompt of {example_role}>"}}, {{"role": "user", "content": "..."}}]}}'
"""
