"""The one attention function every model in dsvl_jax calls.

Masking is described by its ingredients rather than a dense mask, so that backends which
take segment ids or lengths natively can use them:

* `q_slot` [B, Tq] / `k_slot` [B, Tk]: slot indices in the key/value buffer (for a plain
  forward both are arange(T); with a KV cache the query slots start at the cache index).
  With `causal=True` a query sees keys whose slot is <= its own.
* `k_valid` [B, Tk] bool: keys that exist (0 marks left padding or unwritten cache).
* `q_segment` / `k_segment` [B, T] int: packed-sequence ids; tokens attend only within
  their own segment.

The backends take causal, k_valid and the segments as one `masking.Masking`.

Backends (`impl`, the model config's `compute.attention_impl`):

  auto     per call, for the platform (`resolve_impl`): splash on TPU, cudnn on GPU,
           xla otherwise and for whatever the chosen backend cannot take
  xla      reference einsum + float32 softmax; any mask, any bias; materialises
           [B, H, Tq, Tk] float32 logits (fine for short sequences and decoding)
  blocked  the reference's math one key/value head at a time (lax.map): a block's
           [B, g, Tq, Tk] logits stay in the CPU's cache instead of streaming through
           memory several times; 2.4x faster than 'xla' on XLA:CPU for SigLIP's 576
           tokens at batch 8. Serial over heads, so for CPUs only (the generators pick
           it there); fewer than 64 queries (decoding) run 'xla' as they are
  chunked  key blocks with an online softmax and a recomputing backward
           (attention_chunked.py): O(T) memory per query, any backend, no bias
  cudnn    `jax.nn.dot_product_attention(implementation='cudnn')`, GPU only: native GQA
           (k/v are not repeated), the dense mask, no bias
  splash   Pallas splash attention on TPU (attention_splash.py): causal, segment ids
           and padding through the kernel's own masks; self-attention only, no bias

Every backend honours causal masking, padding and segment ids or raises: one that
ignored segment ids would let packed documents read each other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dsvl_jax.models.config import ATTENTION_IMPLS
from dsvl_jax.models.masking import Masking

IMPLS = ATTENTION_IMPLS  # the choices of compute.attention_impl (its AttentionImpl type)
BLOCKED_MIN_QUERIES = 64  # below this a head's logits are small: 'blocked' runs 'xla'
HEADS_PER_BLOCK = 2  # key/value heads per lax.map iteration of 'blocked'


def placement_platform() -> str:
  """The platform of the mesh being traced for (jax.set_mesh), else the default one."""
  mesh = jax.sharding.get_abstract_mesh()
  device = getattr(mesh, "abstract_device", None) if not mesh.empty else None
  return getattr(device, "platform", None) or jax.default_backend()


def resolve_impl(impl: str, *, self_attention: bool, has_bias: bool, dtype=jnp.bfloat16) -> str:
  """'auto' -> the backend for the platform the computation is placed on (the mesh's
  when one is set: an ahead-of-time TPU compile on a CPU host resolves to TPU):
  TPU 'splash' for self-attention, GPU 'cudnn' in 16-bit dtypes (cuDNN's fused kernel
  takes no float32), else (decoding against a KV cache, additive biases, CPU) the
  reference 'xla'."""
  if impl != "auto":
    return impl
  platform = placement_platform()
  if has_bias:
    return "xla"
  if platform == "tpu" and self_attention:
    return "splash"
  if platform in ("gpu", "cuda") and jnp.dtype(dtype).itemsize == 2:
    return "cudnn"
  return "xla"


def for_inference(impl: str) -> str:
  """The backend the generators run for a configured one: on a CPU the reference's math
  as 'blocked' (the same results, 2x faster there), elsewhere the configured backend."""
  return "blocked" if impl in ("auto", "xla") and placement_platform() == "cpu" else impl


def make_mask(
    q_slot: jax.Array | None,
    k_slot: jax.Array | None,
    *,
    causal: bool,
    k_valid: jax.Array | None = None,
    q_segment: jax.Array | None = None,
    k_segment: jax.Array | None = None,
) -> jax.Array | None:
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


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    scale: float | None = None,
    causal: bool = False,
    q_slot: jax.Array | None = None,
    k_slot: jax.Array | None = None,
    k_valid: jax.Array | None = None,
    q_segment: jax.Array | None = None,
    k_segment: jax.Array | None = None,
    bias: jax.Array | None = None,
    impl: str = "xla",
    precision: jax.lax.Precision | None = None,
    chunk: int = 512,
    interpret: bool = False,
) -> jax.Array:
  """Multi-head attention with grouped key/value heads.

  q: [B, Tq, H, D]; k, v: [B, Tk, KVH, D] with H % KVH == 0.
  bias: optional additive logits [B, H, Tq, Tk] (SAM's relative positions).
  chunk: keys per block of 'chunked'. interpret: run 'splash' through the Pallas
  interpreter (any backend; tests).
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
  scale = d**-0.5 if scale is None else scale
  if impl not in IMPLS:
    raise ValueError(f"unknown attention implementation {impl!r}; known: {IMPLS}")
  impl = resolve_impl(
      impl, self_attention=tq == k.shape[1], has_bias=bias is not None, dtype=q.dtype
  )
  if bias is not None and impl not in ("xla", "blocked"):
    raise NotImplementedError(
        f"attention_impl={impl!r} takes no additive bias (SAM's "
        f"relative positions run on 'xla' or 'blocked')"
    )
  masking = Masking(causal, k_valid, q_segment, k_segment)
  if impl == "chunked":
    from dsvl_jax.models.attention_chunked import chunked_attention  # pylint: disable=g-import-not-at-top

    kw = dict(q_slot=q_slot, k_slot=k_slot, block=chunk, precision=precision)
    return chunked_attention(q, k, v, masking, scale=scale, **kw)
  if impl == "splash":
    from dsvl_jax.models.attention_splash import splash_attention  # pylint: disable=g-import-not-at-top

    return splash_attention(q, k, v, masking, scale=scale, interpret=interpret)
  mask = make_mask(q_slot, k_slot, **masking._asdict())
  if impl == "xla" or (impl == "blocked" and tq < BLOCKED_MIN_QUERIES):
    return _xla_attention(q, k, v, mask, bias, scale, precision)
  if impl == "blocked":
    return _blocked_attention(q, k, v, mask, bias, scale, precision)
  return dot_product_attention(q, k, v, mask, scale, "cudnn")


def dot_product_attention(q, k, v, mask, scale, implementation):
  """`jax.nn.dot_product_attention` with native GQA: k/v keep their KVH heads (the
  function groups query heads itself), and the dense mask [B, 1, Tq, Tk]."""
  return jax.nn.dot_product_attention(
      q, k, v, mask=mask, scale=scale, implementation=implementation
  )


def _xla_attention(q, k, v, mask, bias, scale, precision):
  b, tq, h, d = q.shape
  kvh = k.shape[2]
  g = h // kvh
  qg = q.reshape(b, tq, kvh, g, d)
  # Logits accumulate in float32; softmax in float32, cast back before the value matmul
  # (the order transformers' eager attention uses).
  # One query (a decode step): the cache as the product's left operand, so XLA:CPU
  # streams it as it lies instead of transposing every layer's keys first.
  spec = "bskd,bqkgd->bkgqs" if tq == 1 else "bqkgd,bskd->bkgqs"
  operands = (k, qg) if tq == 1 else (qg, k)
  logits = (
      jnp.einsum(spec, *operands, precision=precision, preferred_element_type=jnp.float32) * scale
  )
  if bias is not None:
    logits = logits + bias.reshape(b, kvh, g, tq, -1).astype(jnp.float32)
  if mask is not None:
    # A large finite negative keeps fully-masked rows (left padding) NaN-free.
    logits = jnp.where(mask[:, :, None], logits, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v, precision=precision)
  return out.reshape(b, tq, h, d)


def _blocked_attention(q, k, v, mask, bias, scale, precision):
  """`_xla_attention`'s math per row and key/value head (its g query heads), under
  lax.map, on head-major copies so that each block is one contiguous slice."""
  b, tq, h, d = q.shape
  tk, kvh = k.shape[1], k.shape[2]
  g = h // kvh
  rows = (
      jnp.transpose(q.reshape(b, tq, kvh, g, d), (0, 2, 3, 1, 4)),  # [B, KVH, g, Tq, D]
      jnp.swapaxes(k, 1, 2),
      jnp.swapaxes(v, 1, 2),  # [B, KVH, Tk, D]
      None if mask is None else mask[:, 0],  # [B, Tq, Tk]
      None if bias is None else bias.reshape(b, kvh, g, tq, tk),
  )

  def head(xs, m):
    qh, kh, vh, bh = xs  # [g, Tq, D], [Tk, D], [Tk, D], [g, Tq, Tk]
    logits = (
        jnp.einsum("gqd,sd->gqs", qh, kh, precision=precision, preferred_element_type=jnp.float32)
        * scale
    )
    if bh is not None:
      logits = logits + bh.astype(jnp.float32)
    if m is not None:
      logits = jnp.where(m[None], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(vh.dtype)
    return jnp.einsum("gqs,sd->gqd", probs, vh, precision=precision)

  def row(xs):
    qr, kr, vr, mr, br = xs
    return jax.lax.map(lambda x: head(x, mr), (qr, kr, vr, br), batch_size=HEADS_PER_BLOCK)

  out = jax.lax.map(row, rows)  # [B, KVH, g, Tq, D]
  return jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(b, tq, h, d)
