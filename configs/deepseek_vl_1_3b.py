"""DeepSeek-VL 1.3B (base/chat): SigLIP-L/16@384 + mlp_gelu aligner + DeepSeek-LLM-1.3B.

Values from shared reference sections 1.1-1.3. Use: --config=configs/deepseek_vl_1_3b.py
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


def model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.llm = ml_collections.ConfigDict(dict(
      vocab_size=102400,  # embedding rows (tokenizer has 100016 entries; padded)
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
  ))
  m.siglip = ml_collections.ConfigDict(dict(
      image_size=384,  # input side
      patch_size=16,  # 24x24 = 576 tokens
      width=1024,  # ViT-L width
      depth=24,  # blocks in the checkpoint
      num_heads=16,  # head_dim 64
      mlp_dim=4096,  # fc1 width
      layer_norm_eps=1e-6,  # blocks and final norm
      select_layer=-1,  # ORIG: build depth + select_layer + 1 blocks, then the final norm
      pixel_mean=(0.5, 0.5, 0.5),  # the tower normalises [0, 1] input itself
      pixel_std=(0.5, 0.5, 0.5),
  ))
  m.sam = None  # 1.3B has no high-resolution tower
  m.aligner = ml_collections.ConfigDict(dict(
      type="mlp_gelu",  # Linear 1024->2048, GELU, Linear 2048->2048
      depth=2,  # number of Linear layers
  ))
  m.compute = ml_collections.ConfigDict(dict(
      dtype="bfloat16",  # activations
      param_dtype="float32",  # parameter storage
      precision="default",  # matmul precision; 'highest' for fp32 parity on GPU/TPU
      remat_policy="none",  # none | full | dots | dots_no_batch
      attention_impl="xla",  # auto | xla | chunked | cudnn | splash (models/attention.py)
      attention_block=512,  # keys per block of the 'chunked' backend
      scan_layers=True,  # LLM layers under nn.scan (compile time flat in depth)
      scan_unroll=1,  # LLM layers per scan iteration
      llm_kernels_out_major=False,  # LLM kernels stored [*in, *out] (the CPU generators flip them)
  ))
  m.image_token_id = 100015  # <image_placeholder>
  m.bos_token_id = 100000  # <｜begin▁of▁sentence｜>
  m.eos_token_id = 100001  # <｜end▁of▁sentence｜>
  m.pad_token_id = 100001  # pad = EOS in both releases
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
  config.update(recipe.stage_blocks("1.3b", stage))  # train, optimizer, data (Table 4)
  # Long packed rows: recompute activations in the backward pass (memory for compute).
  config.model.compute.remat_policy = "none" if stage == 1 else "full"
  # Fitted ahead of time (experiments/aot_compile.py, BUILD.md "Scale"): stage 2's 1024
  # rows in one pass (v5p-64: 16 rows per chip, 18 GiB of 95; v5e-256: 4 rows per
  # chip, 4.3 GiB of 16).
  config.train.grad_accum_steps = {1: 1, 2: 1, 3: 1}[stage]
  # Each platform's fused kernel (TPU splash, GPU cuDNN), the reference elsewhere.
  config.model.compute.attention_impl = "auto"
  config.mesh = default_mesh_config(shape=(1, -1, 1))  # (data, fsdp, tensor)
  return config
