"""Decoding pieces shared by ``GPT2Writer.generate_now`` and the continuous batcher.

- ``GrowingLayer``: a KV-cache layer whose keys and values live in a buffer with room to
  grow. transformers' ``DynamicLayer`` concatenates every step, which copies the whole
  cache per token: on the demo generator that copy was a third of a 300-row ``generate``
  (``torch.cat`` 1.7 s of 5.4 s). Here a step writes one column in place; the buffer
  doubles when full.
- ``RunningBatch`` (with ``SlotLayer``): the rows of many requests decoded together, one
  token a step, in row slots of preallocated buffers; requests join (left-padded to the
  batch's columns) and leave between steps without the cache being copied whole.
  ``recbot.generation.batching`` drives it.
- ``prefill``: the cache of a batch of prompts, without the work the cache does not keep.
- ``positions``: GPT-2 position ids for left-padded rows, as ``generate`` makes them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transformers.cache_utils import Cache, DynamicLayer

if TYPE_CHECKING:
    import torch

__all__ = ["GrowingLayer", "PreparedRows", "RunningBatch", "SlotLayer", "growing_cache", "positions", "prefill"]


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


class _Prefilled(Exception):
    """A ``_PrefixCache`` holds every layer's keys and values: the forward can stop."""


class _PrefixCache(Cache):
    """A growing cache that stops the forward pass (``_Prefilled``) once layer ``stop_at``
    has stored its keys and values; ``stop_at = -1`` makes it a plain growing cache."""

    def __init__(self, stop_at: int) -> None:
        super().__init__(layer_class_to_replicate=GrowingLayer)
        self.stop_at = stop_at

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kw: Any
    ) -> Any:
        out = super().update(key_states, value_states, layer_idx, *args, **kw)
        if layer_idx == self.stop_at:
            raise _Prefilled
        return out


