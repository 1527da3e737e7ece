"""DeepSeek-LLM: the LLaMA-architecture decoder (reference 1.2, 5.2).

Pre-norm blocks (RMSNorm -> attention -> residual, RMSNorm -> SwiGLU -> residual) stacked
under nn.scan, a final RMSNorm and an untied (optionally tied) LM head. The key/value
cache is an explicit input/output pytree, never hidden module state:

  cache = {"k": [L, B, KVH, S, Dh], "v": [L, B, KVH, S, Dh]}

Head-major, as transformers stores it: attention contracts over Dh and S with (B, KVH)
as its batch axes, so this layout is read as it sits. The token-major [B, S, KVH, Dh]
made XLA:CPU transpose the whole cache every decode step (a batch-8 step of the mid
config spent 270 of its 416 ms there; BUILD.md, evaluation throughput).

A prefill writes T tokens at slots [cache_index, cache_index + T); a decode step writes
one. cache_index is one slot for the whole batch, or one per row ([B]) when rows sit at
different lengths (continuous batching, dsvl_jax/infer/slots.py). `attention_mask` then
covers all S slots (1 = a real token has been or is being written there), which is how
left padding survives decoding.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from dsvl_jax.models import layers, quant
from dsvl_jax.models.attention import attention
from dsvl_jax.models.config import ComputeConfig, LLMConfig
from dsvl_jax.models.rope import apply_rope, rope_cos_sin

Cache = dict[str, jax.Array]


def positions_from_mask(attention_mask: jax.Array, start: jax.Array | int = 0) -> jax.Array:
  """RoPE positions for a left-padded batch, as transformers' generate derives them.

  attention_mask [B, T] -> start + cumsum - 1 on real tokens (the first real token is
  `start`), 1 on padding (never attended, so the value only has to be finite). start: a
  scalar or [B, 1], the count of tokens already cached before these (0 for a prompt).
  """
  mask = attention_mask.astype(jnp.int32)
  return jnp.where(mask > 0, start + jnp.cumsum(mask, axis=-1) - 1, 1)


def check_context(cfg: LLMConfig, positions: int, what: str) -> None:
  """Refuses `positions` beyond the model's context; `what` says how they add up."""
  if positions > cfg.max_position_embeddings:
    raise ValueError(
        f"{what} exceeds the model's context of {cfg.max_position_embeddings} positions"
    )


def cache_dtype(compute: ComputeConfig) -> jnp.dtype:
  """The dtype of the KV cache compute.kv_cache_dtype asks for."""
  return jnp.dtype(jnp.int8 if compute.kv_cache_dtype == "int8" else compute.dtype)


