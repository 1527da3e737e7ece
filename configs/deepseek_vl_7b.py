"""DeepSeek-VL 7B (base/chat): hybrid SigLIP-L@384 + SAM-B@1024 tower, hybrid split
aligner, DeepSeek-LLM-7B. Values from shared reference sections 1.1-1.6.
Use: --config=configs/deepseek_vl_7b.py
"""

import ml_collections

from dsvl_jax.runtime import compile_cache, distributed
from dsvl_jax.eval.eval_config import default_config as eval_config
from dsvl_jax.infer.chat_config import default_config as chat_config
from dsvl_jax.serve.serve_config import default_config as serve_config
from dsvl_jax.train import recipe
from dsvl_jax.train.config import default_mesh_config

STAGES = {"stage1": 1, "stage2": 2, "stage3": 3}  # arg -> the paper's training stage
ARGS = (None, *STAGES)  # every valid arg (tests render each)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.llm = ml_collections.ConfigDict(dict(
      vocab_size=102400,  # embedding rows
      hidden_size=4096,  # model width
      num_layers=30,  # decoder blocks
      num_heads=32,  # attention heads
      num_kv_heads=32,  # MHA
      head_dim=128,  # hidden_size / num_heads
      intermediate_size=11008,  # SwiGLU width
      rms_norm_eps=1e-6,  # LlamaConfig default
      rope_theta=10000.0,  # unscaled rotate-half RoPE
      max_position_embeddings=16384,  # hub value
      tie_embeddings=False,  # separate lm_head tensor
  ))
  m.siglip = ml_collections.ConfigDict(dict(
      image_size=384,  # low-resolution view (antialiased resize of the 1024 input)
      patch_size=16,  # 576 tokens
      width=1024,  # ViT-L
      depth=24,  # blocks
      num_heads=16,  # head_dim 64
      mlp_dim=4096,  # fc1 width
      layer_norm_eps=1e-6,  # blocks and final norm
      select_layer=-1,  # all blocks + final norm
      pixel_mean=(0.5, 0.5, 0.5),  # low tower normalisation
      pixel_std=(0.5, 0.5, 0.5),
  ))
  m.sam = ml_collections.ConfigDict(dict(
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
  ))
  m.aligner = ml_collections.ConfigDict(dict(
      type="low_high_hybrid_split_mlp_gelu",  # up-project each, concat [high, low], GELU, Linear
      depth=2,  # fixed for this type
  ))
  m.compute = ml_collections.ConfigDict(dict(
      dtype="bfloat16",  # activations
      param_dtype="float32",  # parameter storage
      precision="default",  # matmul precision
      remat_policy="none",  # none | full | dots | dots_no_batch
      attention_impl="xla",  # auto | xla | chunked | cudnn | splash (models/attention.py)
      attention_block=512,  # keys per block of the 'chunked' backend
      scan_layers=True,  # LLM layers under nn.scan (compile time flat in depth)
      scan_unroll=1,  # LLM layers per scan iteration
      llm_kernels_out_major=False,  # LLM kernels stored [*in, *out] (the CPU generators flip them)
  ))
  m.image_token_id = 100015  # <image_placeholder>
  m.bos_token_id = 100000  # BOS
  m.eos_token_id = 100001  # EOS
  m.pad_token_id = 100001  # pad = EOS
  return m


def get_config(arg=None):
  """No argument: inference (chat); 'stage1' | 'stage2' | 'stage3': the paper's recipe."""
  config = ml_collections.ConfigDict()
  config.mode = "chat"  # what main.py runs: train | eval | chat | serve | web | demo
  config.seed = 0  # PRNG seed for initialisation and sampling
  config.model = model_config()  # see dsvl_jax/models/config.py for every field
  config.chat = chat_config()  # --config.mode=chat settings (checkpoint, tokenizer, sampling)
  config.serve = serve_config()  # --config.mode=serve (OpenAI API) | web (chat page): model, limits, sampling
  config.eval = eval_config()  # --config.mode=eval and train.eval_every (dsvl_jax/eval)
  # Read by main.py in every mode (serving a pod needs them as much as training).
  config.distributed = distributed.default_config()  # multi-host start-up (dsvl_jax/runtime/distributed.py)
  config.compile_cache = compile_cache.default_config()  # persistent compilation cache (off)
  if arg is None:
    return config
  if arg not in STAGES:
    raise ValueError(f"{__file__}: unknown argument {arg!r}; use one of {sorted(STAGES)}")
  stage = STAGES[arg]
  config.mode = "train"
  config.update(recipe.stage_blocks("7b", stage))  # train, optimizer, data (Table 4)
  # Long packed rows: recompute activations in the backward pass (memory for compute).
  config.model.compute.remat_policy = "none" if stage == 1 else "full"
  # Fitted ahead of time (experiments/aot_compile.py, BUILD.md "Scale"): stage 2's 2304
  # rows in 9 micro-batches (v5p-64: 36 rows per chip, 4 per micro-batch; v6e-256:
  # 9 per chip, 1 per micro-batch); stage 3's 256 rows in one pass.
  config.train.grad_accum_steps = {1: 1, 2: 9, 3: 1}[stage]
  # Each platform's fused kernel (TPU splash, GPU cuDNN), the reference elsewhere.
  config.model.compute.attention_impl = "auto"
  config.mesh = default_mesh_config(shape=(1, -1, 1))  # (data, fsdp, tensor)
  return config
