"""roleforge's DPO path computes what plain full-sequence DPO computes: same log-probs, same gradients."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from roleforge.evaluation.scoring import completion_logps
from roleforge.models.base import chat_prompts, load_model, load_tokenizer, pooled_attention
from roleforge.ops.memory import glibc
from roleforge.training.dpo_batches import collate, length_buckets, tokenize_pairs
from roleforge.training.frozen_head import completion_token_logps
from roleforge.training.losses import dpo_losses
from roleforge.training.sequence_logps import logps_path, sequence_logps, tokens_through

SYSTEM = "You are a tool-using agent. Answer with a Thought line and a JSON action."
PAIRS = [{"prompt": f"What is {i} plus {i * 3}?", "chosen": f'Thought: add.\nAction:\n```json\n{{"tool": "calculator", "args": {{"expression": "{i} + {i * 3}"}}}}\n```',
          "rejected": "No." * (i % 3 + 1)} for i in range(5)]


def lora_model(tiny_model_dir, attention=None):
    torch.manual_seed(0)
    return get_peft_model(load_model(tiny_model_dir, attention=attention), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                                  init_lora_weights=False, task_type="CAUSAL_LM"))


PAIR_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")


@pytest.mark.parametrize("path", ["packed", "shared_prompt", "rows"])
def test_shared_prefix_log_probs_equal_full_sequence_log_probs(tiny_model_dir, path):
    """Every way of sharing (on a CPU each prompt once per pair, packed in one row without padding or in two padded
    passes; the prefix only, on an accelerator) against plain full sequences."""
    tokenizer = load_tokenizer(tiny_model_dir)
    model = lora_model(tiny_model_dir, pooled_attention() if path == "packed" else "eager")
    prefix, examples = tokenize_pairs(tokenizer, SYSTEM, PAIRS, max_length=1024)
    assert len(prefix) > 5, "the system turn is the shared prefix"
    batch = collate(examples, tokenizer.pad_token_id)
    if path == "rows":  # what an accelerator runs
        batch = {key: value for key, value in batch.items() if key not in PAIR_KEYS}
    assert logps_path(model, batch) == path
    with torch.no_grad():
        sums, counts = sequence_logps(model, torch.tensor(prefix), batch)
    prompts = chat_prompts(tokenizer, SYSTEM, [p["prompt"] for p in PAIRS])
    full_chosen = completion_logps(model, tokenizer, prompts, [p["chosen"] + tokenizer.eos_token for p in PAIRS])
    full_rejected = completion_logps(model, tokenizer, prompts, [p["rejected"] + tokenizer.eos_token for p in PAIRS])
    expected = torch.tensor([value for value, _ in full_chosen + full_rejected])
    assert counts.tolist() == [n for _, n in full_chosen + full_rejected]
    # completion_logps runs under bf16 autocast where the CPU has it; the shared-prefix path here in fp32.
    assert torch.allclose(sums, expected, atol=0.05 * counts.max().item(), rtol=0.02)


def test_gradients_through_the_shared_prefix_equal_full_sequence_gradients(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    prefix, examples = tokenize_pairs(tokenizer, SYSTEM, PAIRS, max_length=1024)
    no_prefix = [{**e, "prompt_ids": prefix + e["prompt_ids"]} for e in examples]

    def gradients(prefix_ids, rows, attention="eager"):
        model = lora_model(tiny_model_dir, attention)
        sums, counts = sequence_logps(model, torch.tensor(prefix_ids, dtype=torch.long), collate(rows, tokenizer.pad_token_id))
        chosen, rejected = sums.chunk(2)
        loss = dpo_losses(["sigmoid", "sft"], [1.0, 0.5], 0.1, (chosen, rejected), (chosen.detach() * 0, rejected.detach() * 0),
                          counts.chunk(2)[0]).mean()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full = gradients([], no_prefix)
    for shared in (gradients(prefix, examples), gradients(prefix, examples, pooled_attention()),
                   gradients([], no_prefix, pooled_attention())):  # two passes; packed; packed without a prefix
        assert shared.keys() == full.keys() and len(shared) > 0
        for name in shared:
            assert torch.allclose(shared[name], full[name], atol=1e-5, rtol=1e-3), name


@pytest.mark.parametrize("head_trains", [False, True])
def test_completion_log_probs_made_in_chunks_have_the_full_softmax_values_and_gradients(head_trains):
    """The vocabulary logits are made a chunk at a time (7 positions, 3 a chunk here); with a frozen head the
    gradient is made in the forward pass. Both must equal log_softmax over all logits at once, and a head that
    trains must still get its own gradient."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    head.weight.requires_grad_(head_trains)
    hidden = torch.randn(7, 16, requires_grad=True)
    tokens = torch.randint(0, 50, (7,))
    upstream = torch.randn(7)

    def value_and_grads(logps):
        (logps * upstream).sum().backward()
        grads = (hidden.grad.clone(), head.weight.grad.clone() if head_trains else None)
        hidden.grad, head.weight.grad = None, None
        return logps.detach(), grads

    chunked, (hidden_grad, head_grad) = value_and_grads(completion_token_logps(head, hidden, tokens, chunk=3))
    full, (expected_hidden_grad, expected_head_grad) = value_and_grads(
        torch.log_softmax(head(hidden), dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1))
    assert torch.allclose(chunked, full, atol=1e-5)
    assert torch.allclose(hidden_grad, expected_hidden_grad, atol=1e-5)
    if head_trains:
        assert torch.allclose(head_grad, expected_head_grad, atol=1e-5)
    with torch.no_grad():  # the reference pass
        assert torch.allclose(completion_token_logps(head, hidden, tokens, chunk=3), full, atol=1e-5)


