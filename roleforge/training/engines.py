"""Training engines for one DPO LoRA adapter: stock TRL DPOTrainer, and roleforge's shared-prefix path
(roleforge/training/fast_dpo.py). Free of orchestration imports, so benchmarks and remote jobs can use them alone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from roleforge.training.reference_store import ReferenceStore, reference_identity


def conversation_records(pairs: list[dict[str, Any]], system_prompt: str) -> list[dict[str, Any]]:
    """Pairs in TRL's conversational preference format, with the role's system prompt."""
    return [{
        "prompt": [{"role": "system", "content": system_prompt}, {"role": "user", "content": pair["prompt"]}],
        "chosen": [{"role": "assistant", "content": pair["chosen"]}],
        "rejected": [{"role": "assistant", "content": pair["rejected"]}],
    } for pair in pairs]


def trl_trainer(base: Any, dpo_config: Any, lora_config: Any, base_adapter: Path | None, tokenizer: Any,
                pairs: list[dict[str, Any]], system_prompt: str, callbacks: list[Any]) -> Any:
    """Stock TRL DPOTrainer. A new LoRA adapter: TRL attaches it and the reference is the base with adapters off;
    an SFT adapter: loaded trainable, and TRL copies it into a frozen "ref" adapter, the reference."""
    from datasets import Dataset
    from trl import DPOTrainer

    model, peft_config = base, lora_config
    if base_adapter is not None:
        from roleforge.models.base import attach_adapter

        model, peft_config = attach_adapter(base, base_adapter, is_trainable=True), None
    try:
        return DPOTrainer(model=model, args=dpo_config, processing_class=tokenizer, peft_config=peft_config,
                          train_dataset=Dataset.from_list(conversation_records(pairs, system_prompt)), callbacks=callbacks)
    except BaseException:
        if hasattr(model, "unload"):
            model.unload()
        raise


def roleforge_trainer(base: Any, dpo_config: Any, lora_config: Any, base_adapter: Path | None, tokenizer: Any,
                      pairs: list[dict[str, Any]], system_prompt: str, callbacks: list[Any], reference_cache: Path,
                      kept_references: ReferenceStore | None = None, replay_top_k: int = 0) -> Any:
    """roleforge's path (fast_dpo.py): the adapter attached here, reference log-probs computed once (adapter off, or
    the SFT adapter as a frozen "ref" copy) and cached beside the checkpoints; with `kept_references`, a pair's value
    from an earlier training under the same reference is taken from there instead of computed, and so are the replayed
    answers' distillation targets. With `replay_top_k`, each replay pair's chosen answer is trained on as the
    reference's top-k next-token distribution at every token (distillation) instead of its greedy tokens."""
    from contextlib import contextmanager

    from peft import get_peft_model

    from roleforge.training.dpo_batches import tokenize_pairs
    from roleforge.training.fast_dpo import (
        SharedPrefixDPOTrainer,
        cached_reference,
        reference_logps,
        set_chosen_soft_targets,
    )
    from roleforge.training.losses import check_losses
    from roleforge.training.replay import REPLAY_SOURCE

    losses, weights = check_losses({"loss_type": dpo_config.loss_type, "loss_weights": dpo_config.loss_weights})
    # Activations of a short-sequence DPO batch usually fit in memory, so the recipes keep them (recomputing only
    # costs time); `activation_checkpointing = true` in a recipe turns recomputation on, and a step that runs out of
    # accelerator memory turns it on by itself (fast_dpo.SharedPrefixDPOTrainer.training_step).
    if base_adapter is None:
        model = get_peft_model(base, lora_config)
    else:
        from roleforge.models.base import attach_adapter

        model = attach_adapter(attach_adapter(base, base_adapter, is_trainable=True), base_adapter, adapter_name="ref")
    try:
        prefix, examples = tokenize_pairs(tokenizer, system_prompt, pairs, dpo_config.max_length)

        @contextmanager
        def as_reference() -> Any:
            if base_adapter is None:
                with model.disable_adapter():
                    yield
                return
            model.set_adapter("ref")
            try:
                yield
            finally:
                model.set_adapter("default")
                for name, parameter in model.named_parameters():
                    parameter.requires_grad = "lora_" in name and ".default." in name

        base_dir = Path(base.name_or_path)
        parameter = next(base.parameters())
        # What the kept values depend on besides the pairs; None: a model made in memory has no files to name it by.
        identity = (reference_identity(base_dir, base_adapter, str(parameter.dtype), parameter.device.type)
                    if kept_references is not None and base_dir.is_dir() else None)

        def distill(subset: list[dict[str, Any]]) -> None:
            with as_reference():
                set_chosen_soft_targets(model, prefix, subset, replay_top_k, tokenizer.pad_token_id)

        replayed = [e for e, pair in zip(examples, pairs) if pair.get("source") == REPLAY_SOURCE]
        if replay_top_k > 0 and replayed:
            if identity is None:
                distill(replayed)
            else:
                kept_references.soft_targets(identity, prefix, replayed, replay_top_k, distill)
        key = hashlib.sha256(json.dumps([prefix, examples, str(base_adapter)]).encode()).hexdigest()

        computed: list[int] = []  # pairs whose reference log-probs this training computed (not kept from before)

        def compute(subset: list[dict[str, Any]]) -> list[tuple[float, float]]:
            computed.append(len(subset))
            with as_reference():
                return reference_logps(model, prefix, subset, tokenizer.pad_token_id)

        def every_pair() -> list[tuple[float, float]]:
            if identity is None:
                return compute(examples)
            return kept_references.reference(identity, prefix, examples, compute)

        for example, (chosen, rejected) in zip(examples, cached_reference(reference_cache, key, every_pair)):
            example["ref_chosen"], example["ref_rejected"] = chosen, rejected
        trainer = SharedPrefixDPOTrainer(
            model=model, args=dpo_config, train_dataset=examples, callbacks=callbacks, prefix_ids=prefix,
            pad_id=tokenizer.pad_token_id, loss_types=losses, loss_weights=weights, beta=dpo_config.beta)
        trainer.reference_pairs_computed = sum(computed)
        return trainer
    except BaseException:
        model.unload()
        raise
