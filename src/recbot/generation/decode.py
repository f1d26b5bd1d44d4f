"""Decoding pieces shared by ``GPT2Writer.generate_now`` and the continuous batcher.

- ``GrowingLayer``: a KV-cache layer whose keys and values live in a buffer with room to
  grow. transformers' ``DynamicLayer`` concatenates every step, which copies the whole
  cache per token: on the demo generator that copy was a third of a 300-row ``generate``
  (``torch.cat`` 1.7 s of 5.4 s). Here a step writes one column in place; the buffer
  doubles when full.
- ``RunningBatch``: the rows of many requests decoded together, one token a step, which
  requests join (left-padded to the batch's columns) and leave (rows compacted away)
  between steps. ``recbot.generation.batching`` drives it.
- ``positions``: GPT-2 position ids for left-padded rows, as ``generate`` makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transformers.cache_utils import Cache, DynamicLayer

if TYPE_CHECKING:
    import torch

__all__ = ["GrowingLayer", "PreparedRows", "RunningBatch", "growing_cache", "positions"]


@dataclass
class PreparedRows:
    """One request's rows, ready to decode: left-padded ids and mask (one row a candidate
    when sampling), the logits processors (the last draws the token), the beam count
    (1 when sampling) and how many rows each prompt has."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    processors: Any
    beams: int
    per_prompt: int


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: 0 at each row's first real token (pads get 1)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes into a buffer instead of concatenating.

    ``keys``/``values`` are views of the first ``length`` columns of the buffers, so the
    rest of transformers reads them as it reads a dynamic layer's tensors.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length = 0
        self._k = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[-1]))
        self._v = value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[-1]))

    def _reserve(self, columns: int) -> None:
        if columns <= self._k.shape[2]:
            return
        import torch

        capacity = max(columns, 2 * self._k.shape[2], 64)
        shape = (*self._k.shape[:2], capacity, self._k.shape[-1])
        k, v = torch.empty(shape, dtype=self._k.dtype), torch.empty(shape, dtype=self._v.dtype)
        k[:, :, : self.length] = self._k[:, :, : self.length]
        v[:, :, : self.length] = self._v[:, :, : self.length]
        self._k, self._v = k, v

    def _set(self, k: torch.Tensor, v: torch.Tensor, length: int) -> None:
        self._k, self._v, self.length = k, v, length
        self.keys, self.values = k[:, :, :length], v[:, :, :length]

    def _place(self, k: torch.Tensor, v: torch.Tensor, room: int = 64) -> None:
        """Hold ``k``/``v`` (all columns used) with ``room`` columns to grow into."""
        import torch

        shape = (*k.shape[:2], k.shape[2] + room, k.shape[3])
        self._k, self._v = torch.empty(shape, dtype=k.dtype), torch.empty(shape, dtype=v.dtype)
        self._k[:, :, : k.shape[2]] = k
        self._v[:, :, : v.shape[2]] = v
        self._set(self._k, self._v, k.shape[2])

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[2]
        self._reserve(self.length + new)
        self._k[:, :, self.length : self.length + new] = key_states
        self._v[:, :, self.length : self.length + new] = value_states
        self._set(self._k, self._v, self.length + new)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached keys and values, ``[rows, heads, length, head_dim]`` each."""
        return self._k[:, :, : self.length], self._v[:, :, : self.length]

    def reset(self) -> None:
        super().reset()
        self.length = 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove < 0 and self.is_initialized:
            self._set(self._k, self._v, max(0, self.length + tokens_to_remove))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            keys, values = self.kv()
            self._place(keys.repeat_interleave(repeats, 0), values.repeat_interleave(repeats, 0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._set(self._k[indices], self._v[indices], self.length)

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._set(self._k.index_select(0, beam_idx), self._v.index_select(0, beam_idx), self.length)


def growing_cache() -> Cache:
    """An empty cache of ``GrowingLayer``s (one added per model layer on first use)."""
    return Cache(layer_class_to_replicate=GrowingLayer)


class RunningBatch:
    """The rows being decoded together: their cache, attention mask, position and next
    input token. Rows are added with their prompts' cache (``add``), advanced one token
    at a time (``step``) and dropped when done (``keep``); the columns every kept row
    pads are trimmed, so the cache spans at most the longest live row.
    """

    def __init__(self) -> None:
        self.cache: Cache | None = None
        self.mask: torch.Tensor | None = None  # [rows, columns]: 1 where a row has a token
        self.position: torch.Tensor | None = None  # [rows]: the position of the token fed next
        self.feed: torch.Tensor | None = None  # [rows]: the token fed next

    @property
    def rows(self) -> int:
        return 0 if self.feed is None else int(self.feed.shape[0])

    def add(self, joining: list[tuple[Cache, torch.Tensor, torch.Tensor]], keep: torch.Tensor | None = None) -> None:
        """Append rows, one ``(prefix, mask, last)`` a request: ``prefix`` caches its
        prompts but the last token (``mask`` its columns), ``last`` is each row's last
        prompt token, which the next step feeds. ``keep``: the running rows to keep (all
        when None). Everything is left-padded to one width and written into one new
        buffer per layer: one copy of the cache however many join."""
        import torch

        parts: list[tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]] = []  # ([(k, v) a layer], mask)
        positions_, feeds = [], []
        if self.cache is not None and self.mask is not None and self.feed is not None and self.position is not None:
            rows = keep if keep is not None else torch.arange(self.rows)
            layers = [(k[rows], v[rows]) for k, v in _kvs(self.cache)]
            parts.append((layers, self.mask[rows]))
            positions_.append(self.position[rows])
            feeds.append(self.feed[rows])
        for prefix, mask, last in joining:
            layers = _kvs(prefix)
            parts.append((layers, mask.long()))
            positions_.append(mask.long().sum(-1))  # the last token's position: after the prefix's tokens
            feeds.append(last)
        self.position, self.feed = torch.cat(positions_), torch.cat(feeds)
        width = max(m.shape[1] for _, m in parts)
        self.mask = torch.cat([torch.nn.functional.pad(m, (width - m.shape[1], 0)) for _, m in parts])
        self.cache = growing_cache()
        like = next((layers for layers, _ in parts if layers), None)
        if like is None or width == 0:
            return
        for i in range(len(like)):
            k0 = like[i][0]
            shape = (self.rows, k0.shape[1], width + 64, k0.shape[3])  # room for 64 steps
            k_buf, v_buf = k0.new_zeros(shape), k0.new_zeros(shape)
            start = 0
            for layers, mask in parts:
                if layers:
                    k, v = layers[i]
                    k_buf[start : start + mask.shape[0], :, width - k.shape[2] : width] = k
                    v_buf[start : start + mask.shape[0], :, width - v.shape[2] : width] = v
                start += mask.shape[0]
            layer = GrowingLayer()
            layer.lazy_initialization(k0, k0)
            layer._set(k_buf, v_buf, width)
            self.cache.layers.append(layer)

    def step(self, model: Any) -> torch.Tensor:
        """Feed each row its next token; the logits of the next one, ``[rows, vocab]``."""
        import torch

        assert self.mask is not None and self.feed is not None and self.position is not None
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)
        out = model(
            input_ids=self.feed[:, None],
            attention_mask=self.mask,
            position_ids=self.position[:, None],
            cache=self.cache,
            use_cache=True,
        )
        self.position = self.position + 1
        return out.logits[:, -1, :]

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices), and trim the columns none of them uses."""
        assert self.mask is not None and self.feed is not None and self.position is not None
        if len(rows) == 0:
            self.cache = self.mask = self.position = self.feed = None
            return
        mask = self.mask[rows]
        used = mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else mask.shape[1]
        self.mask, self.position, self.feed = mask[:, first:], self.position[rows], self.feed[rows]
        assert self.cache is not None
        for layer in self.cache.layers:
            if isinstance(layer, GrowingLayer) and layer.get_seq_length() > 0:
                k, v = layer.kv()
                layer._place(k[rows, :, first:], v[rows, :, first:])


def _kvs(cache: Cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each non-empty layer's keys and values (``GrowingLayer``s, as ``growing_cache`` makes)."""
    return [layer.kv() for layer in cache.layers if isinstance(layer, GrowingLayer) and layer.get_seq_length()]
