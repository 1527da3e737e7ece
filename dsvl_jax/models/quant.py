"""Dense kernels stored quantised, dequantised inside the matmul.

Two users, one representation: QLoRA's frozen base (compute.lora.base_quant, the adapted
kernels) and weight-only quantisation for inference (compute.quant, the kernels its
targets name). A kernel [..., n] is cut into blocks of `block` consecutive values along
its last axis (n itself when shorter); each block keeps its absolute maximum as a float32
scale [..., n / block] and its values as codes relative to it:

  nf4   4-bit NormalFloat (Dettmers et al. 2023, QLoRA): the code is the nearest of the
        16 levels in NF4 (quantiles of a standard normal, scaled to [-1, 1]); two codes
        a byte, the first in the high nibble: uint8 [..., n / 2]
  int8  round(127 x / absmax): int8 [..., n]
  int4  round(7 x / absmax) in [-7, 7]: symmetric, so zero and both ends +-absmax are
        exact, with one step 1/7 everywhere; the two's-complement nibble's 16th value,
        -8, is never written (using it would make the grid lopsided: [-8, 7] x absmax/8
        clips +absmax, or [-8, 7] x absmax/7 wastes the code). Two codes a byte as
        signed nibbles: values 2i and 2i+1 of the last axis in byte i, 2i in the high
        nibble, each the low 4 bits of its two's complement (byte = c0 << 4 | c1 & 15):
        int8 [..., n / 2]; an arithmetic shift right by 4 recovers c0, a shift left by 4
        and back c1.

Dequantising is a table lookup (nf4), a cast (int8) or two shifts (int4), times the
block's scale; under the scanned LLM only one layer's kernels exist in full at a time.
Every value's error is at most half a step: absmax / 254 (int8), absmax / 14 (int4),
half the widest gap between NF4 levels times absmax (nf4).

Leading axes (a scanned stack's layers) are carried along: quantize works on [..., n].
Whole parameter trees: models/quant_tree.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dsvl_jax.models.config import QuantKind as Kind

KINDS = ("nf4", "int8", "int4")  # the stored kinds ("none": a float kernel)
PACKED = ("nf4", "int4")  # two codes a byte

# QLoRA's NormalFloat4 levels, as published (bitsandbytes' NF4 table).
NF4 = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    np.float32,
)


_NF4_MIDPOINTS = (NF4[1:] + NF4[:-1]) / 2


def block_size(n: int, block: int) -> int:
  """The block along a last axis of n values: `block`, or n when shorter."""
  return min(block, n)


def stored_shapes(shape: tuple[int, ...], kind: Kind, block: int) -> dict[str, tuple]:
  """{'codes': ..., 'scale': ...} shapes for a kernel of `shape`."""
  *lead, n = shape
  b = block_size(n, block)
  codes = n // 2 if kind in PACKED else n
  return {"codes": (*lead, codes), "scale": (*lead, n // b)}


def quantize(w: jax.Array, kind: Kind, block: int) -> dict[str, jax.Array]:
  """w [..., n] -> {'codes', 'scale'} (module docstring)."""
  *lead, n = w.shape
  b = block_size(n, block)
  if kind not in KINDS:
    raise ValueError(f"no quantisation {kind!r}; one of {KINDS}")
  if n % b or (kind in PACKED and n % 2):
    raise ValueError(f"a last axis of {n} does not split into blocks of {b} ({kind})")
  x = w.astype(jnp.float32).reshape(*lead, n // b, b)
  scale = jnp.max(jnp.abs(x), axis=-1)
  x = x / jnp.where(scale == 0, 1.0, scale)[..., None]
  x = x.reshape(*lead, n)
  if kind == "int8":
    return {"codes": jnp.round(x * 127).astype(jnp.int8), "scale": scale}
  if kind == "int4":
    q = jnp.round(x * 7).astype(jnp.int8)  # [-7, 7]
    return {"codes": (q[..., 0::2] << 4) | (q[..., 1::2] & 15), "scale": scale}
  # The nearest level (the lower one at a tie), found among the 15 midpoints between
  # levels: no [..., n, 16] distance table, whose bytes would be 16x the kernel's.
  idx = jnp.searchsorted(jnp.asarray(_NF4_MIDPOINTS), x, side="left").astype(jnp.uint8)
  return {"codes": (idx[..., 0::2] << 4) | idx[..., 1::2], "scale": scale}


def dequantize(stored: dict[str, jax.Array], kind: Kind, dtype=jnp.float32) -> jax.Array:
  """{'codes', 'scale'} -> the kernel [..., n] in `dtype`."""
  codes, scale = stored["codes"], stored["scale"]
  if kind == "int8":
    x = codes.astype(jnp.float32) / 127
  elif kind == "int4":  # arithmetic shifts sign-extend each nibble
    pairs = jnp.stack([codes >> 4, (codes << 4) >> 4], axis=-1)
    x = pairs.reshape(*codes.shape[:-1], -1).astype(jnp.float32) / 7
  elif kind == "nf4":
    idx = jnp.stack([codes >> 4, codes & 15], axis=-1).reshape(*codes.shape[:-1], -1)
    x = jnp.asarray(NF4)[idx]
  else:
    raise ValueError(f"no quantisation {kind!r}; one of {KINDS}")
  *lead, n = x.shape
  blocks = scale.shape[-1]
  x = x.reshape(*lead, blocks, n // blocks) * scale[..., None]
  return x.reshape(*lead, n).astype(dtype)