def test_training_order_sorts_by_length_only_within_random_groups():
    """Each group of four batches is sorted by length (little padding), and the groups are random draws from the
    whole data set, not its shortest and longest pairs (globally sorted batches cost held-out accuracy)."""
    examples = [{"prompt_ids": [1] * n, "chosen_ids": [2], "rejected_ids": [3]} for n in range(1, 65)]
    length = lambda index: len(examples[index]["prompt_ids"])  # noqa: E731
    for seed in range(5):
        order = length_buckets(examples, 4, seed, group_batches=4)
        assert sorted(order) == list(range(64))
        groups = [order[start:start + 16] for start in range(0, 64, 16)]
        assert all([length(i) for i in group] == sorted(length(i) for i in group) for group in groups)
        assert max(length(i) for i in groups[0]) - min(length(i) for i in groups[0]) > 16  # a draw across lengths
    assert length_buckets(examples, 4, 0, 4) != length_buckets(examples, 4, 1, 4)


def test_length_buckets_group_similar_lengths_and_keep_every_pair():
    examples = [{"prompt_ids": [1] * n, "chosen_ids": [2] * n, "rejected_ids": [3]} for n in (1, 50, 2, 49, 3, 48, 4, 47)]
    order = length_buckets(examples, 2, seed=0)
    assert sorted(order) == list(range(8))
    spreads = [abs(len(examples[a]["prompt_ids"]) - len(examples[b]["prompt_ids"])) for a, b in zip(order[::2], order[1::2])]
    assert max(spreads) <= 2


def test_checkpointed_training_gives_every_row_the_prefix_and_the_same_gradients(tiny_model_dir):
    """A checkpointed layer drops the KV cache, so under checkpointing the prefix goes in front of each row instead:
    same log-probs, same gradients."""
    tokenizer = load_tokenizer(tiny_model_dir)
    prefix, examples = tokenize_pairs(tokenizer, SYSTEM, PAIRS, max_length=1024)

    def run(checkpointing):
        model = lora_model(tiny_model_dir).train()
        if checkpointing:
            model.get_base_model().activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        sums, counts = sequence_logps(model, torch.tensor(prefix), collate(examples, tokenizer.pad_token_id))
        sums.sum().backward()
        return sums.detach(), counts, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (kept, kept_counts, kept_grads), (recomputed, counts, grads) = run(False), run(True)
    assert counts.tolist() == kept_counts.tolist()
    assert torch.allclose(recomputed, kept, atol=1e-4, rtol=1e-4)
    assert kept_grads.keys() == grads.keys() and len(grads) > 0
    for name in grads:
        assert torch.allclose(grads[name], kept_grads[name], atol=1e-5, rtol=1e-3), name


