"""Many adapters on one base, each row through its own (roleforge/models/multilora.py): the same numbers as PEFT,
hot swap by name, and the base model given back as it was."""

from __future__ import annotations

import json

import pytest
import torch

from roleforge.models.base import attach_adapter, chat_prompts, is_clean, load_model, load_tokenizer
from roleforge.models.batching import Request, end_ids, generate_batch
from roleforge.models.multilora import MultiLoRA
from roleforge.ops.errors import RoleforgeError
from tests.support.champions import lora_adapter


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    first = lora_adapter(tiny_model_dir, root / "first", seed=1)
    # The second on every linear layer of a block, as the default recipe trains: MLP layers mix like attention's.
    second = lora_adapter(tiny_model_dir, root / "second", seed=2, r=8,
                          targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    return {"first": first, "second": second}


def _served(tiny_model_dir, adapters):
    """The tiny base model with both adapters attached by name."""
    model = load_model(tiny_model_dir).eval()
    lora = MultiLoRA(model)
    for name, path in adapters.items():
        lora.add(name, path)
    return model, lora


def _batch(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.padding_side = "left"
    texts = ["the board asks for a plan", "cash runway", "hire two engineers this quarter", "q3 figures"]
    return tokenizer(texts, return_tensors="pt", padding=True)


def test_mixed_rows_give_peft_logits(tiny_model_dir, adapters):
    batch = _batch(tiny_model_dir)
    rows = ["first", "second", None, "first"]
    peft_model = attach_adapter(attach_adapter(load_model(tiny_model_dir), adapters["first"], "first"),
                                adapters["second"], "second").eval()
    with torch.no_grad():
        expected = peft_model(**batch, adapter_names=[row or "__base__" for row in rows]).logits
    model, lora = _served(tiny_model_dir, adapters)
    with torch.no_grad(), lora.rows(rows):
        got = model(**batch).logits
    with torch.no_grad():
        plain = model(**batch).logits  # outside rows(): the base model
        base = load_model(tiny_model_dir).eval()(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(plain, base)
    assert (got[0] - plain[0]).abs().max() > 1e-2  # the adapters do change the answers


def test_swap_remove_and_detach(tiny_model_dir, adapters):
    model = load_model(tiny_model_dir).eval()
    batch = _batch(tiny_model_dir)
    lora = MultiLoRA(model)
    lora.add("role", adapters["first"])
    with torch.no_grad(), lora.rows(["role"] * 4):
        before = model(**batch).logits
    lora.add("role", adapters["second"])  # a promotion: the same name, the new weights
    with torch.no_grad(), lora.rows(["role"] * 4):
        after = model(**batch).logits
    assert (before - after).abs().max() > 1e-2
    lora.remove("role")
    with pytest.raises(RoleforgeError, match="no adapter attached"):
        with lora.rows(["role"] * 4):
            pass
    lora.detach()
    assert is_clean(model) and not any(type(m).__name__ == "LoRALinear" for m in model.modules())


def test_greedy_batch_equals_each_row_alone(tiny_model_dir, adapters):
    model, lora = _served(tiny_model_dir, adapters)
    tokenizer = load_tokenizer(tiny_model_dir)
    eos = end_ids(model, tokenizer)
    asks = [("first", "plan the launch"), ("second", "cut costs by a tenth"), (None, "plan the launch"), ("second", "hi")]
    # A shared system prompt: the batch computes it once per adapter, a row alone computes its whole prompt.
    system = "You are the COO of a mid-sized software company. Answer with owners, steps and a deadline."
    prompts = dict(zip((prompt for _, prompt in asks), chat_prompts(tokenizer, system, [prompt for _, prompt in asks])))

    def requests():
        return [Request(prompt=prompts[prompt], max_new_tokens=12, adapter=name) for name, prompt in asks]

    together = requests()
    generate_batch(model, tokenizer, together, eos, lora)
    for request in requests():
        generate_batch(model, tokenizer, [request], eos, lora)
        same = next(r for r in together if (r.adapter, r.prompt) == (request.adapter, request.prompt))
        assert request.text == same.text and request.completion_tokens == same.completion_tokens
    assert together[0].text != together[2].text  # same prompt, adapter vs base


def test_adapters_it_cannot_serve_are_refused(tiny_model_dir, adapters, tmp_path):
    lora = MultiLoRA(load_model(tiny_model_dir))
    dora = tmp_path / "dora"
    dora.mkdir()
    (dora / "adapter_model.safetensors").write_bytes((adapters["first"] / "adapter_model.safetensors").read_bytes())
    config = json.loads((adapters["first"] / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(RoleforgeError, match="use_dora"):
        lora.add("dora", dora)
    with pytest.raises(RoleforgeError, match="needs adapter_config.json"):
        lora.add("none", tmp_path)
    (dora / "adapter_config.json").write_text("{broken")
    with pytest.raises(RoleforgeError, match="not valid JSON"):
        lora.add("broken", dora)


def test_one_name_runs_every_row_of_any_batch_through_it(tiny_model_dir, adapters):
    model, lora = _served(tiny_model_dir, adapters)
    batch = _batch(tiny_model_dir)
    with torch.no_grad():
        with lora.rows(["second"] * 4):
            listed = model(**batch).logits
        with lora.rows("second"):
            named = model(**batch).logits
            single = model(input_ids=batch["input_ids"][:1], attention_mask=batch["attention_mask"][:1]).logits
    torch.testing.assert_close(named, listed)
    torch.testing.assert_close(single, listed[:1], rtol=1e-4, atol=1e-4)


def test_the_pool_gets_its_model_back_clean(tiny_model_dir, adapters):
    from roleforge.models.base import BASE_MODELS, inference_dtype
    from roleforge.models.multilora import inference_adapters

    with inference_adapters(tiny_model_dir, {"first": adapters["first"], "none": None}) as (model, lora):
        assert set(lora.adapters) == {"first"}
        assert any(type(m).__name__ == "LoRALinear" for m in model.modules())
    with BASE_MODELS.lend(tiny_model_dir, dtype=inference_dtype()) as again:
        assert again is model and is_clean(again)
        assert not any(type(m).__name__ == "LoRALinear" for m in again.modules())
