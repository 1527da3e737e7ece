"""TPU attention: Pallas splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`).

What it supports, and how each mask ingredient of attention.py maps onto it:
* causal    -> `CausalMask` (slot i sees slots <= i). Splash only knows positions
               0..T-1 of one sequence, so queries and keys must be the same T tokens
               (training, or a prefill without a cache). Tq != Tk (a KV cache) raises.
* segments  -> `SegmentIds(q, kv)`: packed documents attend within their own document.
* padding   -> folded into the segment ids: an invalid position gets segment -1 as a
               key and as a query (self-attention: they are the same positions), so no
               real token sees it and it sees only other padding (never an empty row,
               whose kernel output would not be finite).
* GQA       -> the multi-query kernel per key/value head (vmapped): each kv head serves
               its group of query heads without k/v being repeated in memory.
* additive bias -> not supported: raises.

T is padded to a multiple of the kernel's block (padding keys are invalid, padded
queries are dropped). On a mesh the kernel runs inside `shard_map` (a Pallas call is
opaque to the SPMD partitioner), with batch and heads sharded as the rule table says
for activations ('batch', 'heads'); sequence sharding is not supported by the kernel.

`interpret=True` runs the same kernel through the Pallas interpreter on any backend:
that is how the CPU tests check it against the reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
from jax.sharding import PartitionSpec

from dsvl_jax.models.masking import Masking

BLOCK = 128  # TPU tile: q/kv blocks of 128 (the MXU is 128 or 256 wide)


def _kernel(t: int, group: int, causal: bool, interpret: bool):
  """The multi-query kernel for one kv head: q [group, T, D], k, v [T, D]."""
  one = sm.CausalMask((t, t)) if causal else sm.FullMask((t, t))
  mask = sm.MultiHeadMask([one] * group)
  block = BLOCK
  sizes = sk.BlockSizes(
      block_q=block,
      block_kv=block,
      block_kv_compute=block,
      block_q_dkv=block,
      block_kv_dkv=block,
      block_kv_dkv_compute=block,
      block_q_dq=block,
      block_kv_dq=block,
  )
  # Built per trace, not cached: its mask tables become values of the trace that
  # builds them (a cached kernel would leak them into the next trace).
  return sk.make_splash_mqa_single_device(mask=mask, block_sizes=sizes, interpret=interpret)


def splash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    masking: Masking,
    *,
    scale: float,
    interpret: bool = False,
) -> jax.Array:
  """q: [B, T, H, D]; k, v: [B, T, KVH, D] -> [B, T, H, D] (self-attention only)."""
  b, tq, h, d = q.shape
  tk, kvh = k.shape[1], k.shape[2]
  if tq != tk:
    raise NotImplementedError(
        f"attention_impl='splash' attends a sequence to itself; got {tq} queries over "
        f"{tk} keys (a KV cache). Use 'xla' or 'chunked' for decoding."
    )
  seg, kseg = masking.segments(b, tq, tk)
  if masking.k_valid is not None:
    valid = masking.k_valid.astype(bool)
    seg, kseg = jnp.where(valid, seg, -1), jnp.where(valid, kseg, -1)
  pad = -tq % BLOCK
  if pad:
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    q, k, v = (jnp.pad(x, widths) for x in (q, k, v))
    seg = jnp.pad(seg, ((0, 0), (0, pad)), constant_values=-1)
    kseg = jnp.pad(kseg, ((0, 0), (0, pad)), constant_values=-1)
  t = tq + pad
  kernel = _kernel(t, h // kvh, masking.causal, interpret)

  def local(q, k, v, seg, kseg):
    """Per device: [b, T, H, D] -> the kernel per (row, kv head)."""
    bl = q.shape[0]
    kvl = k.shape[2]
    qh = (q * scale).astype(q.dtype).reshape(bl, t, kvl, h // kvh, d)
    qh = qh.transpose(0, 2, 3, 1, 4)  # [b, kvh, group, T, D]
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [b, kvh, T, D]

    def one(qr, kr, vr, sr, ksr):
      ids = sk.SegmentIds(q=sr, kv=ksr)
      return jax.vmap(lambda a, b_, c: kernel(a, b_, c, segment_ids=ids))(qr, kr, vr)

    o = jax.vmap(one)(qh, kh, vh, seg, kseg)  # [b, kvh, group, T, D]
    return o.transpose(0, 3, 1, 2, 4).reshape(bl, t, kvl * (h // kvh), d)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    out = local(q, k, v, seg, kseg)
  else:
    qs = nn.logical_to_mesh_axes(("batch", None, "heads", None))
    ks = nn.logical_to_mesh_axes(("batch", None, "kv_heads", None))
    ss = nn.logical_to_mesh_axes(("batch", None))
    _check_divisible(mesh, qs, q.shape, "queries")
    _check_divisible(mesh, ks, k.shape, "keys")
    out = jax.shard_map(
        local, mesh=mesh, in_specs=(qs, ks, ks, ss, ss), out_specs=qs, check_vma=False
    )(q, k, v, seg, kseg)
  return out[:, :tq]


def _check_divisible(mesh, spec: PartitionSpec, shape, what: str) -> None:
  for dim, axes in zip(shape, spec):
    if axes is None:
      continue
    n = int(np.prod([mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))
    if dim % n:
      raise ValueError(
          f"splash attention: {what} of shape {tuple(shape)} do not split "
          f"over mesh axes {axes} ({n} devices)"
      )