def test_a_step_out_of_memory_is_redone_with_checkpointing_and_counted_once(tiny_model_dir, tmp_path, monkeypatch):
    """The failed attempt's partial gradients are dropped: the run ends where a run checkpointed from the start
    ends (plain SGD, so gradients counted twice would show as a different adapter)."""
    from trl import DPOConfig

    from roleforge.training import fast_dpo
    from roleforge.training.engines import roleforge_trainer

    tokenizer = load_tokenizer(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")

    def train(name, checkpointing):
        torch.manual_seed(0)
        args = DPOConfig(output_dir=str(tmp_path / name), report_to="none", use_cpu=True, bf16=False, optim="sgd",
                         learning_rate=0.5, per_device_train_batch_size=2, max_steps=2, save_strategy="no",
                         activation_checkpointing=checkpointing, disable_tqdm=True)
        trainer = roleforge_trainer(load_model(tiny_model_dir), args, lora, None, tokenizer, PAIRS, SYSTEM, [],
                                    tmp_path / name / "reference.json")
        trainer.train()
        return trainer, {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}

    real = fast_dpo.SharedPrefixDPOTrainer.compute_loss
    failures = []

    def out_of_memory_once(self, model, inputs, *args, **kwargs):
        loss = real(self, model, inputs, *args, **kwargs)
        if not failures:
            failures.append(self.state.global_step)
            loss.backward()  # as if the backward had run out of memory after accumulating some gradients
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return loss

    _, from_start = train("from-start", True)
    monkeypatch.setattr(fast_dpo.SharedPrefixDPOTrainer, "compute_loss", out_of_memory_once)
    trainer, recovered = train("recovered", False)
    assert failures == [0] and trainer.checkpointing_since == 0 and trainer.state.global_step == 2
    assert trainer.model.get_base_model().is_activation_checkpointing
    for name, value in from_start.items():
        assert torch.allclose(recovered[name], value, atol=1e-6), name
    assert any(not torch.equal(value, torch.zeros_like(value)) for value in recovered.values())


def test_each_prompt_runs_once_for_its_chosen_and_rejected_completion(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    prefix, examples = tokenize_pairs(tokenizer, SYSTEM, PAIRS, max_length=1024)
    batch = collate(examples, tokenizer.pad_token_id)
    seen = []
    model = lora_model(tiny_model_dir)
    model.get_base_model().model.embed_tokens.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape))
    with torch.no_grad():
        sequence_logps(model, torch.tensor(prefix), batch)
    prompt_width = max(len(e["prompt_ids"]) for e in examples)
    completion_width = max(len(e[side]) for e in examples for side in ("chosen_ids", "rejected_ids"))
    assert seen == [(1, len(prefix)), (len(PAIRS), prompt_width), (2 * len(PAIRS), completion_width)]
    prompt_tokens = sum(len(e["prompt_ids"]) for e in examples)
    completion_tokens = sum(len(e["chosen_ids"]) + len(e["rejected_ids"]) for e in examples)
    assert tokens_through(batch, len(prefix), logps_path(model, batch)) == len(prefix) + prompt_tokens + completion_tokens
    assert tokens_through(batch, len(prefix), "checkpointed") == 2 * len(PAIRS) * len(prefix) + 2 * prompt_tokens + completion_tokens


