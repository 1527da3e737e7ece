"""`config.json` of both checkpoint layouts <-> our VLMConfig.

Reading fills keys a file omits with the defaults its own framework would use
(LlamaConfig, SiglipVisionConfig, SamVisionConfig; the original release's vision towers
are fixed architectures chosen by `model_name`). Token ids never come from a converted
text config's Llama defaults (1/2, reference 1.2): DeepSeek's 100000/100001 apply
whenever the vocabulary holds them.

Every export also writes `dsvl_jax_config.json`, our exact config, which import prefers:
it carries what neither layout can express (e.g. tiny test sizes in the original one).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dsvl_jax.checkpoint.mapping import ConversionError
from dsvl_jax.models.config import (
    CLIP_MEAN,
    SIGLIP_MEAN,
    SIGLIP_STD,
    AlignerConfig,
    LLMConfig,
    SamConfig,
    SiglipConfig,
    VLMConfig,
)

OUR_CONFIG = "dsvl_jax_config.json"
DEEPSEEK_BOS, DEEPSEEK_EOS, DEEPSEEK_IMAGE = 100000, 100001, 100015

# The original release builds its towers by name (deepseek_vl/models/*_encoder.py).
ORIGINAL_TOWERS = {
    "siglip_large_patch16_384": SiglipConfig(),
    "sam_b_downsample": SamConfig(),
}

# Tables of (key, our field, default) rows, read by `_read` and written by `_write` in
# row order (config.json's). The Llama sizes both layouts write first, LlamaConfig defaults:
_LLAMA_KEYS = (
    ("vocab_size", "vocab_size", 32000),
    ("hidden_size", "hidden_size", 4096),
    ("intermediate_size", "intermediate_size", 11008),
    ("num_hidden_layers", "num_layers", 32),
    ("num_attention_heads", "num_heads", 32),
)

# transformers' SigLIP and SAM vision configs side by side (None: not that tower's key):
# key, our field, SiglipVisionConfig default, SamVisionConfig default.
_VISION_KEYS = (
    ("hidden_size", "width", 768, 768),
    ("intermediate_size", "mlp_dim", 3072, None),
    ("output_channels", "neck_channels", None, 256),
    ("num_hidden_layers", "depth", 12, 12),
    ("num_attention_heads", "num_heads", 12, 12),
    ("image_size", "image_size", 224, 1024),
    ("patch_size", "patch_size", 16, 16),
    ("mlp_dim", "mlp_dim", None, 3072),
)
_SIGLIP_KEYS, _SAM_KEYS = (
    tuple((k, f, d[i]) for k, f, *d in _VISION_KEYS if d[i] is not None) for i in range(2)
)


def _read(config: dict, rows) -> dict:
  """{our field: config[key], else the default} over (key, field, default) rows."""
  return {f: config.get(k, default) for k, f, default in rows}


def _write(ours: Any, rows, **values) -> dict:
  """{key: our field's value} over (key, field, default) rows; `values` overrides by key."""
  return {k: values[k] if k in values else getattr(ours, f) for k, f, _ in rows}


def _llm_from(text: dict) -> LLMConfig:
  t = {k: v for k, v in text.items() if v is not None}
  sizes = _read(t, _LLAMA_KEYS)
  heads = sizes["num_heads"]
  rope = t.get("rope_parameters") or {}
  theta = rope.get("rope_theta", t.get("rope_theta", 10000.0))
  if t.get("rope_scaling") or rope.get("rope_type", "default") != "default":
    raise ConversionError(
        "rope scaling is not supported (DeepSeek-VL uses plain RoPE): "
        f"{t.get('rope_scaling') or rope}"
    )
  return LLMConfig(
      **sizes,
      num_kv_heads=t.get("num_key_value_heads") or heads,
      head_dim=t.get("head_dim") or sizes["hidden_size"] // heads,
      rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)),
      rope_theta=float(theta),
      max_position_embeddings=t.get("max_position_embeddings", 2048),
      tie_embeddings=False,
  )


def _token_ids(llm: LLMConfig, text: dict, image_token_id: int) -> dict[str, int]:
  if llm.vocab_size > DEEPSEEK_EOS:
    return dict(
        image_token_id=image_token_id,
        bos_token_id=DEEPSEEK_BOS,
        eos_token_id=DEEPSEEK_EOS,
        pad_token_id=DEEPSEEK_EOS,
    )
  eos = text.get("eos_token_id", 2)
  eos = eos[0] if isinstance(eos, list) else eos
  return dict(
      image_token_id=image_token_id,
      bos_token_id=text.get("bos_token_id", 1),
      eos_token_id=eos,
      pad_token_id=text.get("pad_token_id") or eos,
  )


