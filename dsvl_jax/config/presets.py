"""Model presets: `config.model` of each released size and of the small test models.

`model("7b")` is every field of `config.model` (dsvl_jax/models/config.py VLMConfig) as
config data. Each preset is written as what it changes over another, as MaxText's
`configs/models/*.yml` over `base.yml`: the 1.3B release is the base, the 7B adds the
SAM-B tower and widens the LLM, the tiny and demo models shrink one of them.

Plain data, no import of dsvl_jax.models: config files load this, and the models
package starts JAX. Values from the shared reference, sections 1.1-1.6.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import ml_collections

# Normalisation of the two towers: SigLIP takes [0, 1] images to [-1, 1]; SAM uses CLIP's.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

HYBRID_ALIGNER = dict(
    type="low_high_hybrid_split_mlp_gelu",  # up-project each, concat [high, low], GELU, Linear
    depth=2,  # fixed for this type
)

# DeepSeek-VL 1.3B (base/chat): SigLIP-L/16@384 + mlp_gelu aligner + DeepSeek-LLM-1.3B.
BASE: dict[str, Any] = dict(
    llm=dict(  # DeepSeek-LLM (LLaMA architecture)
        vocab_size=102400,  # embedding rows (the tokenizer has 100016 entries; padded)
        hidden_size=2048,  # model width
        num_layers=24,  # decoder blocks
        num_heads=16,  # attention heads
        num_kv_heads=16,  # MHA (k/v projections are square)
        head_dim=128,  # hidden_size / num_heads
        intermediate_size=5632,  # SwiGLU width
        rms_norm_eps=1e-6,  # LlamaConfig default; no key in the hub config
        rope_theta=10000.0,  # unscaled rotate-half RoPE
        max_position_embeddings=16384,  # hub value; no numeric effect for unscaled RoPE
        tie_embeddings=False,  # the checkpoint carries its own lm_head
    ),
    siglip=dict(  # the low-resolution tower (ViT-L)
        image_size=384,  # input side (the 7B: an antialiased resize of its 1024 input)
        patch_size=16,  # 24x24 = 576 tokens
        width=1024,  # ViT-L width
        depth=24,  # blocks in the checkpoint
        num_heads=16,  # head_dim 64
        mlp_dim=4096,  # fc1 width
        layer_norm_eps=1e-6,  # blocks and final norm
        select_layer=-1,  # ORIG: build depth + select_layer + 1 blocks, then the final norm
        pixel_mean=SIGLIP_MEAN,  # the tower normalises [0, 1] input itself
        pixel_std=SIGLIP_STD,
    ),
    sam=None,  # no high-resolution tower (the 1.3B family)
    aligner=dict(
        type="mlp_gelu",  # Linear 1024->2048, GELU, Linear 2048->2048
        depth=2,  # number of Linear layers
    ),
    compute=dict(  # how the model computes, independent of its architecture
        dtype="bfloat16",  # activations
        param_dtype="float32",  # parameter storage
        precision="default",  # matmul precision; 'highest' for fp32 parity on GPU/TPU
        remat_policy="none",  # none | full | dots | dots_no_batch
        attention_impl="xla",  # auto | xla | blocked | chunked | cudnn | splash (attention.py)
        attention_block=512,  # keys per block of the 'chunked' backend
        scan_layers=True,  # LLM layers under nn.scan (compile time flat in depth)
        scan_unroll=1,  # LLM layers per scan iteration
        llm_kernels_out_major=False,  # kernels stored [*in, *out] (CPU generators flip them)
        # Low-rank adapters (models/config.LoraConfig); --config.model.compute.lora.rank=16
        lora=dict(
            rank=0,  # 0 = none
            alpha=16.0,  # updates scaled by alpha / rank
            targets=("llm/layers*/*_proj",),  # fnmatch patterns over module paths
            base_quant="none",  # QLoRA: none | int8 | int4 | nf4 (the adapted kernels)
            quant_block=64,  # values per quantisation scale
            dropout=0.0,  # on the adapters' input, in training
            stacked=0,  # serving builds it (several adapters at once); 0 in a config
        ),
        # Weight-only quantisation for inference (models/config.QuantConfig)
        quant=dict(
            kind="none",  # none | int8 | int4 | nf4
            block=64,  # values per scale along a kernel's last axis
            targets=("llm/layers*/*_proj",),  # also "vision/siglip/*", "vision/sam/*", "aligner/*"
        ),
        kv_cache_dtype="auto",  # the decoding KV cache: auto (the compute dtype) | int8
    ),
    image_token_id=100015,  # <image_placeholder>
    bos_token_id=100000,  # <｜begin▁of▁sentence｜>
    eos_token_id=100001,  # <｜end▁of▁sentence｜>
    pad_token_id=100001,  # pad = EOS in both releases
)

# The 7B's high-resolution tower: SAM-B ViTDet with DeepSeek's neck, resize, downsample
# convolutions and HD branch.
SAM_B: dict[str, Any] = dict(
    image_size=1024,  # high-resolution input
    patch_size=16,  # 64x64 grid
    width=768,  # SAM-B
    depth=12,  # blocks
    num_heads=12,  # head_dim 64
    mlp_dim=3072,  # lin1 width
    layer_norm_eps=1e-6,  # blocks and neck LayerNorm2d
    window_size=14,  # windowed blocks pad 64 -> 70
    global_attn_indexes=(2, 5, 8, 11),  # the first also feeds the HD branch
    neck_channels=256,  # neck output
    resize_to=96,  # bilinear 64 -> 96 after the neck
    downsample_channels=(512, 1024),  # two bias-free stride-2 convs: 96 -> 48 -> 24
    hd_branch=True,  # DeepSeek's sam_hd branch with a learned alpha
    pixel_mean=CLIP_MEAN,  # high tower normalisation
    pixel_std=CLIP_STD,
)


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
  """`base` with `over` on top, section by section (a section replaces a None)."""
  out = copy.deepcopy(dict(base))
  for key, value in over.items():
    if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
      out[key] = merged(out[key], value)
    else:
      out[key] = copy.deepcopy(value)
  return out


# DeepSeek-VL 7B (base/chat): hybrid SigLIP-L@384 + SAM-B@1024, hybrid split aligner,
# DeepSeek-LLM-7B.
_7B = merged(
    BASE,
    dict(
        llm=dict(
            hidden_size=4096,
            num_layers=30,
            num_heads=32,
            num_kv_heads=32,  # MHA
            intermediate_size=11008,
        ),
        sam=SAM_B,
        aligner=HYBRID_ALIGNER,
    ),
)

# Tiny random models for tests (seconds, not hours). Shapes keep every structural
# feature: GQA; in SAM several windows with padding (grid 8, window 3 -> pad to 9),
# global blocks, the HD branch and the resize.
_TINY = merged(
    BASE,
    dict(
        llm=dict(
            vocab_size=512,  # small vocabulary; special ids below sit inside it
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,  # grouped key/value heads (exercises GQA)
            head_dim=16,
            intermediate_size=128,
            max_position_embeddings=2048,  # unused by unscaled RoPE
        ),
        siglip=dict(
            image_size=32,
            patch_size=8,  # 4x4 = 16 image tokens
            width=32,
            depth=2,
            num_heads=2,
            mlp_dim=64,
        ),
        compute=dict(dtype="float32", precision="highest"),  # exact fp32 everywhere (parity tests)
        image_token_id=500,  # plays the role of 100015
        bos_token_id=1,  # plays the role of 100000
        eos_token_id=2,  # plays the role of 100001
        pad_token_id=2,  # pad = EOS, as released
    ),
)
_TINY_HYBRID = merged(
    _TINY,
    dict(
        sam=merged(
            SAM_B,
            dict(
                image_size=64,
                patch_size=8,  # 8x8 grid
                width=32,
                depth=6,  # W W G x 2: the scan runs 2 groups
                num_heads=2,
                mlp_dim=64,
                window_size=3,  # 8 -> pad to 9, 9 windows
                global_attn_indexes=(2, 5),
                neck_channels=16,
                resize_to=16,  # 4 * SigLIP grid, as 96 = 4 * 24
                downsample_channels=(32, 64),  # 16 -> 8 -> 4
            ),
        ),
        aligner=HYBRID_ALIGNER,
    ),
)

DEMO_SPM_VOCAB = 640  # the demo's sentencepiece pieces (0..639: unk, bos, eos, bytes, merges)
# The demo that learns to see (configs/demo.py): the 7B (hybrid) family, small enough
# to go through the whole recipe on a laptop CPU.
_DEMO = merged(
    _7B,
    dict(
        llm=dict(
            vocab_size=648,  # the tokenizer's 640 pieces + the image token, padded to 8
            hidden_size=128,
            num_layers=4,
            num_heads=8,  # query heads: 8 x 16 learns which image token a place names
            num_kv_heads=4,  # grouped key/value heads (4 x 32 mostly did not; BUILD.md)
            head_dim=16,
            intermediate_size=384,
            max_position_embeddings=1024,  # longest chat the demo's chat mode may build
        ),
        siglip=dict(
            image_size=48,  # the low-resolution view: 3 x 3 = 9 image tokens
            width=64,
            depth=2,
            num_heads=2,
            mlp_dim=128,
        ),
        sam=dict(
            image_size=144,  # the high-resolution input (what the processor produces)
            width=64,  # 9 x 9 grid of 16-pixel patches
            depth=3,  # window, window, global
            num_heads=2,
            mlp_dim=128,
            window_size=3,  # 3 x 3 windows over the 9 x 9 grid
            global_attn_indexes=(2,),  # the global block (also feeds the HD branch)
            neck_channels=32,
            resize_to=12,  # 9 -> 12 bilinear, then two stride-2 convs -> 3 x 3 (SigLIP's grid)
            downsample_channels=(64, 128),
        ),
        compute=dict(
            dtype="float32",  # a 2-core CPU has no fast bfloat16 everywhere
            scan_unroll=4,  # all 4 layers in one loop body: ~12% faster steps on a CPU
        ),
        image_token_id=DEMO_SPM_VOCAB,  # first id after the tokenizer's pieces
        bos_token_id=1,  # sentencepiece's <s> (a control piece)
        eos_token_id=2,  # sentencepiece's </s>
        pad_token_id=2,  # pad = EOS, as released
    ),
)

PRESETS: dict[str, dict[str, Any]] = {
    "1.3b": BASE,
    "7b": _7B,
    "tiny": _TINY,
    "tiny_hybrid": _TINY_HYBRID,
    "demo": _DEMO,
}


def model(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.model` of preset `name`, with `overrides` merged section by section
  (`model("7b", compute=dict(remat_policy="full"))`)."""
  if name not in PRESETS:
    raise ValueError(f"unknown model preset {name!r}; presets: {sorted(PRESETS)}")
  return ml_collections.ConfigDict(merged(PRESETS[name], overrides))
