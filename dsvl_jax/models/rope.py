"""Rotary position embeddings, rotate-half (GPT-NeoX) layout (reference 5.2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_cos_sin(
    positions: jax.Array, head_dim: int, theta: float, dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array]:
  """cos, sin tables [B, T, head_dim] for integer positions [B, T].

  Angles are computed in float32 (as the reference does) and cast to the compute dtype.
  """
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x: [B, T, H, D]; cos/sin: [B, T, D]. Returns x*cos + rotate_half(x)*sin."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]