def from_hf(config: dict, has_lm_head: bool = True) -> VLMConfig:
  text = config.get("text_config") or {}
  llm = dataclasses.replace(_llm_from(text), tie_embeddings=not has_lm_head)
  v = config.get("vision_config") or {}
  siglip = SiglipConfig(
      **_read(v, _SIGLIP_KEYS), layer_norm_eps=float(v.get("layer_norm_eps", 1e-6))
  )
  if v.get("hidden_act", "gelu") != "gelu":
    raise ConversionError(
        f"vision_config.hidden_act={v['hidden_act']!r}: DeepSeek-VL's SigLIP "
        "uses exact GELU ('gelu'); refusing to load a different activation"
    )
  sam, aligner = None, AlignerConfig(type="mlp_gelu", depth=2)
  if config.get("model_type") == "deepseek_vl_hybrid" or "high_res_vision_config" in config:
    h = config.get("high_res_vision_config") or {}
    sizes = _read(h, _SAM_KEYS)
    neck = sizes["neck_channels"]
    sam = SamConfig(
        **sizes,
        layer_norm_eps=float(h.get("layer_norm_eps", 1e-6)),
        window_size=h.get("window_size", 14),
        global_attn_indexes=tuple(h.get("global_attn_indexes", (2, 5, 8, 11))),
        resize_to=4 * siglip.grid,
        downsample_channels=(2 * neck, 4 * neck),
    )
    aligner = AlignerConfig(type="low_high_hybrid_split_mlp_gelu", depth=2)
  ids = _token_ids(llm, text, config.get("image_token_id", DEEPSEEK_IMAGE))
  return VLMConfig(llm=llm, siglip=siglip, sam=sam, aligner=aligner, **ids).validate()


def _tower_from_original(params: dict) -> Any:
  name = params.get("model_name")
  if name not in ORIGINAL_TOWERS:
    raise ConversionError(
        f"unknown vision tower model_name {name!r}; known: "
        f"{sorted(ORIGINAL_TOWERS)} (a {OUR_CONFIG} can describe others)"
    )
  tower = ORIGINAL_TOWERS[name]
  kw = {"image_size": params.get("image_size", tower.image_size)}
  if "pixel_mean" in params:
    kw.update(pixel_mean=tuple(params["pixel_mean"]), pixel_std=tuple(params["pixel_std"]))
  if isinstance(tower, SiglipConfig):
    kw["select_layer"] = params.get("select_layer", -1)
  return dataclasses.replace(tower, **kw)


def from_original(config: dict, has_lm_head: bool = True) -> VLMConfig:
  text = config.get("language_config") or {}
  llm = dataclasses.replace(_llm_from(text), tie_embeddings=not has_lm_head)
  vision = config.get("vision_config") or {}
  params = vision.get("params") or {}
  if vision.get("cls") == "HybridVisionTower":
    sam = _tower_from_original(params["high_res_cfg"])
    siglip = _tower_from_original(params["low_res_cfg"])
  else:
    sam, siglip = None, _tower_from_original(params)
    if "pixel_mean" not in params:  # the 1.3B tower normalises with 0.5 / 0.5 (ref 1.1)
      siglip = dataclasses.replace(siglip, pixel_mean=SIGLIP_MEAN, pixel_std=SIGLIP_STD)
  a = (config.get("aligner_config") or {}).get("params") or {}
  aligner = AlignerConfig(type=a.get("projector_type", "mlp_gelu"), depth=a.get("depth", 2))
  ids = _token_ids(llm, text, DEEPSEEK_IMAGE)
  return VLMConfig(llm=llm, siglip=siglip, sam=sam, aligner=aligner, **ids).validate()


