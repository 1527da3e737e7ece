"""Memory-efficient attention in plain XLA: key blocks with an online softmax, and a
backward pass that recomputes each block instead of storing probabilities.

The reference (`attention.py`'s 'xla') materialises [B, H, Tq, Tk] float32 logits, and
autodiff keeps the probabilities of every layer for the backward pass: at T = 4096 and
32 heads that is 2 GiB per layer per row. Here the forward scans over key blocks of
`block` keys, carrying a running max, a running sum and the float32 output
accumulator, and saves only the output and the log-sum-exp per query (O(T)). The
backward (a custom VJP) scans the key blocks again, recomputes each block's
probabilities from the saved log-sum-exp, and emits that block's dK and dV while
accumulating dQ. Peak temporaries are O(Tq x block) per head, not O(Tq x Tk).

Masking is built per block from its ingredients (slots, key validity, segment ids;
see attention.py), so no dense mask exists either. Additive biases are not supported
(a [Tq, Tk] bias would itself be the quadratic tensor): asking for one raises.

A query that sees no key at all (a left-padding position) outputs zeros; the reference
outputs the mean of the values there. Neither position is ever read.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from dsvl_jax.models.masking import Masking

_NEG = float(jnp.finfo(jnp.float32).min)


def chunked_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    masking: Masking,
    *,
    scale: float,
    q_slot: jax.Array | None,
    k_slot: jax.Array | None,
    block: int = 512,
    precision: jax.lax.Precision | None = None,
) -> jax.Array:
  """q: [B, Tq, H, D]; k, v: [B, Tk, KVH, D] -> [B, Tq, H, D] in q's dtype.

  `block`: keys per step (Tk is padded up to a multiple with invalid keys).
  """
  b, tq = q.shape[:2]
  tk = k.shape[1]
  block = max(1, min(block, tk))
  pad = -tk % block
  i32 = jnp.int32
  # Every ingredient as an array (absent ones neutral), keys padded to whole blocks.
  q_slot = jnp.zeros((b, tq), i32) if q_slot is None else q_slot.astype(i32)
  k_slot = jnp.zeros((b, tk), i32) if k_slot is None else k_slot.astype(i32)
  k_valid = masking.k_valid
  k_valid = jnp.ones((b, tk), bool) if k_valid is None else k_valid.astype(bool)
  q_segment, k_segment = masking.segments(b, tq, tk)
  if pad:
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    k, v = jnp.pad(k, widths), jnp.pad(v, widths)
    k_slot, k_segment = (jnp.pad(x, ((0, 0), (0, pad))) for x in (k_slot, k_segment))
    k_valid = jnp.pad(k_valid, ((0, 0), (0, pad)))  # padding keys are invalid
  causal = masking.causal
  return _flash(
      q, k, v, q_slot, k_slot, k_valid, q_segment, k_segment, scale, causal, block, precision
  )


def _blocks(x: jax.Array, block: int) -> jax.Array:
  """[B, Tk, ...] -> [Tk / block, B, block, ...] (the scan axis first)."""
  return jnp.moveaxis(x.reshape((x.shape[0], -1, block) + x.shape[2:]), 1, 0)


def _unblock(x: jax.Array) -> jax.Array:
  """[N, B, block, ...] -> [B, N * block, ...]."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape((x.shape[0], -1) + x.shape[3:])


def _block_mask(q_slot, q_segment, ks, kv, kseg, causal):
  """[B, 1, 1, Tq, block] bool for one key block."""
  m = kv[:, None, :] & (q_segment[:, :, None] == kseg[:, None, :])
  if causal:
    m &= ks[:, None, :] <= q_slot[:, :, None]
  return m[:, None, None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9, 10, 11))
def _flash(q, k, v, q_slot, k_slot, k_valid, q_segment, k_segment, scale, causal, block, precision):
  return _forward(
      q, k, v, q_slot, k_slot, k_valid, q_segment, k_segment, scale, causal, block, precision
  )[0]


