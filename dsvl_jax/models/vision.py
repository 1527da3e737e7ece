"""Vision towers: [0, 1] images in, aligned-width-agnostic vision tokens out.

Both released processors emit un-normalised [0, 1] pixels and the towers normalise
(reference 3.2-3.3), so our towers take [N, 3, S, S] float images in [0, 1] (NCHW, the
processor's layout) and do the normalisation, and for the hybrid tower the 384 resize,
themselves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from dsvl_jax.models import layers
from dsvl_jax.models.config import ComputeConfig, SamConfig, SiglipConfig
from dsvl_jax.models.sam import Sam
from dsvl_jax.models.siglip import Siglip


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """[N, 3, S, S] in [0, 1] -> NHWC (x - mean) / std in float32."""
  x = images.astype(jnp.float32).transpose(0, 2, 3, 1)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def low_res_view(images: jax.Array, size: int) -> jax.Array:
  """The hybrid tower's SigLIP input: antialiased bilinear resize of the [0, 1] image.

  [N, 3, S, S] -> [N, 3, size, size] float32 (torch F.interpolate bilinear,
  align_corners=False, antialias=True, as ORIG's torchvision Resize on tensors).
  """
  n, c, _, _ = images.shape
  return jax.image.resize(
      images.astype(jnp.float32), (n, c, size, size), method="linear", antialias=True
  )


class SiglipTower(nn.Module):
  """1.3B tower: images [N, 3, 384, 384] in [0, 1] -> tokens [N, 576, 1024]."""

  cfg: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = normalize(images, self.cfg.pixel_mean, self.cfg.pixel_std)
    return Siglip(self.cfg, self.compute, name="siglip")(
        x.astype(layers.dtype_of(self.compute.dtype))
    )


class HybridTower(nn.Module):
  """7B tower: images [N, 3, 1024, 1024] in [0, 1] -> (high [N, 576, 1024], low [N, 576, 1024]).

  high: SAM on the CLIP-normalised 1024 image; low: SigLIP on the 0.5/0.5-normalised
  antialiased 384 resize.
  """

  siglip_cfg: SiglipConfig
  sam_cfg: SamConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    dtype = layers.dtype_of(self.compute.dtype)
    high = normalize(images, self.sam_cfg.pixel_mean, self.sam_cfg.pixel_std)
    high = Sam(self.sam_cfg, self.compute, name="sam")(high.astype(dtype))
    low = normalize(
        low_res_view(images, self.siglip_cfg.image_size),
        self.siglip_cfg.pixel_mean,
        self.siglip_cfg.pixel_std,
    )
    low = Siglip(self.siglip_cfg, self.compute, name="siglip")(low.astype(dtype))
    return high, low