def test_a_packed_batch_is_one_row_without_padding_and_the_attention_is_eager_elsewhere(tiny_model_dir):
    """Packed, the decoder sees the prefix once and then one row holding every prompt once and every completion,
    with no padding at all. Outside a packed call, the registered attention is the model's eager attention: logits
    of a padded batch, and generation, are the same."""
    tokenizer = load_tokenizer(tiny_model_dir)
    prefix, examples = tokenize_pairs(tokenizer, SYSTEM, PAIRS, max_length=1024)
    batch = collate(examples, tokenizer.pad_token_id)
    seen = []
    model = lora_model(tiny_model_dir, pooled_attention())
    model.get_base_model().model.embed_tokens.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape))
    with torch.no_grad():
        sequence_logps(model, torch.tensor(prefix), batch)
    tokens = sum(len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"]) for e in examples)
    assert logps_path(model, batch) == "packed" and seen == [(1, len(prefix)), (1, tokens)]

    eager = lora_model(tiny_model_dir, "eager").eval()
    model.eval()
    with torch.no_grad():
        rows = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        assert torch.allclose(model(**rows).logits, eager(**rows).logits, atol=1e-5)
        prompt = tokenizer(["What is 2 plus 2?"], return_tensors="pt")
        assert torch.equal(model.generate(**prompt, max_new_tokens=8, do_sample=False),
                           eager.generate(**prompt, max_new_tokens=8, do_sample=False))


def test_the_benchmark_counts_the_matmul_flops_a_training_step_runs(tiny_model_dir):
    """bench dpo's MFU numerator: the FLOPs it counts from the tokens a step reports are the linear layers'
    forward and input-gradient matmuls that torch runs (a pair without padding; the frozen base takes no weight
    gradients). Counted but not run: the last layer's queries, output projection and MLP for the prefix and prompt
    positions, whose outputs no loss reads, so autograd skips their backward (11% here, on two layers; 1 in 60 of
    those positions' work on a 30-layer model)."""
    from torch.utils.flop_counter import FlopCounterMode

    from roleforge.bench.dpo import matmul_params, training_flops

    tokenizer, model = load_tokenizer(tiny_model_dir), load_model(tiny_model_dir)
    model.requires_grad_(False).enable_input_require_grads()
    pair = {"prompt": "What is 2 plus 6?", "chosen": "Thought: add. 8", "rejected": "Thought: add. 8"}
    prefix, examples = tokenize_pairs(tokenizer, SYSTEM, [pair], max_length=1024)
    batch = collate(examples, tokenizer.pad_token_id)
    with FlopCounterMode(display=False) as counter:
        sums, counts = sequence_logps(model, torch.tensor(prefix), batch)
        sums.sum().backward()
    ran = counter.get_flop_counts()["Global"]
    assert set(map(str, ran)) == {"aten.mm"}
    counted = training_flops(*matmul_params(model), tokens_through(batch, len(prefix), logps_path(model, batch)), int(counts.sum()))
    assert ran[torch.ops.aten.mm] <= counted <= 1.15 * ran[torch.ops.aten.mm]


HEAP_PROBE = """
import json, resource, torch
from roleforge.ops.memory import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, glibc, heap_kept

def faults_of_ten_buffers():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.ones(2 * 2**20)  # 8 MiB, written (faulted in) and freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

libc = glibc()
libc.mallopt(M_MMAP_THRESHOLD, 128 * 2**10)  # glibc's starting thresholds, held there
libc.mallopt(M_TRIM_THRESHOLD, 128 * 2**10)
outside = faults_of_ten_buffers()
with heap_kept():
    faults_of_ten_buffers()  # the heap grows once
    inside = faults_of_ten_buffers()
print(json.dumps({"outside": outside, "inside": inside}))
"""


@pytest.mark.skipif(glibc() is None, reason="glibc's allocator only")
def test_training_keeps_freed_buffers_in_the_heap_instead_of_faulting_them_in_again():
    """A step's activations are freed and allocated again every step. With glibc's starting thresholds each 8 MiB
    buffer is mapped anew (2,048 page faults each time); inside heap_kept it is reused. In a process of its own:
    a heap that earlier tests left with free room would serve the buffers without faults either way."""
    import json
    import subprocess
    import sys

    probe = subprocess.run([sys.executable, "-c", HEAP_PROBE], capture_output=True, text=True, check=True, timeout=300)
    faults = json.loads(probe.stdout.strip().splitlines()[-1])
    assert faults["outside"] >= 10 * 2048 * 0.9
    assert faults["inside"] < 2048


@pytest.mark.parametrize("head_trains", [False, True])
def test_soft_targets_give_the_weighted_log_probs_and_their_gradient(head_trains):
    """A soft target (k candidate tokens with weights, replay's distillation) through the chunked head: the weighted
    sum of log-softmax values, with autograd's gradient; one candidate of weight 1 is the one-hot target."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    head.weight.requires_grad_(head_trains)
    hidden = torch.randn(7, 16, requires_grad=True)
    ids = torch.randint(0, 50, (7, 4))
    weights = torch.softmax(torch.randn(7, 4), dim=-1)
    upstream = torch.randn(7)

    def value_and_grad(logps):
        (logps * upstream).sum().backward()
        grad, hidden.grad = hidden.grad.clone(), None
        if head_trains:
            head.weight.grad = None
        return logps.detach(), grad

    soft, soft_grad = value_and_grad(completion_token_logps(head, hidden, ids, chunk=3, weights=weights))
    full, full_grad = value_and_grad((torch.log_softmax(head(hidden), dim=-1).gather(1, ids) * weights).sum(1))
    assert torch.allclose(soft, full, atol=1e-5) and torch.allclose(soft_grad, full_grad, atol=1e-5)
    one_hot = torch.zeros(7, 4)
    one_hot[:, 0] = 1.0
    assert torch.allclose(completion_token_logps(head, hidden, ids, chunk=3, weights=one_hot),
                          completion_token_logps(head, hidden, ids[:, 0], chunk=3), atol=1e-6)


def test_replay_soft_targets_are_the_references_top_k_and_every_path_reads_them_in_order(tiny_model_dir):
    from roleforge.models.base import decoder_and_head, inference_autocast
    from roleforge.training.fast_dpo import set_chosen_soft_targets
    from roleforge.training.reference_store import pair_keys

    tokenizer = load_tokenizer(tiny_model_dir)
    model = lora_model(tiny_model_dir, pooled_attention())
    prefix, examples = tokenize_pairs(tokenizer, SYSTEM, PAIRS, max_length=1024)
    keys_before = pair_keys("reference", prefix, examples)
    replayed = examples[1:3]
    with model.disable_adapter():
        set_chosen_soft_targets(model, prefix, replayed, top_k=5, pad_id=tokenizer.pad_token_id)
        decoder, head = decoder_and_head(model)
        with torch.no_grad(), inference_autocast():
            for example in replayed:
                sequence = torch.tensor([prefix + example["prompt_ids"] + example["chosen_ids"]])
                logits = head(decoder(input_ids=sequence).last_hidden_state[0]).float()
                start = len(prefix) + len(example["prompt_ids"]) - 1
                expected = logits[start:start + len(example["chosen_ids"])].topk(5, dim=-1).indices
                assert len(example["chosen_soft_ids"]) == len(example["chosen_ids"])
                assert torch.equal(torch.tensor(example["chosen_soft_ids"])[:, 0], expected[:, 0])
                assert torch.allclose(torch.tensor(example["chosen_soft_weights"]).sum(1), torch.ones(len(expected)))
    changed = [a != b for a, b in zip(keys_before, pair_keys("reference", prefix, examples))]
    assert changed == [False, True, True, False, False], "a distilled pair has its own reference value"

    batch = collate(examples, tokenizer.pad_token_id)
    assert batch["soft_ids"].size(0) == int(batch["completion_mask"].sum())
    with torch.no_grad():
        packed, _ = sequence_logps(model, torch.tensor(prefix), batch)
        rows, _ = sequence_logps(model, torch.tensor(prefix), {k: v for k, v in batch.items() if k not in PAIR_KEYS})
        _, plain = tokenize_pairs(tokenizer, SYSTEM, PAIRS, max_length=1024)
        hard, _ = sequence_logps(model, torch.tensor(prefix), collate(plain, tokenizer.pad_token_id))
    assert torch.allclose(packed, rows, atol=1e-4)
    distilled = [1, 2]  # the chosen rows of pairs 1 and 2; rows 5-9 are the rejected ones
    others = [i for i in range(2 * len(PAIRS)) if i not in distilled]
    assert torch.allclose(packed[others], hard[others], atol=1e-4), "other rows keep their one-hot targets"
    assert not torch.allclose(packed[distilled], hard[distilled], atol=1e-2)


def test_a_step_in_micro_batches_makes_the_same_update_as_one_batch(tiny_model_dir, tmp_path):
    """gradient_accumulation_steps splits a step's pairs to bound memory (the default profile's 4 x 2): the adapter
    after the step is the one a single batch of all its pairs gives, DPO and SFT terms both."""
    from trl import DPOConfig

    from roleforge.training.engines import roleforge_trainer

    tokenizer = load_tokenizer(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    pairs = PAIRS + [{**pair, "prompt": pair["prompt"] + " Be exact.", "rejected": pair["rejected"] * 4} for pair in PAIRS[:3]]

    def adapter_after_one_step(batch, accumulation):
        torch.manual_seed(0)
        args = DPOConfig(output_dir=str(tmp_path / f"{batch}x{accumulation}"), report_to="none", use_cpu=True, bf16=False,
                         optim="sgd", learning_rate=0.5, per_device_train_batch_size=batch,
                         gradient_accumulation_steps=accumulation, max_steps=1, save_strategy="no", disable_tqdm=True,
                         loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0])
        trainer = roleforge_trainer(load_model(tiny_model_dir), args, lora, None, tokenizer, pairs, SYSTEM, [],
                                    tmp_path / f"{batch}x{accumulation}" / "reference.json")
        trainer.train()
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}

    whole = adapter_after_one_step(8, 1)
    assert any(value.abs().max() > 0 for value in whole.values())  # the step moved the adapter (B starts at zero)
    for batch, accumulation in ((4, 2), (2, 4)):
        split = adapter_after_one_step(batch, accumulation)
        for name, value in whole.items():
            assert torch.allclose(split[name], value, atol=1e-6, rtol=1e-4), (batch, accumulation, name)


def test_a_later_night_takes_the_replayed_answers_distillation_targets_from_the_store(tiny_model_dir, tmp_path, monkeypatch):
    """The replayed answers are the same every night: their distillation targets are computed once, and a later
    training gets the very values the first computed, reference log-probs included."""
    from trl import DPOConfig

    from roleforge.training import fast_dpo
    from roleforge.training.engines import roleforge_trainer
    from roleforge.training.reference_store import ReferenceStore
    from roleforge.training.replay import REPLAY_SOURCE

    tokenizer = load_tokenizer(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    replayed = [{"prompt": "Why is the sky blue?", "chosen": "Light scatters in the air.", "rejected": PAIRS[0]["chosen"],
                 "source": REPLAY_SOURCE},
                {"prompt": "Name a colour.", "chosen": "Red.", "rejected": PAIRS[1]["chosen"], "source": REPLAY_SOURCE}]
    store = ReferenceStore(tmp_path / "kept.db")
    distilled: list[int] = []
    real = fast_dpo.set_chosen_soft_targets

    def counted(model, prefix, examples, *args, **kwargs):
        distilled.append(len(examples))
        return real(model, prefix, examples, *args, **kwargs)

    monkeypatch.setattr(fast_dpo, "set_chosen_soft_targets", counted)

    def night(name, pairs):
        args = DPOConfig(output_dir=str(tmp_path / name), report_to="none", use_cpu=True, bf16=False, max_steps=1,
                         per_device_train_batch_size=2, save_strategy="no", disable_tqdm=True)
        trainer = roleforge_trainer(load_model(tiny_model_dir), args, lora, None, tokenizer, pairs, SYSTEM, [],
                                    tmp_path / name / "reference.json", store, replay_top_k=4)
        trainer.model.unload()
        return {tuple(e["prompt_ids"] + e["chosen_ids"]): e for e in trainer.train_dataset if "chosen_soft_ids" in e}

    first = night("one", PAIRS[:3] + replayed)
    second = night("two", PAIRS[2:] + replayed)  # the role's pairs changed; the replayed answers did not
    assert distilled == [2]
    assert len(first) == 2 and first.keys() == second.keys()
    for key, example in first.items():
        for field in ("chosen_soft_ids", "chosen_soft_weights", "ref_chosen"):
            assert second[key][field] == example[field], field
    third = night("three", PAIRS[:3] + replayed[:1] + [{**replayed[1], "chosen": "Blue."}])  # one answer is new
    assert distilled == [2, 1]
    assert len(third) == 2
