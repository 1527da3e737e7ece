"""SAM-B ViTDet image encoder with DeepSeek-VL's additions (reference 1.4, 6).

Patch embedding + absolute position embedding, blocks with windowed (zero-padded, no
mask) or global attention and decomposed relative positions, the SAM neck, then
DeepSeek's float32 bilinear resize (64 -> 96), two bias-free stride-2 convolutions, and
the HD branch: the first global block's output through its own neck, the same resize
and the same (shared) convolutions, scaled by a learned scalar and added.

The window/global pattern is periodic (W W G x 4 for SAM-B), so one period is the body
of an nn.scan: parameters are stacked per position in the period ("block_0",
"block_1", ...) over a leading 'layers' axis of depth/period groups.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from dsvl_jax.models import layers
from dsvl_jax.models.attention import attention
from dsvl_jax.models.config import ComputeConfig, SamConfig
from dsvl_jax.models.siglip import ViTMlp, ViTTower, split_qkv


def block_period(cfg: SamConfig) -> int:
  """Smallest period p | depth with is_global[i] == is_global[i % p] for all blocks."""
  is_global = [i in cfg.global_attn_indexes for i in range(cfg.depth)]
  for p in range(1, cfg.depth + 1):
    if cfg.depth % p == 0 and all(is_global[i] == is_global[i % p] for i in range(cfg.depth)):
      return p
  return cfg.depth


def rel_pos_table(table: jax.Array, size: int) -> jax.Array:
  """R[i, j] = table[i - j + size - 1]: [2*size-1, C] -> [size, size, C].

  Tables are stored at exactly the size used (positions are never interpolated).
  """
  if table.shape[0] != 2 * size - 1:
    raise ValueError(
        f"relative position table has {table.shape[0]} rows, "
        f"expected {2 * size - 1} for a {size}-token side"
    )
  idx = jnp.arange(size)[:, None] - jnp.arange(size)[None, :] + size - 1
  return table[idx]


class SamAttention(nn.Module):
  """Attention over a square token map with decomposed relative positions.

  x [B, h, w, D] -> [B, h, w, D]. The rel-pos terms use the unscaled query.
  """

  cfg: SamConfig
  compute: ComputeConfig
  size: int  # side of the attended map (window size, or the full grid for global blocks)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, compute = self.cfg, self.compute
    b, h, w, d = x.shape
    nh, hd = cfg.num_heads, d // cfg.num_heads
    q, k, v = split_qkv(compute, nh, x)  # each [B, h, w, H, Dh]
    init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("rel_pos", "head_dim"))
    pdtype = layers.dtype_of(compute.param_dtype)
    rel_h = rel_pos_table(self.param("rel_pos_h", init, (2 * self.size - 1, hd), pdtype), h)
    rel_w = rel_pos_table(self.param("rel_pos_w", init, (2 * self.size - 1, hd), pdtype), w)
    prec = layers.precision_of(compute.precision)
    bias_h = jnp.einsum("bhwnc,hkc->bnhwk", q, rel_h.astype(q.dtype), precision=prec)
    bias_w = jnp.einsum("bhwnc,wkc->bnhwk", q, rel_w.astype(q.dtype), precision=prec)
    bias = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(b, nh, h * w, h * w)
    # Images (or windows) stay split over the batch axes: at 1024 px a global block's
    # bias and logits are 0.8 GB per image, which replicated would not fit anywhere.
    bias = layers.constrain(bias, ("batch", "vit_heads", None, None))
    # Only the reference math takes the bias: 'xla', or 'blocked' where the generators
    # run it (a CPU), one head's logits at a time.
    impl = "blocked" if compute.attention_impl == "blocked" else "xla"
    out = attention(
        q.reshape(b, h * w, nh, hd),
        k.reshape(b, h * w, nh, hd),
        v.reshape(b, h * w, nh, hd),
        bias=bias,
        impl=impl,
        precision=prec,
    )
    out = layers.dense(compute, d, ("vit_heads", "head_dim", "vit_embed"), n_in=2, name="proj")(out)
    return out.reshape(b, h, w, d)


class SamBlock(nn.Module):
  """Pre-LN block; `window` > 0 for windowed attention, 0 for global. [B,H,W,D] -> same."""

  cfg: SamConfig
  compute: ComputeConfig
  window: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, compute = self.cfg, self.compute
    b, hh, ww, d = x.shape
    x = layers.constrain(x, ("batch", "vit_h", "vit_w", "vit_embed"))
    h = layers.layer_norm(compute, cfg.layer_norm_eps, "vit_embed", name="norm1")(x)
    if self.window:
      ws = self.window
      ph, pw = -hh % ws, -ww % ws
      # Zero-pad the normalised map before qkv: padded tokens get k = b_k, v = b_v and
      # are attended to (no mask), exactly as the reference does.
      h = jnp.pad(h, ((0, 0), (0, ph), (0, pw), (0, 0)))
      nh_, nw_ = (hh + ph) // ws, (ww + pw) // ws
      h = h.reshape(b, nh_, ws, nw_, ws, d).transpose(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, d)
      h = layers.constrain(h, ("batch", "vit_h", "vit_w", "vit_embed"))  # image x window
      h = SamAttention(cfg, compute, ws, name="attn")(h)
      h = h.reshape(b, nh_, nw_, ws, ws, d).transpose(0, 1, 3, 2, 4, 5)
      h = h.reshape(b, hh + ph, ww + pw, d)[:, :hh, :ww]
    else:
      h = SamAttention(cfg, compute, hh, name="attn")(h)
    x = x + h
    h = layers.layer_norm(compute, cfg.layer_norm_eps, "vit_embed", name="norm2")(x)
    return x + ViTMlp(compute, cfg.mlp_dim, ("lin1", "lin2"), name="mlp")(h)


class SamGroup(nn.Module):
  """One period of the block pattern, scanned: x -> (x, output of block `tap`)."""

  cfg: SamConfig
  compute: ComputeConfig
  windows: tuple[int, ...]
  tap: int  # position in the period whose output is emitted; -1 for none

  @nn.compact
  def __call__(self, x: jax.Array):
    tapped = None
    for i, window in enumerate(self.windows):
      x = SamBlock(self.cfg, self.compute, window, name=f"block_{i}")(x)
      if i == self.tap:
        tapped = x
    return x, tapped


class SamNeck(nn.Module):
  """Conv1x1 -> LayerNorm2d -> Conv3x3 -> LayerNorm2d, no conv biases. [B,H,W,D]->[B,H,W,C]."""

  cfg: SamConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, compute = self.cfg, self.compute
    x = layers.conv(compute, cfg.neck_channels, 1, use_bias=False, name="conv1")(x)
    x = layers.layer_norm(compute, cfg.layer_norm_eps, "conv_out", name="norm1")(x)
    x = layers.conv(compute, cfg.neck_channels, 3, padding=1, use_bias=False, name="conv2")(x)
    return layers.layer_norm(compute, cfg.layer_norm_eps, "conv_out", name="norm2")(x)


class Sam(ViTTower):
  """CLIP-normalised pixels [B, S, S, 3] (NHWC) -> tokens [B, out_grid^2, output_dim]."""

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    cfg, compute = self.cfg, self.compute
    x = self.stem(pixels, (cfg.grid, cfg.grid, cfg.width), ("vit_h", "vit_w", "vit_embed"))
    p = block_period(cfg)
    windows = tuple(0 if i in cfg.global_attn_indexes else cfg.window_size for i in range(p))
    tap = cfg.hd_tap % p if cfg.hd_branch else -1
    x, taps = self.scanned_blocks(SamGroup, cfg.depth // p, windows=windows, tap=tap)(x)

    downsamples = [
        layers.conv(compute, c, 3, stride=2, padding=1, use_bias=False, name=f"downsample_{i}")
        for i, c in enumerate(cfg.downsample_channels)
    ]

    def project(features: jax.Array) -> jax.Array:
      # float32 bilinear resize with half-pixel centres (torch align_corners=False).
      b, _, _, c = features.shape
      features = jax.image.resize(
          features.astype(jnp.float32),
          (b, cfg.resize_to, cfg.resize_to, c),
          method="linear",
          antialias=False,
      ).astype(features.dtype)
      for conv in downsamples:
        features = conv(features)
      return features

    out = project(SamNeck(cfg, compute, name="neck")(x))
    if cfg.hd_branch:
      hd = project(SamNeck(cfg, compute, name="neck_hd")(taps[cfg.hd_tap // p]))
      alpha = self.param(
          "hd_alpha",
          nn.with_logical_partitioning(nn.initializers.zeros_init(), ("scalar",)),
          (1,),
          layers.dtype_of(compute.param_dtype),
      )
      out = out + hd * alpha.astype(hd.dtype)
    b, gh, gw, c = out.shape
    return out.reshape(b, gh * gw, c)  # row-major over the grid, "b c h w -> b (h w) c"
