"""transformers reference models built from our VLMConfig, with every tensor random.

transformers initialises tiny DeepSeek-VL SAM weights near 1e-10, SAM position
embeddings to zero and the HD alpha to 0, which would leave the SAM/HD path untested;
`randomize` draws every tensor so that each branch carries signal.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import transformers

from dsvl_jax.models import VLMConfig


def hf_config(cfg: VLMConfig):
  c = cfg.llm
  text = dict(
      model_type="llama",
      vocab_size=c.vocab_size,
      hidden_size=c.hidden_size,
      intermediate_size=c.intermediate_size,
      num_hidden_layers=c.num_layers,
      num_attention_heads=c.num_heads,
      num_key_value_heads=c.num_kv_heads,
      head_dim=c.head_dim,
      rms_norm_eps=c.rms_norm_eps,
      hidden_act="silu",
      max_position_embeddings=c.max_position_embeddings,
      rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
      tie_word_embeddings=c.tie_embeddings,
      bos_token_id=cfg.bos_token_id,
      eos_token_id=cfg.eos_token_id,
      pad_token_id=cfg.pad_token_id,
  )
  s = cfg.siglip
  vision = dict(
      model_type="siglip_vision_model",
      hidden_size=s.width,
      intermediate_size=s.mlp_dim,
      num_hidden_layers=s.depth,
      num_attention_heads=s.num_heads,
      image_size=s.image_size,
      patch_size=s.patch_size,
      hidden_act="gelu",
      layer_norm_eps=s.layer_norm_eps,
      vision_use_head=False,
  )
  common = dict(
      text_config=text,
      vision_config=vision,
      image_token_id=cfg.image_token_id,
      tie_word_embeddings=c.tie_embeddings,
  )
  if not cfg.hybrid:
    return transformers.DeepseekVLConfig(**common)
  m = cfg.sam
  assert m.downsample_channels == (2 * m.neck_channels, 4 * m.neck_channels)
  sam = dict(
      model_type="sam_vision_model",
      hidden_size=m.width,
      output_channels=m.neck_channels,
      num_hidden_layers=m.depth,
      num_attention_heads=m.num_heads,
      image_size=m.image_size,
      patch_size=m.patch_size,
      mlp_dim=m.mlp_dim,
      global_attn_indexes=list(m.global_attn_indexes),
      window_size=m.window_size,
      layer_norm_eps=m.layer_norm_eps,
      hidden_act="gelu",
  )
  return transformers.DeepseekVLHybridConfig(high_res_vision_config=sam, **common)


def model_class(cfg: VLMConfig):
  return (
      transformers.DeepseekVLHybridForConditionalGeneration
      if cfg.hybrid
      else transformers.DeepseekVLForConditionalGeneration
  )


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      r = torch.randn(p.shape, generator=gen, dtype=torch.float32)
      if "alpha" in name:
        p.copy_(0.5 + 0.5 * r.abs())
      elif "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.1 * r)
      elif "pos_embed" in name or "position_embedding" in name or p.ndim == 1:
        p.copy_(0.1 * r)
      else:  # fan-in scaling keeps activations O(1) through every block
        p.copy_(r / math.sqrt(max(1, int(np.prod(p.shape[1:])))))


def build(cfg: VLMConfig, seed: int = 0):
  """A float32 eval-mode transformers model with random weights."""
  model = model_class(cfg)(hf_config(cfg)).eval().to(torch.float32)
  randomize(model, seed)
  return model


def state_dict(model) -> dict[str, np.ndarray]:
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def hybrid_inputs(cfg: VLMConfig, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
  """transformers' (low, high) pixel inputs derived as our hybrid tower derives them.

  images [N, 3, 1024, 1024] in [0, 1]: high = CLIP-normalised image; low = torch's
  antialiased bilinear resize to 384 of the [0, 1] image, then (x - 0.5) / 0.5.
  """
  x = torch.from_numpy(images)
  mean = torch.tensor(cfg.sam.pixel_mean).view(1, 3, 1, 1)
  std = torch.tensor(cfg.sam.pixel_std).view(1, 3, 1, 1)
  high = (x - mean) / std
  s = cfg.siglip.image_size
  low = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
  lmean = torch.tensor(cfg.siglip.pixel_mean).view(1, 3, 1, 1)
  lstd = torch.tensor(cfg.siglip.pixel_std).view(1, 3, 1, 1)
  return (low - lmean) / lstd, high


def siglip_input(cfg: VLMConfig, images: np.ndarray) -> torch.Tensor:
  x = torch.from_numpy(images)
  mean = torch.tensor(cfg.siglip.pixel_mean).view(1, 3, 1, 1)
  std = torch.tensor(cfg.siglip.pixel_std).view(1, 3, 1, 1)
  return (x - mean) / std


def pixel_kwargs(cfg: VLMConfig, images: np.ndarray) -> dict[str, torch.Tensor]:
  """transformers' pixel arguments for [N, 3, S, S] images in [0, 1]."""
  if cfg.hybrid:
    low, high = hybrid_inputs(cfg, images)
    return {"pixel_values": low, "high_res_pixel_values": high}
  return {"pixel_values": siglip_input(cfg, images)}
