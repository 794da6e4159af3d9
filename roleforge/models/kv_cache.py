"""A KV cache for batched decoding that writes each step's keys and values in place.

transformers' DynamicCache concatenates every layer's whole cache with the new token at each step: on a CPU those
copies were the largest cost of a decoding step at evaluation's batch sizes (docs/perf-notes.md). Here each layer
keeps buffers with room to grow, doubling when full, and attention reads a view of the filled part."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

# Room made at the first update beyond its own tokens: one batch's answers rarely need more.
FIRST_ROOM = 128


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views of buffers with spare room along the sequence."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._keys is None or end > self._keys.shape[-2]:
            room = max(end + FIRST_ROOM, 2 * end) if self._keys is None else 2 * end
            self._keys, self._values = self._grown(self._keys, key_states, room), self._grown(self._values, value_states, room)
        self._keys[..., self._length:end, :] = key_states
        self._values[..., self._length:end, :] = value_states
        self._length = end
        self.keys, self.values = self._keys[..., :end, :], self._values[..., :end, :]
        return self.keys, self.values

    def _grown(self, buffer: torch.Tensor | None, states: torch.Tensor, room: int) -> torch.Tensor:
        grown = states.new_empty(*states.shape[:-2], room, states.shape[-1])
        if buffer is not None:
            grown[..., :self._length, :] = buffer[..., :self._length, :]
        return grown

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self.keys, self.values = self._keys[..., :self._length, :], self._values[..., :self._length, :]

    def _rebase(self) -> None:
        """After an operation of the parent class that replaced keys and values: they become the buffers."""
        self._keys, self._values = self.keys, self.values
        self._length = 0 if self.keys is None else self.keys.shape[-2]

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self._rebase()

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._rebase()

    def reset(self) -> None:
        super().reset()
        self._keys = self._values = None
        self._length = 0


class GrowingCache(DynamicCache):
    """A DynamicCache made of GrowingLayers."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)