def prefill(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Cache:
    """The growing cache of left-padded ``input_ids``, as a forward pass with ``use_cache``
    leaves it: every layer's keys and values, positions following the padding. The pass
    stops as the last layer stores its keys and values: that layer's attention, MLP and
    the logits are all a cache does not keep (a fifth of a 4-layer model's prompt work),
    and nothing before that point changes, so the cache is the full pass's, bit for bit."""
    cache = _PrefixCache(int(model.config.n_layer) - 1)
    with contextlib.suppress(_Prefilled):
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions(attention_mask),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    cache.stop_at = -1
    return cache


class SlotLayer(DynamicLayer):
    """One model layer's keys and values for a ``RunningBatch``: buffers of row slots x
    columns, of which the first ``rows`` slots and ``length`` columns are in use. The
    batch moves rows and columns; the model's ``update`` writes the step's column."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.is_initialized = True
        self.k_buf, self.v_buf = k, v
        self.rows = 0
        self.length = 0

    def view(self) -> None:
        self.keys = self.k_buf[: self.rows, :, : self.length]
        self.values = self.v_buf[: self.rows, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        new = key_states.shape[2]
        self.k_buf[: self.rows, :, self.length : self.length + new] = key_states
        self.v_buf[: self.rows, :, self.length : self.length + new] = value_states
        self.length += new
        self.view()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


class RunningBatch:
    """The rows being decoded together, in row slots of preallocated buffers: their keys
    and values (one ``SlotLayer`` a model layer), attention mask, position and next input
    token. Rows join with their prompts' cache (``add``), advance one token a step
    (``step``) and leave (``keep``). Joining writes only the new rows, and leaving moves
    only the rows that fill the gaps: the cache is never copied whole for a row that
    comes or goes. All rows share the column axis (left-padded); columns no live row
    uses are dropped when the buffer is full.

    ``add`` and ``keep`` return the new order of the old rows (``order[i]``: the old row
    now in slot i), for the caller's bookkeeping.
    """

    def __init__(self, model: Any, room: int = 64) -> None:
        config = model.config
        self.shape = (int(config.n_layer), int(config.n_head), int(config.n_embd) // int(config.n_head))
        self.dtype = next(model.parameters()).dtype
        self.room = room  # spare columns (and rows) a buffer is made with
        self.layers: list[SlotLayer] = []
        self.cache: Cache | None = None
        self.mask: torch.Tensor | None = None  # [slots, capacity]: 1 where a row has a token
        self.position: torch.Tensor | None = None  # [slots]: the position of the token fed next
        self.feed: torch.Tensor | None = None  # [slots]: the token fed next
        self.rows = 0
        self.width = 0  # columns in use

    def _alloc(self, slots: int, columns: int) -> None:
        """(Re)allocate the buffers for ``slots`` rows and ``columns`` columns, keeping what is in use."""
        import torch

        layers, heads, head_dim = self.shape
        shape = (slots, heads, columns, head_dim)
        old = self.layers
        self.layers = []
        for i in range(layers):
            layer = SlotLayer(torch.zeros(shape, dtype=self.dtype), torch.zeros(shape, dtype=self.dtype))
            if i < len(old):
                layer.k_buf[: self.rows, :, : self.width] = old[i].k_buf[: self.rows, :, : self.width]
                layer.v_buf[: self.rows, :, : self.width] = old[i].v_buf[: self.rows, :, : self.width]
            self.layers.append(layer)
        cache = Cache(layers=list(self.layers))
        self.cache = cache
        mask = torch.zeros((slots, columns), dtype=torch.long)
        position = torch.zeros(slots, dtype=torch.long)
        feed = torch.zeros(slots, dtype=torch.long)
        if self.mask is not None and self.position is not None and self.feed is not None:
            mask[: self.rows, : self.width] = self.mask[: self.rows, : self.width]
            position[: self.rows] = self.position[: self.rows]
            feed[: self.rows] = self.feed[: self.rows]
        self.mask, self.position, self.feed = mask, position, feed

    def _sync(self) -> None:
        for layer in self.layers:
            layer.rows, layer.length = self.rows, self.width
            layer.view()

    def _shift(self, by: int) -> None:
        """Move every row's columns ``by`` to the right (negative: to the left)."""
        assert self.mask is not None
        n, w = self.rows, self.width
        for layer in self.layers:
            for buf in (layer.k_buf, layer.v_buf):
                if by > 0:
                    buf[:n, :, by : w + by] = buf[:n, :, :w].clone()
                    buf[:n, :, :by] = 0
                else:
                    buf[:n, :, : w + by] = buf[:n, :, -by:w].clone()
        if by > 0:
            self.mask[:n, by : w + by] = self.mask[:n, :w].clone()
            self.mask[:n, :by] = 0
        else:
            self.mask[:n, : w + by] = self.mask[:n, -by:w].clone()
            self.mask[:n, w + by : w] = 0
        self.width += by

    def add(
        self, joining: list[tuple[Cache, torch.Tensor, torch.Tensor, int]], keep: torch.Tensor | None = None
    ) -> list[int]:
        """Append rows, one ``(prefix, mask, last, repeat)`` a request: ``prefix`` caches
        its prompts but the last token, once a prompt; each prompt has ``repeat`` rows
        (its candidates), which share that cache; ``mask`` is the rows' columns of it, and
        ``last`` each row's last prompt token, which the next step feeds. ``keep``: the
        running rows to keep (all when None). Returns the order of the kept old rows (the
        new rows follow them)."""
        order = self.keep(keep) if keep is not None else list(range(self.rows))
        parts = [(_kvs(prefix), mask.long(), last, repeat) for prefix, mask, last, repeat in joining]
        widest = max(m.shape[1] for _, m, _, _ in parts)
        if self.rows and widest > self.width:  # a longer prompt: every running row moves right
            self._make_room(widest + 1 - self.width)
            self._shift(widest - self.width)
        elif not self.rows:
            self.width = widest
        added = sum(m.shape[0] for _, m, _, _ in parts)
        slots, columns = (self.mask.shape[0], self.mask.shape[1]) if self.mask is not None else (0, 0)
        if self.rows + added > slots or self.width + 1 > columns:
            self._alloc(max(slots, self.rows + added + self.room), self.width + self.room)
        assert self.mask is not None and self.position is not None and self.feed is not None
        start = self.rows
        for kv, mask, last, repeat in parts:
            count, t = mask.shape
            stop = start + count
            self.mask[start:stop] = 0
            self.mask[start:stop, self.width - t : self.width] = mask
            for layer, (k, v) in zip(self.layers, kv, strict=False):
                for buf, new in ((layer.k_buf, k), (layer.v_buf, v)):
                    buf[start:stop, :, : self.width - t] = 0
                    # each prompt's cache into its ``repeat`` rows, in one copy (no repeated cache made)
                    rows = buf[start:stop].unflatten(0, (count // repeat, repeat))
                    rows[:, :, :, self.width - t : self.width] = new[:, None]
            self.position[start:stop] = mask.sum(-1)  # the last token's position: after the prefix's tokens
            self.feed[start:stop] = last
            start = stop
        self.rows = start
        self._sync()
        return order

    def _make_room(self, columns: int) -> None:
        """At least ``columns`` free columns after the used ones: drop the columns no row
        uses, else grow the buffers."""
        assert self.mask is not None
        if self.width + columns <= self.mask.shape[1]:
            return
        used = self.mask[: self.rows, : self.width].any(dim=0).nonzero()
        first = int(used[0]) if len(used) else self.width
        if first:
            self._shift(-first)
        if self.width + columns > self.mask.shape[1]:
            self._alloc(self.mask.shape[0], self.width + columns + self.room)

    def step(self, model: Any) -> torch.Tensor:
        """Feed each row its next token; the logits of the next one, ``[rows, vocab]``."""
        assert self.mask is not None and self.feed is not None and self.position is not None
        self._make_room(1)
        self._sync()
        n = self.rows
        self.mask[:n, self.width] = 1
        out = model(
            input_ids=self.feed[:n, None],
            attention_mask=self.mask[:n, : self.width + 1],
            position_ids=self.position[:n, None],
            cache=self.cache,
            use_cache=True,
        )
        self.width += 1
        self.position[:n] += 1
        return out.logits[:, -1, :]

    def keep(self, rows: torch.Tensor) -> list[int]:
        """Keep only ``rows`` (indices): the rows past the kept count move into the gaps.
        Returns the new order (``order[i]``: the old row now in slot i)."""
        kept = [int(r) for r in rows]
        count = len(kept)
        kept_set = set(kept)
        holes = [i for i in range(count) if i not in kept_set]
        movers = [r for r in kept if r >= count]
        order = list(range(count))
        if holes and self.mask is not None and self.position is not None and self.feed is not None:
            import torch

            src, dst = torch.tensor(movers), torch.tensor(holes)
            for layer in self.layers:
                layer.k_buf[dst] = layer.k_buf[src]
                layer.v_buf[dst] = layer.v_buf[src]
            self.mask[dst] = self.mask[src]
            self.position[dst] = self.position[src]
            self.feed[dst] = self.feed[src]
            for h, m in zip(holes, movers, strict=True):
                order[h] = m
        self.rows = count
        self._sync()
        return order


def _kvs(cache: Cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each non-empty layer's keys and values (``GrowingLayer``s, as ``growing_cache`` makes)."""
    return [layer.kv() for layer in cache.layers if isinstance(layer, GrowingLayer) and layer.get_seq_length()]
