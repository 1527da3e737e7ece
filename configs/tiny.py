"""Tiny random DeepSeek-VL models for tests and the CPU demo (seconds, not hours).

--config=configs/tiny.py            SigLIP-only family (1.3B architecture)
--config=configs/tiny.py:hybrid     SigLIP + SAM family (7B architecture)
Shapes keep every structural feature: GQA, several windows with padding in SAM
(grid 8, window 3 -> pad to 9), global blocks, the HD branch and the resize.
"""

import ml_collections

from dsvl_jax.runtime import compile_cache, distributed
from dsvl_jax.data.config import default_config as default_data_config
from dsvl_jax.eval.eval_config import default_config as eval_config
from dsvl_jax.infer.chat_config import default_config as chat_config
from dsvl_jax.serve.serve_config import default_config as serve_config
from dsvl_jax.train.config import (default_mesh_config, default_optimizer_config,
                                   default_train_config)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ARGS = (None, "hybrid")  # every valid arg (tests render each); "siglip" is the same as None


def model_config(family: str = "siglip") -> ml_collections.ConfigDict:
  if family not in ("siglip", "hybrid"):
    raise ValueError(f"configs/tiny.py: unknown family {family!r}; use siglip or hybrid")
  m = ml_collections.ConfigDict()
  m.llm = ml_collections.ConfigDict(dict(
      vocab_size=512,  # small vocabulary; special ids below sit inside it
      hidden_size=64,  # width
      num_layers=2,  # decoder blocks
      num_heads=4,  # query heads
      num_kv_heads=2,  # grouped key/value heads (exercises GQA)
      head_dim=16,  # per head
      intermediate_size=128,  # SwiGLU width
      rms_norm_eps=1e-6,  # as the real model
      rope_theta=10000.0,  # as the real model
      max_position_embeddings=2048,  # unused by unscaled RoPE
      tie_embeddings=False,  # as the real model
  ))
  m.siglip = ml_collections.ConfigDict(dict(
      image_size=32,  # 4x4 = 16 image tokens
      patch_size=8,
      width=32,
      depth=2,
      num_heads=2,
      mlp_dim=64,
      layer_norm_eps=1e-6,
      select_layer=-1,
      pixel_mean=(0.5, 0.5, 0.5),
      pixel_std=(0.5, 0.5, 0.5),
  ))
  m.sam = None
  m.aligner = ml_collections.ConfigDict(dict(type="mlp_gelu", depth=2))
  if family == "hybrid":
    m.sam = ml_collections.ConfigDict(dict(
        image_size=64,  # 8x8 grid
        patch_size=8,
        width=32,
        depth=6,  # W W G x 2: the scan runs 2 groups
        num_heads=2,
        mlp_dim=64,
        layer_norm_eps=1e-6,
        window_size=3,  # 8 -> pad to 9, 9 windows
        global_attn_indexes=(2, 5),
        neck_channels=16,
        resize_to=16,  # 4 * SigLIP grid, as 96 = 4 * 24
        downsample_channels=(32, 64),  # 16 -> 8 -> 4
        hd_branch=True,
        pixel_mean=CLIP_MEAN,
        pixel_std=CLIP_STD,
    ))
    m.aligner = ml_collections.ConfigDict(dict(type="low_high_hybrid_split_mlp_gelu", depth=2))
  m.compute = ml_collections.ConfigDict(dict(
      dtype="float32",  # activations
      param_dtype="float32",  # parameters
      precision="highest",  # exact fp32 everywhere (parity tests)
      remat_policy="none",  # activation checkpointing
      attention_impl="xla",  # portable reference attention
      attention_block=512,  # keys per block of the 'chunked' backend
      scan_layers=True,  # LLM layers under nn.scan (compile time flat in depth)
      scan_unroll=1,  # LLM layers per scan iteration
      llm_kernels_out_major=False,  # LLM kernels stored [*in, *out] (the CPU generators flip them)
  ))
  m.image_token_id = 500  # plays the role of 100015
  m.bos_token_id = 1  # plays the role of 100000
  m.eos_token_id = 2  # plays the role of 100001
  m.pad_token_id = 2  # pad = EOS, as released
  return m


