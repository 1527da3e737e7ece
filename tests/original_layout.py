"""Builds an original-release (DeepSeek) state dict from a transformers one.

Written independently of convert/ from the reference's renaming rules (section 2.3),
inverted, plus the tensors the original files carry but never use (2.4): the SigLIP
attention-pool head and, for the hybrid tower, two unused LayerNorms.
"""

from __future__ import annotations

import re

import numpy as np

SAM = "vision_model.vision_tower_high.vision_tower."

_SAM_RULES = [
    (
        r"model\.high_res_vision_model\.vision_encoder\.patch_embed\.projection\.",
        SAM + "patch_embed.proj.",
    ),
    (
        r"model\.high_res_vision_model\.vision_encoder\.layers\.(\d+)\.layer_norm(\d)\.",
        SAM + r"blocks.\1.norm\2.",
    ),
    (r"model\.high_res_vision_model\.vision_encoder\.layers\.(\d+)\.", SAM + r"blocks.\1."),
    (r"model\.high_res_vision_model\.vision_encoder\.neck\.conv1\.", SAM + "neck.0."),
    (r"model\.high_res_vision_model\.vision_encoder\.neck\.layer_norm1\.", SAM + "neck.1."),
    (r"model\.high_res_vision_model\.vision_encoder\.neck\.conv2\.", SAM + "neck.2."),
    (r"model\.high_res_vision_model\.vision_encoder\.neck\.layer_norm2\.", SAM + "neck.3."),
    (r"model\.high_res_vision_model\.vision_encoder\.pos_embed", SAM + "pos_embed"),
    (r"model\.high_res_vision_neck\.conv1\.", SAM + "neck_hd.0."),
    (r"model\.high_res_vision_neck\.layer_norm1\.", SAM + "neck_hd.1."),
    (r"model\.high_res_vision_neck\.conv2\.", SAM + "neck_hd.2."),
    (r"model\.high_res_vision_neck\.layer_norm2\.", SAM + "neck_hd.3."),
    (r"model\.high_res_vision_proj\.conv1\.", SAM + "downsamples.0."),
    (r"model\.high_res_vision_proj\.conv2\.", SAM + "downsamples.1."),
    (r"model\.high_res_vision_alpha", SAM + "hd_alpha_downsamples"),
]


def _siglip_rules(v):
  return [
      (r"model\.vision_model\.embeddings\.patch_embedding\.", v + "patch_embed.proj."),
      (
          r"model\.vision_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.",
          v + r"blocks.\1.attn.proj.",
      ),
      (r"model\.vision_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.", v + r"blocks.\1.norm\2."),
      (r"model\.vision_model\.encoder\.layers\.(\d+)\.mlp\.", v + r"blocks.\1.mlp."),
      (r"model\.vision_model\.post_layernorm\.", v + "norm."),
  ]


def _aligner_rules(hybrid):
  if hybrid:
    return [
        (r"model\.aligner\.high_res_vision_proj\.", "aligner.high_up_proj."),
        (r"model\.aligner\.vision_proj\.", "aligner.low_up_proj."),
        (r"model\.aligner\.proj\.", "aligner.layers.1."),
    ]
  return [
      (r"model\.aligner\.linear1\.", "aligner.layers.0."),
      (r"model\.aligner\.linear2\.", "aligner.layers.2."),
  ]


def hf_to_original(state: dict, hybrid: bool, seed: int = 0) -> dict:
  v = "vision_model.vision_tower_low.vision_tower." if hybrid else "vision_model.vision_tower."
  rules = (
      _SAM_RULES
      + _siglip_rules(v)
      + _aligner_rules(hybrid)
      + [
          (r"model\.language_model\.", "language_model.model."),
          (r"lm_head\.weight", "language_model.lm_head.weight"),
      ]
  )
  out, qkv = {}, {}
  for key, value in state.items():
    m = re.fullmatch(
        r"model\.vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key
    )
    if m:
      qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
      continue
    if key == "model.vision_model.embeddings.position_embedding.weight":
      out[v + "pos_embed"] = value[None]
      continue
    for pattern, repl in rules:
      new, n = re.subn("^" + pattern, repl, key)
      if n:
        out[new] = value
        break
    else:
      raise KeyError(f"no rule for {key}")
  for (i, kind), parts in qkv.items():
    out[f"{v}blocks.{i}.attn.qkv.{kind}"] = np.concatenate([parts[c] for c in "qkv"], axis=0)
  # Tensors the release carries but never runs.
  rng = np.random.default_rng(seed)
  d = out[v + "norm.weight"].shape[0]
  mlp = out[v + "blocks.0.mlp.fc1.weight"].shape[0]
  for name, shape in {
      "latent": (1, 1, d),
      "q.weight": (d, d),
      "q.bias": (d,),
      "kv.weight": (2 * d, d),
      "kv.bias": (2 * d,),
      "proj.weight": (d, d),
      "proj.bias": (d,),
      "norm.weight": (d,),
      "norm.bias": (d,),
      "mlp.fc1.weight": (mlp, d),
      "mlp.fc1.bias": (mlp,),
      "mlp.fc2.weight": (d, mlp),
      "mlp.fc2.bias": (d,),
  }.items():
    out[f"{v}attn_pool.{name}"] = rng.standard_normal(shape).astype(np.float32)
  if hybrid:
    width = out["aligner.low_up_proj.weight"].shape[1]
    for which in ("high", "low"):
      out[f"vision_model.{which}_layer_norm.weight"] = np.ones(width, np.float32)
      out[f"vision_model.{which}_layer_norm.bias"] = np.zeros(width, np.float32)
  return out
