"""Model FLOPs of a training step, for model FLOPs utilisation (MFU).

Counted from the architecture, per module, as matmul FLOPs (2 per multiply-add):

  LLM, per real token      layers x (q, k, v, o projections + 3 SwiGLU matmuls) + LM head
  LLM attention, per       layers x 4 n^2 H Dh for a segment of n tokens, halved for the
    packed segment         causal mask (QK^T and PV over the lower triangle)
  SigLIP, per real image   patch embedding + blocks x (qkv, proj, MLP, 4 N^2 W attention)
  SAM, per real image      patch embedding + blocks x (qkv, proj, MLP, windowed or global
                           attention with its decomposed relative-position terms) + neck
                           and downsample convs (twice with the HD branch)
  aligner, per real image  its Linear layers over the 576 (or K) image tokens

Padding (tokens with segment 0, empty image slots) is excluded: those FLOPs run but do
no model work. A training step costs, per module, 3x its forward FLOPs when trained
(forward, input gradient, weight gradient), 2x when frozen but a trained module lies
below it so gradients flow through (the LLM in stage 1: forward + input gradient), and
1x when frozen with nothing trained below (the towers in stages 1-2, SAM in stage 3).
Elementwise work (norms, softmax, activations) is left out, as is usual for MFU.
`causal=False` counts the full T x T attention, which is what XLA's cost analysis of
the compiled step sees (tests/test_train.py compares the two).

MFU = step FLOPs / (step time x devices x per-device peak); see dsvl_jax/runtime/perf.py for the
peak table (TPU, A100, H100/H200) and the CPU peak measured at start-up.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from dsvl_jax.models.config import SamConfig, SiglipConfig, VLMConfig


@dataclasses.dataclass(frozen=True)
class BatchShape:
  """What of a batch did model work: real tokens, sum of squared segment lengths, images."""

  tokens: int
  segment_sq: int
  images: int

  @classmethod
  def of(cls, segment_ids: np.ndarray, num_images: np.ndarray | None = None) -> "BatchShape":
    """segment_ids [B, T] (0 = padding); num_images [B] valid image slots."""
    seg = np.asarray(segment_ids)
    sq = 0
    for row in seg:
      counts = np.bincount(row[row > 0])
      sq += int(np.sum(counts.astype(np.int64) ** 2))
    n = 0 if num_images is None else int(np.sum(num_images))
    return cls(int(np.sum(seg > 0)), sq, n)


def llm_flops(cfg: VLMConfig, shape: BatchShape, causal: bool = True) -> dict[str, float]:
  c = cfg.llm
  proj = 2 * c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
  mlp = 3 * 2 * c.hidden_size * c.intermediate_size
  attn = 4 * c.num_heads * c.head_dim * shape.segment_sq * (0.5 if causal else 1.0)
  return {
      "llm": c.num_layers * ((proj + mlp) * shape.tokens + attn)
      + 2 * c.hidden_size * c.vocab_size * shape.tokens
  }


def siglip_image_flops(s: SiglipConfig) -> float:
  n, w = s.num_tokens, s.width
  patch = 2 * n * s.patch_size**2 * 3 * w
  block = 2 * n * w * 3 * w + 2 * n * w * w + 4 * n * w * s.mlp_dim + 4 * n * n * w
  return patch + s.num_blocks * block


def sam_image_flops(m: SamConfig) -> tuple[float, float]:
  """(blocks incl. patch embedding, neck + downsample convs) FLOPs of one image."""
  g, w = m.grid, m.width
  tokens = g * g
  total = 2 * tokens * m.patch_size**2 * 3 * w
  for i in range(m.depth):
    dense = 2 * tokens * w * 3 * w + 2 * tokens * w * w + 4 * tokens * w * m.mlp_dim
    if i in m.global_attn_indexes:
      side, maps = g, 1
    else:
      side = m.window_size
      maps = (-(-g // side)) ** 2  # zero-padded windows are computed too, as the model does
    # QK^T and PV over side^2 tokens, plus the rel-pos terms q . R_h and q . R_w.
    attn = maps * (4 * side**4 * w + 4 * side**3 * w)
    total += dense + attn
  neck = 2 * tokens * w * m.neck_channels + 2 * tokens * 9 * m.neck_channels**2
  side, c_in, down = m.resize_to, m.neck_channels, 0.0
  for c_out in m.downsample_channels:
    side //= 2
    down += 2 * side * side * 9 * c_in * c_out
    c_in = c_out
  heads = 2 if m.hd_branch else 1
  return total, heads * (neck + down)


def aligner_image_flops(cfg: VLMConfig) -> float:
  n, d = cfg.num_image_tokens, cfg.llm.hidden_size
  if cfg.hybrid:
    return 2 * n * (cfg.sam.output_dim * d // 2 + cfg.siglip.width * d // 2 + d * d)
  return 2 * n * (cfg.siglip.width * d + (cfg.aligner.depth - 1) * d * d)


def forward_flops(cfg: VLMConfig, shape: BatchShape, causal: bool = True) -> dict[str, float]:
  """Forward FLOPs per module: llm, aligner, siglip, sam, sam_neck."""
  out = dict(llm_flops(cfg, shape, causal))
  out["aligner"] = aligner_image_flops(cfg) * shape.images
  out["siglip"] = siglip_image_flops(cfg.siglip) * shape.images
  if cfg.hybrid:
    blocks, neck = sam_image_flops(cfg.sam)
    out["sam"], out["sam_neck"] = blocks * shape.images, neck * shape.images
  return out


# Modules whose gradient flows into each module (those closer to the input).
UPSTREAM = {
    "sam": (),
    "siglip": (),
    "sam_neck": ("sam",),
    "aligner": ("sam", "sam_neck", "siglip"),
    "llm": ("sam", "sam_neck", "siglip", "aligner"),
}


def multipliers(trainable: Iterable[str]) -> dict[str, int]:
  """3 trained; 2 frozen with a trained module upstream; 1 otherwise (module docstring)."""
  train = set(trainable) | ({"sam_neck"} if "sam" in trainable else set())
  return {m: 3 if m in train else 2 if train & set(up) else 1 for m, up in UPSTREAM.items()}


def step_flops(
    cfg: VLMConfig, trainable: Iterable[str], shape: BatchShape, causal: bool = True
) -> float:
  fwd = forward_flops(cfg, shape, causal)
  mult = multipliers(trainable)
  return float(sum(mult[m] * f for m, f in fwd.items()))