def init_cache(
    cfg: LLMConfig, batch: int, max_len: int, dtype: Any = jnp.float32, stacked: bool = True
) -> Cache | tuple[Cache, ...]:
  """An empty KV cache for `batch` sequences of up to `max_len` tokens.

  stacked: one [L, B, KVH, S, Dh] pair for scanned layers; else a tuple of L per-layer
  [B, KVH, S, Dh] pairs (compute.scan_layers=False). dtype int8: codes, with a float32
  absmax scale per token and head beside each, "k_scale" / "v_scale" [(L,) B, KVH, S, 1]
  (`update_cache`).
  """
  lead = (cfg.num_layers,) if stacked else ()
  shape = (*lead, batch, cfg.num_kv_heads, max_len, cfg.head_dim)

  def one() -> Cache:
    cache = {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
    if jnp.dtype(dtype) == jnp.int8:
      for name in ("k_scale", "v_scale"):  # two arrays: a step donates each
        cache[name] = jnp.zeros((*shape[:-1], 1), jnp.float32)
    return cache

  return one() if stacked else tuple(one() for _ in range(cfg.num_layers))


def unstack_layers(llm_params: dict) -> dict:
  """Scanned LLM params ({'layers': stacked}) -> per-layer ({'layers_i': ...}).

  For decoding with compute.scan_layers=False: XLA:CPU copies each layer's weights out
  of the stacked array inside a scan, which triples the bytes a decode step moves.
  """
  out = {k: v for k, v in llm_params.items() if k != "layers"}
  stacked = llm_params["layers"]
  n = jax.tree.leaves(stacked)[0].shape[0]
  for i in range(n):
    out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  return out


def write_cache(buf: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
  """Writes new [B, T, KVH, Dh] into buf [B, KVH, S, Dh] from slot `index`.

  index: a scalar (every row at the same slot: one batch decoded in lock step) or [B]
  (a slot per row: rows at different lengths, as continuous batching runs them).
  """
  new = jnp.swapaxes(new.astype(buf.dtype), 1, 2)
  if index.ndim == 0:
    return jax.lax.dynamic_update_slice(buf, new, (0, 0, index, 0))
  return jax.vmap(lambda b, n, i: jax.lax.dynamic_update_slice(b, n, (0, i, 0)))(buf, new, index)


def update_cache(
    cache: Cache, k: jax.Array, v: jax.Array, index: jax.Array, dtype: Any
) -> tuple[Cache, jax.Array, jax.Array]:
  """Writes new keys and values k, v [B, T, KVH, Dh] into one layer's cache from
  `index` (write_cache); returns (the new cache, all keys, all values [B, S, KVH, Dh] in
  `dtype`). An int8 cache quantises each new token's key and value per head as
  models/quant.py does a block of Dh values (round(127 x / absmax)), so a value read
  back is off by at most absmax / 254."""
  if "k_scale" not in cache:
    new = {"k": write_cache(cache["k"], k, index), "v": write_cache(cache["v"], v, index)}
    full = new["k"], new["v"]
  else:
    new, full = {}, []
    for name, x in (("k", k), ("v", v)):
      q = quant.quantize(x, "int8", x.shape[-1])  # codes [B, T, KVH, Dh], scale [..., 1]
      new[name] = write_cache(cache[name], q["codes"], index)
      new[f"{name}_scale"] = write_cache(cache[f"{name}_scale"], q["scale"], index)
      full.append(quant.dequantize({"codes": new[name], "scale": new[f"{name}_scale"]}, "int8"))
  # Back to attention's [B, S, KVH, Dh]: XLA folds the swap into the dots.
  k, v = (jnp.swapaxes(x, 1, 2).astype(dtype) for x in full)
  return new, k, v


class LLMBlock(nn.Module):
  """One decoder layer. Scanned: (x, ctx, cache_layer) -> (x, new_cache_layer)."""

  cfg: LLMConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array, ctx: dict[str, Any], cache: Cache | None):
    cfg, compute = self.cfg, self.compute
    # Every projection of the block: bias-free, stored as compute.llm_kernels_out_major says.
    proj = functools.partial(
        layers.dense, compute, use_bias=False, out_major=compute.llm_kernels_out_major
    )
    ad = ctx["adapter"]  # [B] per-row adapter with stacked adapters, else None
    x = layers.constrain(x, ("batch", "length", "embed"))
    h = layers.RMSNorm(compute, cfg.rms_norm_eps, name="input_norm")(x)
    q = proj((cfg.num_heads, cfg.head_dim), ("embed", "heads", "head_dim"), name="q_proj")(h, ad)
    kv_shape, kv_axes = (cfg.num_kv_heads, cfg.head_dim), ("embed", "kv_heads", "head_dim")
    k = proj(kv_shape, kv_axes, name="k_proj")(h, ad)
    v = proj(kv_shape, kv_axes, name="v_proj")(h, ad)
    q = apply_rope(q, ctx["cos"], ctx["sin"])
    k = apply_rope(k, ctx["cos"], ctx["sin"])
    q = layers.constrain(q, ("batch", "length", "heads", "head_dim"))

    new_cache = None
    if cache is not None:
      new_cache, k, v = update_cache(cache, k, v, ctx["cache_index"], q.dtype)

    out = attention(
        q,
        k,
        v,
        causal=True,
        q_slot=ctx["q_slot"],
        k_slot=ctx["k_slot"],
        k_valid=ctx["k_valid"],
        q_segment=ctx["q_segment"],
        k_segment=ctx["k_segment"],
        impl=compute.attention_impl,
        precision=layers.precision_of(compute.precision),
        chunk=compute.attention_block,
    )
    out = proj(cfg.hidden_size, ("heads", "head_dim", "embed"), n_in=2, name="o_proj")(out, ad)
    x = x + out

    h = layers.RMSNorm(compute, cfg.rms_norm_eps, name="post_attention_norm")(x)
    gate = proj(cfg.intermediate_size, ("embed", "mlp"), name="gate_proj")(h, ad)
    up = proj(cfg.intermediate_size, ("embed", "mlp"), name="up_proj")(h, ad)
    h = layers.constrain(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
    x = x + proj(cfg.hidden_size, ("mlp", "embed"), name="down_proj")(h, ad)
    return x, new_cache


class LLM(nn.Module):
  """Token embedding, scanned decoder blocks, final norm, LM head."""

  cfg: LLMConfig
  compute: ComputeConfig

  def setup(self):
    cfg, compute = self.cfg, self.compute
    self.embed_tokens = nn.Embed(
        cfg.vocab_size,
        cfg.hidden_size,
        dtype=layers.dtype_of(compute.dtype),
        param_dtype=layers.dtype_of(compute.param_dtype),
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("vocab", "embed")
        ),
    )
    if compute.scan_layers:
      self.layers = layers.scan_blocks(
          LLMBlock,
          cfg.num_layers,
          in_axes=(nn.broadcast, 0),
          name="layers",
          remat_policy=compute.remat_policy,
          unroll=min(compute.scan_unroll, cfg.num_layers),
          cfg=cfg,
          compute=compute,
      )
    else:  # inference: separate per-layer weights, see unstack_layers()
      self.blocks = [LLMBlock(cfg, compute, name=f"layers_{i}") for i in range(cfg.num_layers)]
    self.norm = layers.RMSNorm(compute, cfg.rms_norm_eps)
    if not cfg.tie_embeddings:
      self.lm_head = layers.dense(compute, cfg.vocab_size, ("embed", "vocab"), use_bias=False)

  def embed(self, input_ids: jax.Array) -> jax.Array:
    """[B, T] int -> [B, T, D]."""
    return self.embed_tokens(input_ids)

  def logits(self, hidden: jax.Array, adapter: jax.Array | None = None) -> jax.Array:
    """[B, T, D] (after the final norm) -> [B, T, V] float32; adapter as __call__'s."""
    if self.cfg.tie_embeddings:
      out = self.embed_tokens.attend(hidden)
    else:
      out = self.lm_head(hidden, adapter)
    return layers.constrain(out, ("batch", "length", "vocab")).astype(jnp.float32)

  def __call__(
      self,
      embeds: jax.Array,
      positions: jax.Array,
      *,
      attention_mask: jax.Array | None = None,
      segment_ids: jax.Array | None = None,
      cache: Cache | None = None,
      cache_index: jax.Array | int = 0,
      adapter: jax.Array | None = None,
  ) -> tuple[jax.Array, Cache | None]:
    """Runs the decoder.

    embeds [B, T, D]; positions [B, T] RoPE positions.
    attention_mask: [B, T] (no cache) or [B, S] over all cache slots (with cache).
    segment_ids [B, T]: packed sequences; needs cache=None.
    adapter [B] int32: each row's adapter when compute.lora.stacked (serving), else None.
    Returns (hidden [B, T, D] after the final norm, updated cache or None).
    """
    cfg = self.cfg
    b, t, _ = embeds.shape
    dtype = layers.dtype_of(self.compute.dtype)
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, dtype)
    if cache is None:
      q_slot = k_slot = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    else:
      if segment_ids is not None:
        raise ValueError("segment_ids (packing) is a training feature; it needs cache=None")
      s = (cache["k"] if isinstance(cache, dict) else cache[0]["k"]).shape[-2]
      index = jnp.asarray(cache_index, jnp.int32)
      q_slot = jnp.broadcast_to(index[..., None] + jnp.arange(t, dtype=jnp.int32), (b, t))
      k_slot = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    ctx = {
        "cos": cos,
        "sin": sin,
        "q_slot": q_slot,
        "k_slot": k_slot,
        "k_valid": None if attention_mask is None else attention_mask.astype(bool),
        "q_segment": segment_ids,
        "k_segment": segment_ids,
        "cache_index": jnp.asarray(cache_index, jnp.int32),
        "adapter": adapter,
    }
    x = layers.constrain(embeds.astype(dtype), ("batch", "length", "embed"))
    if self.compute.scan_layers:
      x, new_cache = self.layers(x, ctx, cache)
    else:
      # The cache here is a tuple of per-layer {"k", "v"} (init_cache(stacked=False)):
      # updated in place, never sliced out of or stacked back into one array.
      caches = []
      for i, block in enumerate(self.blocks):
        x, c = block(x, ctx, None if cache is None else cache[i])
        caches.append(c)
      new_cache = None if cache is None else tuple(caches)
    return self.norm(x), new_cache
