"""Inference routing and the tool-use rates that `roleforge evaluate tool-use` reports."""

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model

from roleforge.tasks.infer import RoleRouter, tool_use_rates
from roleforge.tasks.models import load_model

GOOD = 'Thought: I will search.\nAction:\n```json\n{"tool": "search", "args": {"query": "x"}}\n```'


def test_tool_use_rates():
    answers = [GOOD, GOOD, "Thought: hmm.\nAction:\n```json\n{bad json}\n```", "Plain prose."]
    rates = tool_use_rates(answers, ["search", "calculator", "search", "search"])
    assert rates == {"n": 4, "thought_rate": 0.75, "json_valid_rate": 0.5, "full_compliance_rate": 0.25,
                     "args_checked": 0, "args_valid_rate": 0.0}


@pytest.fixture(scope="module")
def role_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with non-zero weights, so that a role with it answers differently from the base."""
    torch.manual_seed(1)
    model = get_peft_model(load_model(tiny_model_dir), LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    return path


def test_roles_route_to_their_adapter_and_fall_back_to_base(tiny_model_dir, role_adapter):
    router = RoleRouter(tiny_model_dir, {"ceo": role_adapter})
    prompts = ["What should we do about pricing?", "Hire or wait?"]
    with_adapter = router.generate("ceo", "You are the CEO.", prompts, max_new_tokens=12)
    fallback = router.generate("cfo", "You are the CEO.", prompts, max_new_tokens=12)
    plain_base = RoleRouter(tiny_model_dir, {}).generate("cfo", "You are the CEO.", prompts, max_new_tokens=12)
    assert fallback == plain_base, "a role without a champion is served by the base model"
    assert with_adapter != fallback, "the champion adapter changes the answers"
    assert router.generate("ceo", "You are the CEO.", prompts[:1], max_new_tokens=12) == with_adapter[:1], "batching and order do not change answers"


def test_evaluate_tool_use_cli_on_the_base_model(home, tmp_path):
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"request": r, "tool": t}) + "\n" for r, t in [("What is 2 plus 2?", "calculator"), ("Search cats.", "search")]))
    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "evaluate", "tool-use", "--prompts", str(prompts),
                             "--model", "base", "--json"], capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n"] == 2 and {"thought_rate", "json_valid_rate", "full_compliance_rate"} <= set(report)
    missing_champion = subprocess.run([sys.executable, "-m", "roleforge.cli", "evaluate", "tool-use", "--prompts", str(prompts)],
                                      capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert missing_champion.returncode == 2 and "has no champion yet" in missing_champion.stderr
