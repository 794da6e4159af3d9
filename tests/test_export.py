"""`roleforge export vllm`: the champions' adapters, serve.sh and roles.json that serve the same roles with vLLM."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

from roleforge.cli import main
from roleforge.config.settings import load_settings
from tests.support.champions import lora_adapter, register_champion


def serve_command(serve_sh):
    """The `vllm serve` arguments of serve.sh, its line continuations joined, without the "$@" it passes on."""
    line = next(line for line in serve_sh.read_text().replace("\\\n", " ").splitlines() if line.startswith("exec "))
    words = shlex.split(line)[1:]
    assert words[-1] == "$@"
    return words[:-1]


def lora_modules(command):
    return command[command.index("--lora-modules") + 1:]


@pytest.fixture()
def champions(home, tiny_model_dir, tmp_path):
    """ceo (rank 4) and cfo (rank 12) have champions; coo has none."""
    settings = load_settings()
    adapters = {"ceo": lora_adapter(tiny_model_dir, tmp_path / "ceo-adapter", seed=1, r=4),
                "cfo": lora_adapter(tiny_model_dir, tmp_path / "cfo-adapter", seed=2, r=12)}
    versions = {role: register_champion(settings, role, path) for role, path in adapters.items()}
    return adapters, versions


def test_export_writes_the_champions_and_the_vllm_command_that_serves_them(champions, tiny_model_dir, tmp_path, capsys):
    adapters, versions = champions
    out = tmp_path / "export"
    assert main(["export", "vllm", "--out", str(out), "--roles", "ceo,cfo,coo", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    base = str(tiny_model_dir.resolve())
    assert report["out"] == str(out) and report["roles"] == versions and report["base_only"] == ["coo"]

    for role, source in adapters.items():
        copy = out / "adapters" / role
        assert (copy / "adapter_model.safetensors").read_bytes() == (source / "adapter_model.safetensors").read_bytes()
        config = json.loads((copy / "adapter_config.json").read_text())
        original = json.loads((source / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == base and config["r"] == original["r"]

    serve_sh = out / "serve.sh"
    assert serve_sh.stat().st_mode & stat.S_IXUSR
    assert 'cd "$(dirname "$0")"' in serve_sh.read_text()
    command = serve_command(serve_sh)
    assert command == shlex.split(report["command"])
    assert command[:3] == ["vllm", "serve", base] and "--enable-lora" in command
    assert command[command.index("--max-lora-rank") + 1] == "16", "rank 12 rounds up to vLLM's slot of 16"
    assert command[command.index("--max-loras") + 1] == "2"
    modules = dict(item.split("=") for item in lora_modules(command))
    assert modules == {"ceo": "adapters/ceo", "cfo": "adapters/cfo"}
    assert all((out / path / "adapter_config.json").is_file() for path in modules.values()), "paths are relative to serve.sh"

    settings = load_settings()
    roles = json.loads((out / "roles.json").read_text())
    assert roles["base_model"] == base
    assert roles["roles"] == {role: {"model": role, "version": versions[role], "adapter": f"adapters/{role}",
                                     "registered_model": settings.registered_model_name(role),
                                     "system_prompt": settings.role(role).system_prompt} for role in ("ceo", "cfo")}
    assert roles["base_only"] == {"coo": {"model": base, "registered_model": settings.registered_model_name("coo"),
                                          "system_prompt": settings.role("coo").system_prompt}}
    assert "system" in (out / "README.md").read_text() and "serve.sh" in (out / "README.md").read_text()


def test_export_refuses_a_non_empty_dir_unless_forced_and_then_replaces_the_export(champions, tmp_path, capsys):
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", "vllm", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "not empty" in error and "--force" in error and error.count("\n") == 1
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"], "a refused export writes nothing"

    assert main(["export", "vllm", "--out", str(out), "--force", "--roles", "ceo,cfo"]) == 0
    repo_id = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert main(["export", "vllm", "--out", str(out), "--force", "--roles", "ceo", "--base-model", repo_id, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["roles"] == {"ceo": champions[1]["ceo"]} and report["base_only"] == []
    assert sorted(path.name for path in (out / "adapters").iterdir()) == ["ceo"], "a role no longer exported is gone"
    command = serve_command(out / "serve.sh")
    assert command[2] == repo_id and lora_modules(command) == ["ceo=adapters/ceo"]
    assert command[command.index("--max-lora-rank") + 1] == "8"
    assert json.loads((out / "adapters" / "ceo" / "adapter_config.json").read_text())["base_model_name_or_path"] == repo_id
    assert (out / "notes.txt").read_text() == "mine"


def test_export_without_any_champion_is_a_one_line_error(home, tmp_path):
    out = tmp_path / "export"
    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "export", "vllm", "--out", str(out)],
                            capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "has a champion yet" in result.stderr, result.stderr
    assert not out.exists()


def test_rank_slots_and_adapters_vllm_would_refuse_at_load(tmp_path):
    from roleforge.cli.export import lora_rank_slot, servable_rank
    from roleforge.ops.errors import RoleforgeError

    assert [lora_rank_slot(r) for r in (1, 8, 9, 256, 257, 512)] == [8, 8, 16, 256, 320, 512]
    with pytest.raises(RoleforgeError, match="over vLLM's largest"):
        lora_rank_slot(513)
    config = {"peft_type": "LORA", "r": 12, "bias": "none"}
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    assert servable_rank("tool-agent", tmp_path) == 12
    with pytest.raises(RoleforgeError, match="cannot be a vLLM LoRA name"):
        servable_rank("ceo=cfo", tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True, "modules_to_save": ["lm_head"]}))
    with pytest.raises(RoleforgeError, match=r"DoRA, modules_to_save"):
        servable_rank("ceo", tmp_path)
