"""Batched generation with a KV cache: one jitted prefill, one jitted decode step.

Prompts are left-padded (as the reference batches them) to a multiple of
`prompt_bucket` (small: padding is prefill compute) and the cache to prompt +
max_new_tokens rounded up to `cache_bucket`, so each (batch, prompt bucket, cache
bucket, image count) shape compiles once and is reused. RoPE positions come from
the attention mask (cumsum - 1), so a sample's tokens are the same alone or batched.

Each step the chosen tokens come back to the host (streaming, EOS and stop strings);
finished samples keep producing pad tokens that are dropped from the result.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from dsvl_jax.infer.sampling import SamplingConfig, select
from dsvl_jax.infer.streaming import cut_at_stop  # noqa: F401  (re-exported)
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.llm import init_cache, unstack_layers
from dsvl_jax.models.vlm import DeepseekVL, check_image_tokens


@dataclasses.dataclass
class Generation:
  tokens: list[list[int]]  # new tokens per sample, without the stopping EOS
  finish_reasons: list[str]  # 'eos', 'stop_string' or 'length'


def _round_up(n: int, bucket: int) -> int:
  return -(-n // bucket) * bucket


class Generator:
  """Holds the compiled prefill / decode functions for one model and parameter tree."""

  def __init__(self, cfg: VLMConfig, params, prompt_bucket: int = 16, cache_bucket: int = 128,
               mesh: jax.sharding.Mesh | None = None):
    """mesh: data parallelism over its devices: the rows of a batch (and the cache) are
    split over all of them, the parameters replicated (a batch whose size the device
    count does not divide runs replicated)."""
    self.mesh = mesh
    # Decoding reads every weight once per token; per-layer weight arrays (a Python loop
    # over layers instead of nn.scan) halve the bytes a step moves on XLA:CPU
    # (BUILD.md, generation benchmark). Compile time then grows with depth, once.
    self.cfg = cfg.replace(compute=dataclasses.replace(cfg.compute, scan_layers=False))
    self.set_params(params)
    self.module = DeepseekVL(self.cfg)
    self.prompt_bucket, self.cache_bucket = prompt_bucket, cache_bucket
    self._prefill = jax.jit(self._prefill_fn, static_argnames=("sampling",), donate_argnums=(4,))
    self._step = jax.jit(self._step_fn, static_argnames=("sampling",), donate_argnums=(1,))

  def set_params(self, params) -> None:
    """New weights of the same shapes (e.g. during training); the compiled functions stay."""
    self.params = {**params, "llm": unstack_layers(params["llm"])}
    if self.mesh is not None:
      self.params = jax.device_put(self.params, NamedSharding(self.mesh, PartitionSpec()))

  def _rows(self, tree, b: int):
    """Places arrays whose leading axis is the batch's rows on the mesh, split by row."""
    if self.mesh is None or self.mesh.size == 1 or b % self.mesh.size:
      return tree
    split = NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names))
    return jax.device_put(tree, split)

  # -- jitted pieces ------------------------------------------------------------------

  def _prefill_fn(self, params, ids, mask, images, cache, rng, *, sampling: SamplingConfig):
    """ids, mask [B, T]; cache sized S >= T. Returns (state, first tokens [B])."""
    b, t = ids.shape
    s = cache[0]["k"].shape[1]
    positions = jnp.where(mask > 0, jnp.cumsum(mask, -1) - 1, 1)
    slots = jnp.zeros((b, s), jnp.int32).at[:, :t].set(mask)
    out = self.module.apply({"params": params}, ids, images, attention_mask=slots,
                            positions=positions, cache=cache, cache_index=0,
                            logits_to_keep=1)
    seen = jnp.zeros((b, self.cfg.llm.vocab_size), bool)
    rng, key = jax.random.split(rng)
    token = select(out["logits"][:, -1], seen, sampling, key)
    seen = seen.at[jnp.arange(b), token].set(True)
    state = {"cache": out["cache"], "slots": slots, "next_pos": positions[:, -1] + 1,
             "index": jnp.asarray(t, jnp.int32), "seen": seen, "rng": rng}
    return state, token

  def _step_fn(self, params, state, token, *, sampling: SamplingConfig):
    b = token.shape[0]
    idx = state["index"]
    slots = jax.lax.dynamic_update_slice(state["slots"], jnp.ones((b, 1), jnp.int32), (0, idx))
    out = self.module.apply({"params": params}, token[:, None], attention_mask=slots,
                            positions=state["next_pos"][:, None], cache=state["cache"],
                            cache_index=idx)
    rng, key = jax.random.split(state["rng"])
    new = select(out["logits"][:, -1], state["seen"], sampling, key)
    seen = state["seen"].at[jnp.arange(b), new].set(True)
    state = {"cache": out["cache"], "slots": slots, "next_pos": state["next_pos"] + 1,
             "index": idx + 1, "seen": seen, "rng": rng}
    return state, new

  # -- host loop ----------------------------------------------------------------------

  def generate(self, input_ids, attention_mask=None, images=None,
               sampling: SamplingConfig = SamplingConfig(),
               decode: Callable[[list[int]], str] | None = None,
               on_token: Callable[[int, int], None] | None = None) -> Generation:
    """Generates up to sampling.max_new_tokens tokens for a left-padded batch.

    input_ids, attention_mask [B, T]; images [N, 3, S, S] in [0, 1] or None.
    decode: token ids -> text, needed for sampling.stop_strings.
    on_token(sample, token): called for every new token of an unfinished sample.
    """
    ids = np.asarray(input_ids, np.int32)
    b, t = ids.shape
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
    n_images = 0 if images is None else len(images)
    check_image_tokens(ids, n_images, self.cfg)
    if sampling.stop_strings and decode is None:
      raise ValueError("stop_strings need a decode function")
    tp = _round_up(t, self.prompt_bucket)
    s = _round_up(tp + sampling.max_new_tokens, self.cache_bucket)
    if s > self.cfg.llm.max_position_embeddings:
      raise ValueError(f"prompt ({t} tokens, bucketed to {tp}) + max_new_tokens "
                       f"({sampling.max_new_tokens}) exceeds the model's context of "
                       f"{self.cfg.llm.max_position_embeddings} positions")
    pad = tp - t
    ids = np.concatenate([np.full((b, pad), self.cfg.pad_token_id, np.int32), ids], 1)
    mask = np.concatenate([np.zeros((b, pad), np.int32), mask], 1)
    images = None if n_images == 0 else jnp.asarray(images, jnp.float32)
    dtype = jnp.dtype(self.cfg.compute.dtype)
    cache = init_cache(self.cfg.llm, b, s, dtype, stacked=False)
    ids, mask, cache = self._rows((ids, mask, cache), b)

    rng = jax.random.key(sampling.seed)
    # Only the fields that change the computation are static: seed, length and stop
    # strings vary per call without recompiling.
    static = dataclasses.replace(sampling, seed=0, max_new_tokens=1, stop_strings=(),
                                 ignore_eos=False)
    state, token = self._prefill(self.params, ids, mask, images, cache, rng, sampling=static)
    out = [[] for _ in range(b)]
    reasons = ["length"] * b
    done = np.zeros(b, bool)
    eos = self.cfg.eos_token_id
    for step in range(sampling.max_new_tokens):
      host = np.asarray(token)
      for i in np.flatnonzero(~done):
        tok = int(host[i])
        if tok == eos and not sampling.ignore_eos:
          done[i], reasons[i] = True, "eos"
          continue
        out[i].append(tok)
        if on_token is not None:
          on_token(int(i), tok)
        if sampling.stop_strings:
          text = decode(out[i])
          if any(stop in text for stop in sampling.stop_strings):
            done[i], reasons[i] = True, "stop_string"
      if done.all() or step == sampling.max_new_tokens - 1:
        break
      state, token = self._step(self.params, state, token, sampling=static)
    return Generation(out, reasons)
