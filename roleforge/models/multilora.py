"""Many LoRA adapters on one frozen base, each row of a batch through its own, in two matmuls per layer.

PEFT's mixed-adapter batches split every LoRA layer's input by adapter and run each adapter's matrices on its rows:
a few small kernels and Python calls per adapter, per layer, per decoding step. Here each targeted Linear holds every
adapter's A matrices side by side and their B matrices stacked (scaling folded in). A batch computes x @ A_all for
all ranks at once, zeroes the columns of adapters a row does not use, and adds that @ B_all: the same sum as
PEFT's, at a cost that no longer grows with the number of adapters in the batch. Adapters come and go by name
between batches (hot swap), and `detach` gives the base model back as it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from roleforge.ops.errors import RoleforgeError

_UNSUPPORTED = ("use_dora", "fan_in_fan_out", "modules_to_save", "lora_bias", "trainable_token_indices")


@dataclass
class _Pair:
    a: torch.Tensor  # [in, rank]
    b: torch.Tensor  # [rank, out], already multiplied by the adapter's scaling


class _Rows:
    """The adapter each row of the next forward passes uses (None: the base model), or one adapter for every row,
    shared by every layer."""

    def __init__(self) -> None:
        self.names: list[str | None] | str | None = None
        self.version = 0


class LoRALinear(nn.Module):
    """A frozen Linear plus every attached adapter's low-rank update, selected per row."""

    def __init__(self, base: nn.Linear, rows: _Rows) -> None:
        super().__init__()
        self.base, self._rows = base, rows
        self.pairs: dict[str, _Pair] = {}
        self._a: torch.Tensor | None = None  # [in, total rank]
        self._b: torch.Tensor | None = None  # [total rank, out]
        self._spans: dict[str, tuple[int, int]] = {}
        self._selected: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        self._selected_version = -1

    def restack(self) -> None:
        """Rebuilds the side-by-side matrices after an adapter came or went."""
        self._selected_version, self._spans = -1, {}
        if not self.pairs:
            self._a = self._b = None
            return
        start = 0
        for name, pair in self.pairs.items():
            self._spans[name] = (start, start + pair.a.shape[1])
            start += pair.a.shape[1]
        self._a = torch.cat([pair.a for pair in self.pairs.values()], dim=1)
        self._b = torch.cat([pair.b for pair in self.pairs.values()])

    def _selection(self, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """(A, B, row mask) for this batch: one adapter's own matrices when every row uses it; all of them and a
        [rows, 1, total rank] mask of each row's columns when rows differ; None when no row uses one here."""
        names = self._rows.names
        if self._selected_version != self._rows.version:
            self._selected_version, self._selected = self._rows.version, None
            chosen = set([names] if isinstance(names, str) else names or ())
            if len(chosen) == 1 and next(iter(chosen)) in self._spans:
                pair = self.pairs[next(iter(chosen))]  # type: ignore[index]
                self._selected = (pair.a, pair.b, None)
            elif chosen & set(self._spans):
                assert self._a is not None and self._b is not None and isinstance(names, list)
                mask = torch.zeros(len(names), 1, self._a.shape[1], dtype=self._a.dtype, device=self._a.device)
                for row, name in enumerate(names):
                    if name in self._spans:
                        start, end = self._spans[name]
                        mask[row, 0, start:end] = 1
                self._selected = (self._a, self._b, mask)
        if isinstance(names, list) and len(names) != rows:
            raise RuntimeError(f"a batch of {rows} rows ran with adapters chosen for {len(names)}")
        return self._selected

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        selected = self._selection(x.shape[0]) if self._a is not None and self._rows.names is not None else None
        if selected is None:
            return out
        a, b, mask = selected
        low = torch.matmul(x.to(a.dtype), a)
        if mask is not None:
            low = low * mask.view(x.shape[0], *([1] * (x.dim() - 2)), -1)
        return out + torch.matmul(low, b).to(out.dtype)


class MultiLoRA:
    """Adapters attached to a base model by name, each batch row through the one `rows()` names for it.

    Args:
        model: a plain transformers model (no PEFT wrapper). Its targeted Linear layers are wrapped in place
            until `detach()`.
        dtype: the adapter matrices' dtype; the base model's by default.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype | None = None) -> None:
        self.model = model
        self.dtype = dtype or next(model.parameters()).dtype
        self._rows = _Rows()
        self._layers: dict[str, LoRALinear] = {}
        self.adapters: dict[str, set[str]] = {}  # name -> the modules it changes

    def add(self, name: str, path: str | Path) -> None:
        """Attaches the PEFT LoRA adapter saved at path (safetensors only) under name, replacing one of that name."""
        from safetensors.torch import load_file

        from roleforge.models.base import lora_config

        directory = Path(path)
        config = lora_config(directory)
        for option in _UNSUPPORTED:
            if config.get(option) not in (None, False, [], "none"):
                raise RoleforgeError(f"{directory} uses {option}, which mixed-adapter serving does not support")
        weights = load_file(str(directory / "adapter_model.safetensors"))
        pairs = _pairs(weights, config, directory)
        modules = dict(self.model.named_modules())
        for module_name in pairs:
            target = modules.get(module_name)
            if not isinstance(target, (nn.Linear, LoRALinear)):
                raise RoleforgeError(f"{directory} targets {module_name}, which is not a Linear layer of the base model")
        if name in self.adapters:
            self.remove(name)
        device = next(self.model.parameters()).device
        for module_name, (a, b) in pairs.items():
            layer = self._layer(module_name, modules)
            if a.shape[1] != layer.base.in_features or b.shape[0] != layer.base.out_features:
                raise RoleforgeError(f"{directory} does not fit the base model at {module_name}: lora_A {list(a.shape)}, "
                                     f"lora_B {list(b.shape)}, base weight {list(layer.base.weight.shape)}")
            layer.pairs[name] = _Pair(a.t().contiguous().to(device, self.dtype), b.t().contiguous().to(device, self.dtype))
            layer.restack()
        self.adapters[name] = set(pairs)
        self._rows.version += 1

    def remove(self, name: str) -> None:
        for module_name in self.adapters.pop(name, set()):
            layer = self._layers[module_name]
            layer.pairs.pop(name, None)
            layer.restack()
        self._rows.version += 1

    @contextmanager
    def rows(self, names: list[str | None] | str | None) -> Iterator[None]:
        """Forward passes inside run row i through adapter names[i] (None: the base model); a single name runs every
        row of any batch through that adapter."""
        self.select(names)
        try:
            yield
        finally:
            self._rows.names, self._rows.version = None, self._rows.version + 1

    def select(self, names: list[str | None] | str | None) -> None:
        """Changes the rows' adapters inside `rows()`: a batch that drops its finished rows keeps the others'."""
        listed = [names] if not isinstance(names, list) else names
        unknown = {name for name in listed if name is not None and name not in self.adapters}
        if unknown:
            raise RoleforgeError(f"no adapter attached as {sorted(unknown)}")
        self._rows.names = list(names) if isinstance(names, list) else names
        self._rows.version += 1

    def detach(self) -> None:
        """Puts every wrapped Linear back: the base model as it was before the first adapter."""
        for module_name, layer in self._layers.items():
            parent, _, child = module_name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, child, layer.base)
        self._layers.clear()
        self.adapters.clear()

    def _layer(self, module_name: str, modules: dict[str, nn.Module]) -> LoRALinear:
        if module_name not in self._layers:
            layer = LoRALinear(modules[module_name], self._rows)  # type: ignore[arg-type]
            parent, _, child = module_name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, child, layer)
            self._layers[module_name] = layer
        return self._layers[module_name]


@contextmanager
def inference_adapters(base_model: Path, adapters: dict[str, Path | None]) -> Iterator[tuple[nn.Module, MultiLoRA]]:
    """The process's generating copy of the base model (lent by the pool, in the hardware's inference dtype) with
    `adapters` attached by name (a None path is skipped), and every one taken off again on the way out."""
    from roleforge.models.base import BASE_MODELS, inference_dtype

    with BASE_MODELS.lend(base_model, dtype=inference_dtype()) as model:
        lora = MultiLoRA(model)
        try:
            for name, path in adapters.items():
                if path is not None:
                    lora.add(name, path)
            yield model.eval(), lora
        finally:
            lora.detach()


def _pairs(weights: dict[str, torch.Tensor], config: dict[str, Any], directory: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each targeted module's (A, scaling * B), keyed by its name in the base model, with PEFT's per-module rank and
    alpha patterns and rsLoRA scaling applied."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if match is None:
            raise RoleforgeError(f"{directory} holds {key}, which is not a LoRA matrix")
        found.setdefault(match.group(1), {})[match.group(2)] = tensor.float()
    pairs = {}
    for module_name, matrices in found.items():
        if set(matrices) != {"A", "B"}:
            raise RoleforgeError(f"{directory} has lora_A or lora_B missing for {module_name}")
        rank = matrices["A"].shape[0]
        alpha = _pattern(config.get("alpha_pattern") or {}, module_name, config.get("lora_alpha", rank))
        scaling = alpha / (rank ** 0.5 if config.get("use_rslora") else rank)
        pairs[module_name] = (matrices["A"], matrices["B"] * scaling)
    return pairs


def _pattern(patterns: dict[str, Any], module_name: str, default: Any) -> Any:
    """PEFT's rank/alpha pattern lookup: a key matches the module's full name or a dotted suffix of it."""
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{key}", module_name):
            return value
    return default