def data_config() -> ml_collections.ConfigDict:
  """The built-in dataset (no files): drawn scenes and text, stage-2 style packing."""
  return default_data_config(
      stage=2,  # supervise every text token (stage 3: answers only)
      pack=True,  # several samples per row
      seq_len=512,  # bytes are tokens here (built-in byte tokenizer)
      global_batch_size=8,  # rows per step, all hosts
      max_images_per_row=4,  # image slots per multimodal row
      seed=0,
      schedule="warmup",  # language share 1.0 at step 0 ...
      multimodal_share=0.3,  # ... down to the paper's 7:3 language:multimodal
      warmup_steps=20,
      tokenizer="builtin:bytes",
      system_prompt="default",  # chats: the released system prompt ("" = none, or text)
      num_workers=0,  # grain worker processes per modality
      sources=dict(
          shapes=dict(type="synthetic", modality="multimodal", weight=1.0, synthetic_seed=0,
                      synthetic_size=10_000, synthetic_kinds=("caption", "interleaved", "chat")),
          words=dict(type="synthetic", modality="text", weight=1.0, synthetic_seed=1,
                     synthetic_size=10_000, synthetic_kinds=("text", "text_chat")),
      ),
  )


def train_config() -> ml_collections.ConfigDict:
  """A few steps of stage-2-style training (see dsvl_jax/train/config.py)."""
  return default_train_config(
      steps=20,  # optimizer steps
      trainable=("llm", "aligner"),  # stage 2: towers frozen
      init_from="",  # random initialisation
      grad_accum_steps=1,  # micro-batches per step
      loss_chunk_tokens=0,  # small vocabulary: project whole rows
      nonfinite="skip",  # skip (and count) non-finite updates
      log_every=5,  # steps per metric line
      checkpoint_every=10,  # steps per checkpoint
      keep_checkpoints=2,  # checkpoints kept
      async_checkpoints=True,  # orbax saves in the background
      eval_every=0,  # no periodic evaluation
      tensorboard=True,  # event files in the workdir
      progress=True,  # console progress bar
      peak_flops=0.0,  # measured on CPU
  )


def optimizer_config() -> ml_collections.ConfigDict:
  return default_optimizer_config(
      lr=1e-3,  # peak rate
      schedule="cosine",  # cosine | step | constant
      warmup_steps=2,  # linear warm-up
      final_lr_fraction=0.0,  # cosine floor
      step_boundaries=(0.8, 0.9),  # step schedule breakpoints (fractions of steps)
      step_factors=(0.316, 0.1),  # and factors
      b1=0.9,  # AdamW
      b2=0.95,
      eps=1e-8,
      weight_decay=0.0,
      grad_clip=1.0,  # global-norm clip
      lr_scales=dict(llm=1.0, aligner=1.0, siglip=1.0, sam=1.0, sam_neck=1.0),  # per group
  )


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.mode = "train"  # what main.py runs: train | eval | chat | serve | web | demo
  config.seed = 0  # PRNG seed for parameters and the demo inputs
  config.model = model_config(arg or "siglip")  # see dsvl_jax/models/config.py
  config.data = data_config()  # training data, see dsvl_jax/data/config.py
  config.train = train_config()  # the loop, see dsvl_jax/train/config.py
  config.optimizer = optimizer_config()  # AdamW and its schedule
  # (data, fsdp, tensor); num_devices 0 = every device
  config.mesh = default_mesh_config(shape=(1, -1, 1), num_devices=0)
  config.distributed = distributed.default_config()  # multi-host start-up (dsvl_jax/runtime/distributed.py)
  config.compile_cache = compile_cache.default_config()  # persistent compilation cache (off)
  config.chat = chat_config()  # --config.mode=chat settings (checkpoint, tokenizer, sampling)
  config.serve = serve_config()  # --config.mode=serve (OpenAI API) | web (chat page): model, limits, sampling
  config.eval = eval_config()  # --config.mode=eval and train.eval_every (dsvl_jax/eval)
  return config