def to_hf(cfg: VLMConfig, torch_dtype: str = "float32") -> dict:
  """A config.json that transformers' from_pretrained loads."""
  c, s = cfg.llm, cfg.siglip
  text = dict(
      model_type="llama",
      **_write(c, _LLAMA_KEYS),
      num_key_value_heads=c.num_kv_heads,
      head_dim=c.head_dim,
      hidden_act="silu",
      rms_norm_eps=c.rms_norm_eps,
      max_position_embeddings=c.max_position_embeddings,
      rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
      attention_bias=False,
      mlp_bias=False,
      tie_word_embeddings=c.tie_embeddings,
      **{k: getattr(cfg, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
  )
  vision = dict(
      model_type="siglip_vision_model",
      # Blocks past select_layer are not exported.
      **_write(s, _SIGLIP_KEYS, num_hidden_layers=s.num_blocks),
      num_channels=3,
      hidden_act="gelu",
      layer_norm_eps=s.layer_norm_eps,
      vision_use_head=False,
  )
  out = dict(
      architectures=["DeepseekVLForConditionalGeneration"],
      model_type="deepseek_vl",
      text_config=text,
      vision_config=vision,
      image_token_id=cfg.image_token_id,
      tie_word_embeddings=c.tie_embeddings,
      torch_dtype=torch_dtype,
  )
  if cfg.hybrid:
    m = cfg.sam
    if (
        m.downsample_channels != (2 * m.neck_channels, 4 * m.neck_channels)
        or m.resize_to != 4 * s.grid
        or not m.hd_branch
    ):
      raise ConversionError(
          "transformers' hybrid model fixes the SAM additions (resize to "
          "4x the SigLIP grid, convs to 2x and 4x the neck width, HD branch); "
          "this config differs, so the 'hf' layout cannot represent it"
      )
    out.update(
        architectures=["DeepseekVLHybridForConditionalGeneration"],
        model_type="deepseek_vl_hybrid",
        high_res_vision_config=dict(
            model_type="sam_vision_model",
            **_write(m, _SAM_KEYS),
            num_channels=3,
            global_attn_indexes=list(m.global_attn_indexes),
            window_size=m.window_size,
            layer_norm_eps=m.layer_norm_eps,
            hidden_act="gelu",
        ),
    )
  if cfg.siglip.pixel_mean != SIGLIP_MEAN or (cfg.hybrid and cfg.sam.pixel_mean != CLIP_MEAN):
    raise ConversionError(
        "transformers' processors fix the normalisation constants; this config uses others"
    )
  return out


def _tower_to_original(tower: Any, name: str) -> dict:
  return dict(
      model_name=name,
      image_size=tower.image_size,
      select_feature="same",
      select_layer=getattr(tower, "select_layer", -1),
      pixel_mean=list(tower.pixel_mean),
      pixel_std=list(tower.pixel_std),
  )


def to_original(cfg: VLMConfig, torch_dtype: str = "float32") -> dict:
  """A config.json in the original release's structure (multi_modality)."""
  c = cfg.llm
  language = dict(
      model_type="llama",
      **_write(c, _LLAMA_KEYS),
      num_key_value_heads=c.num_kv_heads,
      rms_norm_eps=c.rms_norm_eps,
      rope_theta=c.rope_theta,
      max_position_embeddings=c.max_position_embeddings,
      torch_dtype=torch_dtype,
  )
  siglip = _tower_to_original(cfg.siglip, "siglip_large_patch16_384")
  aligner = dict(
      projector_type=cfg.aligner.type,
      depth=cfg.aligner.depth,
      input_dim=cfg.siglip.width,
      n_embed=c.hidden_size,
  )
  if cfg.hybrid:
    vision = dict(
        cls="HybridVisionTower",
        model_type="vision",
        params=dict(
            concat_type="tuple",
            freeze_high=True,
            freeze_low=True,
            high_res_cfg={
                **_tower_to_original(cfg.sam, "sam_b_downsample"),
                "output_dim": cfg.sam.output_dim,
                "ckpt_path": "",
            },
            low_res_cfg={**siglip, "output_dim": cfg.siglip.width},
        ),
    )
  else:
    vision = dict(cls="CLIPVisionTower", model_type="vision", params=siglip)
  return dict(
      model_type="multi_modality",
      vision_config=vision,
      aligner_config=dict(cls="MlpProjector", model_type="aligner", params=aligner),
      language_config=language,
      torch_dtype=torch_dtype,
  )


def from_json(config: dict, layout: str, has_lm_head: bool = True) -> VLMConfig:
  if layout == "hf":
    return from_hf(config, has_lm_head)
  if layout == "original":
    return from_original(config, has_lm_head)
  raise ValueError(f"unknown layout {layout!r}")
