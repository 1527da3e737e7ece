"""Vision-language adaptors (reference 1.6): vision tokens -> LLM embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from dsvl_jax.models import layers
from dsvl_jax.models.config import AlignerConfig, ComputeConfig


class MlpGeluAligner(nn.Module):
  """`mlp_gelu`: Linear, then (exact GELU, Linear) x (depth - 1).

  x [B, N, Din] -> [B, N, D_llm]. Linear k is ORIG `layers.{2k}`.
  """

  cfg: AlignerConfig
  compute: ComputeConfig
  out_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = layers.dense(self.compute, self.out_dim, ("vit_embed", "embed"), name="linear_0")(x)
    for i in range(1, self.cfg.depth):
      x = layers.dense(self.compute, self.out_dim, ("mlp", "embed"), name=f"linear_{i}")(
          layers.gelu(x)
      )
    return x


class HybridSplitAligner(nn.Module):
  """`low_high_hybrid_split_mlp_gelu`: per-branch up-projections to D/2, concat
  [high, low] (that order), exact GELU, Linear D -> D.

  high [B, N, Dh], low [B, N, Dl] -> [B, N, D_llm].
  """

  cfg: AlignerConfig
  compute: ComputeConfig
  out_dim: int

  @nn.compact
  def __call__(self, high: jax.Array, low: jax.Array) -> jax.Array:
    half = self.out_dim // 2
    high = layers.dense(self.compute, half, ("vit_embed", "mlp"), name="high_up_proj")(high)
    low = layers.dense(self.compute, half, ("vit_embed", "mlp"), name="low_up_proj")(low)
    x = layers.gelu(jnp.concatenate([high, low], axis=-1))
    return layers.dense(self.compute, self.out_dim, ("mlp", "embed"), name="proj")(x)
