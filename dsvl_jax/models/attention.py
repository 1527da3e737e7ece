"""The one attention function every model in dsvl_jax calls.

Masking is described by its ingredients rather than a dense mask, so that backends which
take segment ids or lengths natively can use them:

* `q_slot` [B, Tq] / `k_slot` [B, Tk]: slot indices in the key/value buffer (for a plain
  forward both are arange(T); with a KV cache the query slots start at the cache index).
  With `causal=True` a query sees keys whose slot is <= its own.
* `k_valid` [B, Tk] bool: keys that exist (0 marks left padding or unwritten cache).
* `q_segment` / `k_segment` [B, T] int: packed-sequence ids; tokens attend only within
  their own segment.

Backends: 'xla' (reference einsum + float32 softmax, any mask, runs everywhere) and
'cudnn' (`jax.nn.dot_product_attention(implementation='cudnn')`, GPU only, given the
dense mask). A backend that cannot honour a mask ingredient must raise, never ignore it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def make_mask(q_slot: jax.Array | None, k_slot: jax.Array | None, *, causal: bool,
              k_valid: jax.Array | None = None, q_segment: jax.Array | None = None,
              k_segment: jax.Array | None = None) -> jax.Array | None:
  """Dense boolean mask [B, 1, Tq, Tk] (True = attend), or None if nothing is masked."""
  mask = None

  def _and(m, new):
    return new if m is None else jnp.logical_and(m, new)

  if causal:
    mask = _and(mask, k_slot[:, None, None, :] <= q_slot[:, None, :, None])
  if k_valid is not None:
    mask = _and(mask, k_valid[:, None, None, :].astype(bool))
  if q_segment is not None:
    mask = _and(mask, q_segment[:, None, :, None] == k_segment[:, None, None, :])
  return mask


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, scale: float | None = None,
              causal: bool = False, q_slot: jax.Array | None = None,
              k_slot: jax.Array | None = None, k_valid: jax.Array | None = None,
              q_segment: jax.Array | None = None, k_segment: jax.Array | None = None,
              bias: jax.Array | None = None, impl: str = "xla",
              precision: jax.lax.Precision | None = None) -> jax.Array:
  """Multi-head attention with grouped key/value heads.

  q: [B, Tq, H, D]; k, v: [B, Tk, KVH, D] with H % KVH == 0.
  bias: optional additive logits [B, H, Tq, Tk] (SAM's relative positions).
  Returns [B, Tq, H, D] in q's dtype.
  """
  b, tq, h, d = q.shape
  kvh = k.shape[2]
  if h % kvh:
    raise ValueError(f"{h} query heads are not a multiple of {kvh} key/value heads")
  if causal and (q_slot is None or k_slot is None):
    raise ValueError("causal attention needs q_slot and k_slot")
  if (q_segment is None) != (k_segment is None):
    raise ValueError("q_segment and k_segment must be given together")
  scale = d ** -0.5 if scale is None else scale
  mask = make_mask(q_slot, k_slot, causal=causal, k_valid=k_valid, q_segment=q_segment,
                   k_segment=k_segment)
  if impl == "xla":
    return _xla_attention(q, k, v, mask, bias, scale, precision)
  if impl == "cudnn":
    if bias is not None:
      raise NotImplementedError("attention_impl='cudnn' is not wired for additive biases")
    if kvh != h:
      k = jnp.repeat(k, h // kvh, axis=2)
      v = jnp.repeat(v, h // kvh, axis=2)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale,
                                        implementation="cudnn")
  raise ValueError(f"unknown attention implementation {impl!r}")


def _xla_attention(q, k, v, mask, bias, scale, precision):
  b, tq, h, d = q.shape
  kvh = k.shape[2]
  g = h // kvh
  qg = q.reshape(b, tq, kvh, g, d)
  # Logits accumulate in float32; softmax in float32, cast back before the value matmul
  # (the order transformers' eager attention uses).
  logits = jnp.einsum("bqkgd,bskd->bkgqs", qg, k, precision=precision,
                      preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.reshape(b, kvh, g, tq, -1).astype(jnp.float32)
  if mask is not None:
    # A large finite negative keeps fully-masked rows (left padding) NaN-free.
    logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v, precision=precision)
  return out.reshape(b, tq, h, d)
