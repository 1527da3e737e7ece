"""The device side of continuous batching: B decode slots sharing one KV cache.

Every request owns one slot (a row of the cache) from its prefill to its last token;
one jitted decode step advances all slots at once, each at its own length. The state
(`SlotState`) is one pytree whose arrays all lead with the slot axis.

A prefill writes one slot: its prompt left-padded to a bucket, from column `offset`
(0, or where a kept prefix ends: the prefix cache), and picks its first token. Column
S - 1 is scratch: a step writes idle slots' keys there, so an idle slot's row, kept
for the prefix cache, is never changed. Row b computes what `Generator` computes for a
batch of one: the same left-padded prompt, mask-derived positions, sampling and key
schedule, so a request's tokens do not depend on what else is running.

Adapters (compute.lora.stacked = N, models/adapter_stack.py): each slot holds the index
of the adapter its request asked for (0: the base). A prefill runs one request, so it
takes that adapter's slice of every stacked leaf and runs the one-adapter model (the
vision towers and aligner included); a decode step passes every row's index to the
LLM, whose adapted Dense layers apply each row its own adapter in the same matmuls.
"""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dsvl_jax.infer.generate import forward_last, inference_config, inference_params
from dsvl_jax.infer.sampling import ROW_FIELDS, SamplingConfig, row_values, select_rows
from dsvl_jax.models import lora
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.init import logical_axes
from dsvl_jax.models.llm import (
    Cache,
    cache_dtype,
    check_context,
    init_cache,
    positions_from_mask,
)
from dsvl_jax.models.vlm import DeepseekVL


@flax.struct.dataclass
class SlotState:
  """B slots of S cache columns (V: the vocabulary); a pytree, so jit takes (and donates)
  it and a step slices its first rows with one tree map."""

  cache: tuple[Cache, ...]  # per layer {"k", "v"} [B, KVH, S, Dh], preallocated (llm.init_cache)
  mask: jax.Array  # [B, S] int32: 1 where a real token's keys and values sit
  index: jax.Array  # [B] int32: the column the slot writes next
  next_pos: jax.Array  # [B] int32: the RoPE position of the next token
  token: jax.Array  # [B] int32: the last chosen token, the next step's input
  seen: jax.Array  # [B, V] bool: generated tokens (repetition penalty)
  keys: jax.Array  # [B, 2] uint32: per-slot PRNG key data
  sampling: dict[str, jax.Array]  # ROW_FIELDS -> [B] (infer/sampling.py `row_values`)
  adapter: jax.Array  # [B] int32: the slot's adapter (0 = none; stacked adapters only)