def _forward(
    q, k, v, q_slot, k_slot, k_valid, q_segment, k_segment, scale, causal, block, precision
):
  b, tq, h, d = q.shape
  kvh = k.shape[2]
  g = h // kvh
  qg = q.reshape(b, tq, kvh, g, d)
  f32 = jnp.float32

  def body(carry, xs):
    m, l, acc = carry
    kb, vb, ks, kv, kseg = xs
    s = (
        jnp.einsum("bqkgd,bskd->bkgqs", qg, kb, precision=precision, preferred_element_type=f32)
        * scale
    )
    mask = _block_mask(q_slot, q_segment, ks, kv, kseg, causal)
    s = jnp.where(mask, s, _NEG)
    m_new = jnp.maximum(m, s.max(-1))
    p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
    corr = jnp.exp(m - m_new)
    l = l * corr + p.sum(-1)
    pv = jnp.einsum(
        "bkgqs,bskd->bkgqd", p.astype(v.dtype), vb, precision=precision, preferred_element_type=f32
    )
    return (m_new, l, acc * corr[..., None] + pv), None

  init = (
      jnp.full((b, kvh, g, tq), _NEG, f32),
      jnp.zeros((b, kvh, g, tq), f32),
      jnp.zeros((b, kvh, g, tq, d), f32),
  )
  xs = tuple(_blocks(x, block) for x in (k, v, k_slot, k_valid, k_segment))
  (m, l, acc), _ = jax.lax.scan(body, init, xs)
  seen = l > 0
  out = jnp.where(seen[..., None], acc / jnp.where(seen, l, 1.0)[..., None], 0.0)
  lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
  out = jnp.moveaxis(out, 3, 1).reshape(b, tq, h, d).astype(q.dtype)
  return out, lse


def _flash_fwd(
    q, k, v, q_slot, k_slot, k_valid, q_segment, k_segment, scale, causal, block, precision
):
  out, lse = _forward(
      q, k, v, q_slot, k_slot, k_valid, q_segment, k_segment, scale, causal, block, precision
  )
  return out, (q, k, v, q_slot, k_slot, k_valid, q_segment, k_segment, out, lse)


def _flash_bwd(scale, causal, block, precision, res, dout):
  q, k, v, q_slot, k_slot, k_valid, q_segment, k_segment, out, lse = res
  b, tq, h, d = q.shape
  kvh = k.shape[2]
  g = h // kvh
  f32 = jnp.float32
  qg = q.reshape(b, tq, kvh, g, d)
  dog = dout.reshape(b, tq, kvh, g, d)
  # delta_i = sum_j P_ij dP_ij = dO_i . O_i
  delta = jnp.einsum("bqkgd,bqkgd->bkgq", dog.astype(f32), out.reshape(qg.shape).astype(f32))

  def body(dq, xs):
    kb, vb, ks, kv, kseg = xs
    s = (
        jnp.einsum("bqkgd,bskd->bkgqs", qg, kb, precision=precision, preferred_element_type=f32)
        * scale
    )
    mask = _block_mask(q_slot, q_segment, ks, kv, kseg, causal)
    p = jnp.where(mask, jnp.exp(jnp.where(mask, s, _NEG) - lse[..., None]), 0.0)
    dv = jnp.einsum(
        "bkgqs,bqkgd->bskd",
        p.astype(dout.dtype),
        dog,
        precision=precision,
        preferred_element_type=f32,
    )
    dp = jnp.einsum("bqkgd,bskd->bkgqs", dog, vb, precision=precision, preferred_element_type=f32)
    ds = p * (dp - delta[..., None]) * scale
    dq = dq + jnp.einsum(
        "bkgqs,bskd->bqkgd", ds.astype(k.dtype), kb, precision=precision, preferred_element_type=f32
    )
    dk = jnp.einsum(
        "bkgqs,bqkgd->bskd", ds.astype(q.dtype), qg, precision=precision, preferred_element_type=f32
    )
    return dq, (dk, dv)

  xs = tuple(_blocks(x, block) for x in (k, v, k_slot, k_valid, k_segment))
  dq, (dk, dv) = jax.lax.scan(body, jnp.zeros(qg.shape, f32), xs)
  return (
      dq.reshape(q.shape).astype(q.dtype),
      _unblock(dk).astype(k.dtype),
      _unblock(dv).astype(v.dtype),
      None,
      None,
      None,
      None,
      None,
  )


_flash.defvjp(_flash_fwd, _flash_bwd)
