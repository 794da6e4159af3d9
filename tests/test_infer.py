"""Inference routing and the tool-use rates that `roleforge evaluate tool-use` reports."""

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model

from roleforge.models.base import load_model
from roleforge.models.generation import RoleRouter, tool_use_rates

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


def test_evaluate_role_sets_an_adapter_beside_the_base_model_on_unseen_prompts(home, tmp_path, tiny_model_dir):
    from tests.test_evaluate import random_adapter

    adapter = random_adapter(tiny_model_dir, tmp_path / "adapter")
    prompts = tmp_path / "ceo.jsonl"
    prompts.write_text("".join(json.dumps({"role": role, "prompt": p}) + "\n" for role, p in
                               [("ceo", "Do we open a store in Oslo?"), ("ceo", "keep the gym perk?"), ("cfo", "Budget?")]))
    result = subprocess.run([sys.executable, "-m", "roleforge.cli", "evaluate", "role", "--role", "ceo", "--prompts", str(prompts),
                             "--adapter", str(adapter), "--answers", str(tmp_path / "answers.jsonl"), "--json"],
                            capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The ceo's rows only, both models on the contract and the 200 capability questions, and the paired comparison.
    assert report["prompts"] == 2 and report["capability_questions"] >= 150
    for side in ("base", "adapter"):
        assert report[side]["contract"]["answers"] == 2 and 0 <= report[side]["capability_passed"] <= report["capability_questions"]
    assert {"lost", "gained", "p_value"} <= set(report["capability"])
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == 2
    # No champion and no --adapter: the base model alone.
    base_only = subprocess.run([sys.executable, "-m", "roleforge.cli", "evaluate", "role", "--role", "ceo", "--prompts",
                                str(prompts), "--json"], capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert base_only.returncode == 0 and "adapter" not in json.loads(base_only.stdout.strip().splitlines()[-1])


def test_mixed_adapter_batches_answer_as_one_prompt_at_a_time(tiny_model_dir, role_adapter, tmp_path):
    """Evaluation asks candidate, opponent and base in the same batches: each answer is the one its model gives
    to that prompt alone (a PEFT model with that adapter active), whatever else is in the batch and whatever each
    row's token limit."""
    from roleforge.models.base import attach_adapter
    from roleforge.models.generation import answer_mixed, generate_answers
    from roleforge.models.multilora import MultiLoRA
    from tests.support.champions import lora_adapter

    other = lora_adapter(tiny_model_dir, tmp_path / "other", seed=3)
    model = attach_adapter(load_model(tiny_model_dir), role_adapter, adapter_name="candidate")
    attach_adapter(model, other, adapter_name="opponent")
    tokenizer = RoleRouter(tiny_model_dir, {}).tokenizer
    prompts = ["What should we do about pricing?", "Hire or wait?", "Plan the office move.", "Budget risk?"]
    asks = [(adapter, prompt, 6 + 3 * (i % 3)) for i, prompt in enumerate(prompts) for adapter in ("candidate", None, "opponent")]
    served = load_model(tiny_model_dir).eval()
    lora = MultiLoRA(served)
    lora.add("candidate", role_adapter)
    lora.add("opponent", other)
    mixed = answer_mixed(served, tokenizer, "You are the CEO.", asks, batch_size=5, lora=lora)
    for (adapter, prompt, limit), answer in zip(asks, mixed):
        if adapter is None:
            with model.disable_adapter():
                alone = generate_answers(model, tokenizer, "You are the CEO.", [prompt], limit, 1)
        else:
            model.set_adapter(adapter)
            alone = generate_answers(model, tokenizer, "You are the CEO.", [prompt], limit, 1)
        assert answer == alone[0], (adapter, prompt, limit)
    assert len(set(mixed)) > 4, "the three models answer differently"
