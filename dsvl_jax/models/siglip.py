"""SigLIP ViT as DeepSeek-VL runs it (reference 1.3).

No class token, learned position embedding, pre-LN blocks with a fused qkv projection,
exact GELU, LayerNorm eps 1e-6 with two-pass variance, the first `num_blocks` blocks of
the configured depth (ORIG `select_layer`), always followed by the final LayerNorm. The
attention-pool head of the checkpoint is never run and not built.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from dsvl_jax.models import layers
from dsvl_jax.models.attention import attention, placement_platform
from dsvl_jax.models.config import ComputeConfig, SamConfig, SiglipConfig


class ViTMlp(nn.Module):
  """fc1 -> exact GELU -> fc2. [B, N, D] -> [B, N, D]."""

  compute: ComputeConfig
  hidden: int
  names: tuple[str, str] = ("fc1", "fc2")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    h = layers.dense(self.compute, self.hidden, ("vit_embed", "vit_mlp"), name=self.names[0])(x)
    h = layers.constrain(layers.gelu(h), ("batch", "vit_tokens", "vit_mlp"))
    return layers.dense(self.compute, d, ("vit_mlp", "vit_embed"), name=self.names[1])(h)


def split_qkv(compute: ComputeConfig, num_heads: int, x: jax.Array):
  """Fused qkv projection with the reference's (3, heads, head_dim) output layout.

  Must be called inside a compact module (creates the 'qkv' DenseGeneral there).
  x [..., D] -> q, k, v each [..., H, Dh]; kernel [D, 3, H, Dh], bias [3, H, Dh].
  """
  d = x.shape[-1]
  qkv = layers.dense(
      compute,
      (3, num_heads, d // num_heads),
      ("vit_embed", "qkv", "vit_heads", "head_dim"),
      name="qkv",
  )(x)
  return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]


class SiglipAttention(nn.Module):
  """Global multi-head self-attention. [B, N, D] -> [B, N, D]."""

  compute: ComputeConfig
  num_heads: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    q, k, v = split_qkv(self.compute, self.num_heads, x)
    # 576 tokens need no Pallas kernel: under 'splash' the towers use the reference
    # (the kernel's 128-blocks would pad 576 to 640, and an image batch need not split
    # over the mesh as the rows do).
    impl = self.compute.attention_impl
    impl = "xla" if impl == "splash" or (impl == "auto" and placement_platform() == "tpu") else impl
    o = attention(
        q,
        k,
        v,
        impl=impl,
        precision=layers.precision_of(self.compute.precision),
        chunk=self.compute.attention_block,
    )
    return layers.dense(
        self.compute, x.shape[-1], ("vit_heads", "head_dim", "vit_embed"), n_in=2, name="proj"
    )(o)


class SiglipBlock(nn.Module):
  """Pre-LN transformer block, scanned: (x [B, N, D]) -> (x, None)."""

  cfg: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array):
    cfg, compute = self.cfg, self.compute
    x = layers.constrain(x, ("batch", "vit_tokens", "vit_embed"))
    h = layers.layer_norm(compute, cfg.layer_norm_eps, "vit_embed", name="norm1")(x)
    x = x + SiglipAttention(compute, cfg.num_heads, name="attn")(h)
    h = layers.layer_norm(compute, cfg.layer_norm_eps, "vit_embed", name="norm2")(x)
    return x + ViTMlp(compute, cfg.mlp_dim, name="mlp")(h), None


class ViTTower(nn.Module):
  """What the SigLIP and SAM towers share: the patchify stem and one nn.scan of blocks."""

  cfg: SiglipConfig | SamConfig
  compute: ComputeConfig

  def stem(self, pixels: jax.Array, pos_shape: tuple[int, ...], pos_axes: layers.Axes) -> jax.Array:
    """pixels [B, S, S, 3] -> [B, S/P, S/P, width]: the conv `patch_embed` plus the learned
    position table `pos_embed` [*pos_shape] (layers.patch_embed)."""
    cfg = self.cfg
    return layers.patch_embed(
        self, self.compute, pixels, cfg.width, cfg.patch_size, pos_shape, pos_axes
    )

  def scanned_blocks(self, block_cls: type[nn.Module], depth: int, **block_kwargs) -> nn.Module:
    """`depth` block_cls(cfg, compute, **block_kwargs) under nn.scan as 'blocks'; a block
    carries x alone: x -> (x, its outputs stacked over the layers)."""
    return layers.scan_blocks(
        block_cls,
        depth,
        in_axes=(),
        name="blocks",
        remat_policy=self.compute.remat_policy,
        cfg=self.cfg,
        compute=self.compute,
        **block_kwargs,
    )


class Siglip(ViTTower):
  """Normalised pixels [B, S, S, 3] (NHWC) -> tokens [B, (S/P)^2, width]."""

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    cfg, compute = self.cfg, self.compute
    x = self.stem(pixels, (cfg.num_tokens, cfg.width), ("vit_tokens", "vit_embed"))
    b, gh, gw, d = x.shape
    x = x.reshape(b, gh * gw, d)  # row-major over the patch grid, as torch's flatten(2)
    x, _ = self.scanned_blocks(SiglipBlock, cfg.num_blocks)(x)
    return layers.layer_norm(compute, cfg.layer_norm_eps, "vit_embed", name="norm")(x)
