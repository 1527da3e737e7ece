"""The mask ingredients every attention backend takes (attention.py describes them)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Masking(NamedTuple):
  """Which keys a query may attend to, besides the slots (backends differ in those)."""

  causal: bool  # a query sees keys whose slot is <= its own
  k_valid: jax.Array | None = None  # [B, Tk] bool: keys that exist (None: all)
  q_segment: jax.Array | None = None  # [B, Tq] int: packed-sequence ids (None: one)
  k_segment: jax.Array | None = None  # [B, Tk] int

  def segments(self, b: int, tq: int, tk: int) -> tuple[jax.Array, jax.Array]:
    """(q_segment [B, Tq], k_segment [B, Tk]) int32; absent ones all zeros."""
    i32 = jnp.int32
    q = jnp.zeros((b, tq), i32) if self.q_segment is None else self.q_segment.astype(i32)
    k = jnp.zeros((b, tk), i32) if self.k_segment is None else self.k_segment.astype(i32)
    return q, k