class SlotModel:
  """Compiled prefill-into-a-slot and decode-every-slot for one model and weights."""

  def __init__(self, cfg: VLMConfig, params, num_slots: int, max_len: int):
    check_context(cfg.llm, max_len, f"max_len {max_len}")
    # Per-layer weights and cache, as Generator decodes (generate.py says why).
    self.cfg = inference_config(cfg)
    self.module = DeepseekVL(self.cfg)
    if all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params)):
      # Shapes only: a model that compiles ahead of time (experiments/aot_serve.py).
      self.params = jax.eval_shape(lambda p: inference_params(p, self.cfg), params)
    else:
      self.params = inference_params(params, self.cfg)
    self.num_adapters = max(cfg.compute.lora.stacked, 1)  # the base (index 0) included
    self._adapter_axes: dict[str, int] = {}  # stacked leaf -> its adapter axis
    self.prefill_module = self.module
    if self.num_adapters > 1:
      one = dataclasses.replace(cfg.compute.lora, stacked=0)
      self.prefill_module = DeepseekVL(
          self.cfg.replace(compute=dataclasses.replace(self.cfg.compute, lora=one))
      )
      names = lora.flatten(lora.split(logical_axes(self.cfg))[0])
      self._adapter_axes = {
          path: spec.index("lora_adapters")
          for path, spec in names.items()
          if not path.startswith("llm/lm_head/")  # inference_params moves it to head_lora
      }
    self.num_slots, self.max_len = num_slots, max_len
    self._prefill = jax.jit(self._prefill_fn, donate_argnums=(1,))
    self._decode = jax.jit(self._decode_fn, donate_argnums=(1,), static_argnames=("rows",))
    # A step runs the first `rows` slots only, the smallest power of two (or B) that
    # holds every busy slot: the engine fills the lowest free slots first, so a lightly
    # loaded server does not pay for B rows (on a CPU a 16-row step of the 1.3B width
    # costs several times a 1-row one).
    self.row_buckets = sorted({min(2**i, num_slots) for i in range(num_slots.bit_length() + 1)})

  def init_state(self) -> SlotState:
    b, s, v = self.num_slots, self.max_len, self.cfg.llm.vocab_size
    rows = row_values(SamplingConfig())
    return SlotState(
        cache=init_cache(self.cfg.llm, b, s, cache_dtype(self.cfg.compute), stacked=False),
        mask=jnp.zeros((b, s), jnp.int32),
        index=jnp.zeros((b,), jnp.int32),
        next_pos=jnp.zeros((b,), jnp.int32),
        token=jnp.zeros((b,), jnp.int32),
        seen=jnp.zeros((b, v), bool),
        keys=jnp.zeros((b, 2), jnp.uint32),
        sampling={f: jnp.full((b,), rows[f]) for f in ROW_FIELDS},
        adapter=jnp.zeros((b,), jnp.int32),
    )

  # -- host calls ---------------------------------------------------------------------

  def prefill(
      self,
      state: SlotState,
      slot: int,
      ids: np.ndarray,
      mask: np.ndarray,
      images: np.ndarray | None,
      offset: int,
      start_pos: int,
      sampling: SamplingConfig,
      adapter: int = 0,
  ) -> tuple[SlotState, int]:
    """Writes a prompt into `slot` and picks its first token.

    ids, mask [1, T] (left-padded; T a bucket); images [n, 3, S, S] or None: the images
    of these ids; offset: the first column written (columns before it are kept);
    start_pos: the RoPE position of the first real token (the kept tokens' count);
    adapter: the request's adapter (< num_adapters; 0 = none).
    """
    if not 0 <= adapter < self.num_adapters:
      raise ValueError(f"adapter {adapter}: this model holds {self.num_adapters - 1}")
    key = jax.random.key_data(jax.random.key(sampling.seed))
    state, token = self._prefill(
        self.params,
        state,
        np.int32(slot),
        ids,
        mask,
        None if images is None or not len(images) else images,
        np.int32(offset),
        np.int32(start_pos),
        row_values(sampling),
        key,
        np.int32(adapter),
    )
    return state, int(token)

  def decode(self, state: SlotState, active: np.ndarray) -> tuple[SlotState, np.ndarray]:
    """One token for every active slot ([B] bool); returns the tokens [B] (host; idle
    slots' entries are meaningless)."""
    active = np.asarray(active, bool)
    last = int(np.flatnonzero(active)[-1]) + 1 if active.any() else 1
    rows = next(r for r in self.row_buckets if r >= last)
    state, tokens = self._decode(self.params, state, active[:rows], rows=rows)
    out = np.zeros(self.num_slots, np.int32)
    out[:rows] = np.asarray(tokens)
    return state, out

  # -- jitted -------------------------------------------------------------------------

  def _one_adapter(self, params: dict, adapter: jax.Array) -> dict:
    """The parameters of `prefill_module`: adapter `adapter`'s slice of stacked leaves."""
    if self.num_adapters == 1:
      return params
    flat = lora.flatten(params["model"])
    for path, axis in self._adapter_axes.items():
      flat[path] = jnp.take(flat[path], adapter, axis=axis)
    out = {**params, "model": lora.unflatten(flat)}
    if "head_lora" in params:
      out["head_lora"] = jax.tree.map(lambda x: jnp.take(x, adapter, axis=0), params["head_lora"])
    return out

  def _prefill_fn(
      self, params, state, slot, ids, mask, images, offset, start_pos, row, key, adapter
  ):
    s = state.mask.shape[1]
    t = ids.shape[1]
    take = lambda x: jax.lax.dynamic_slice_in_dim(x, slot, 1, axis=0)
    put = lambda full, part: jax.lax.dynamic_update_slice_in_dim(full, part, slot, axis=0)
    cache = jax.tree.map(take, state.cache)
    row_mask = jnp.where(jnp.arange(s) < offset, take(state.mask), 0)
    row_mask = jax.lax.dynamic_update_slice(row_mask, mask, (0, offset))
    positions = positions_from_mask(mask, start_pos)
    logits, cache = forward_last(
        self.prefill_module,
        self._one_adapter(params, adapter),
        ids,
        images,
        attention_mask=row_mask,
        positions=positions,
        cache=cache,
        cache_index=offset,
    )
    key, sub = jax.random.split(jax.random.wrap_key_data(key))
    seen = jnp.zeros((1, self.cfg.llm.vocab_size), bool)
    token = select_rows(logits, seen, jax.tree.map(lambda x: x[None], row), sub[None])[0]
    new = SlotState(
        cache=jax.tree.map(put, state.cache, cache),
        mask=put(state.mask, row_mask),
        index=state.index.at[slot].set(offset + t),
        next_pos=state.next_pos.at[slot].set(positions[0, -1] + 1),
        token=state.token.at[slot].set(token),
        seen=put(state.seen, seen.at[0, token].set(True)),
        keys=state.keys.at[slot].set(jax.random.key_data(key)),
        sampling={f: state.sampling[f].at[slot].set(row[f]) for f in ROW_FIELDS},
        adapter=state.adapter.at[slot].set(adapter),
    )
    return new, token

  def _decode_fn(self, params, state, active, *, rows: int):
    part = jax.tree.map(lambda x: x[:rows], state)
    part, token = self._step_rows(params, part, active)
    put = lambda full, new: jax.lax.dynamic_update_slice_in_dim(full, new, 0, axis=0)
    return jax.tree.map(put, state, part), token

  def _step_rows(self, params, state: SlotState, active):
    b, s = state.mask.shape
    rows = jnp.arange(b)
    index = jnp.where(active, state.index, s - 1)  # idle slots write the scratch column
    mask = state.mask.at[rows, index].set(active.astype(jnp.int32))
    logits, cache = forward_last(
        self.module,
        params,
        state.token[:, None],
        attention_mask=mask,
        positions=state.next_pos[:, None],
        cache=state.cache,
        cache_index=index,
        adapter=state.adapter if self.num_adapters > 1 else None,
    )
    split = jax.vmap(jax.random.split)(jax.random.wrap_key_data(state.keys))
    token = select_rows(logits, state.seen, state.sampling, split[:, 1])
    keep = lambda new, old: jnp.where(active.reshape((b,) + (1,) * (old.ndim - 1)), new, old)
    new = state.replace(
        cache=cache,
        mask=mask,
        index=keep(index + 1, state.index),
        next_pos=keep(state.next_pos + 1, state.next_pos),
        token=keep(token, state.token),
        seen=keep(state.seen.at[rows, token].set(True), state.seen),
        keys=keep(jax.random.key_data(split[:, 0]), state.keys),
    )
    return new, token
