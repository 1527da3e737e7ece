"""The demo that learns to see (`make run`): a tiny DeepSeek-VL of the hybrid family
trained through the paper's recipe on the built-in dataset, on a laptop CPU.

  python -m dsvl_jax.main --config=configs/demo.py --workdir=workdir/demo

Steps (dsvl_jax/recipes/demo.py): train a small sentencepiece tokenizer on the built-in text;
'lm' pretrains the LLM on the built-in text (the real recipe starts from a pretrained
LLM); 'stage1' trains the adaptor on dense captions; 'stage2' trains LLM + adaptor on
packed captions, interleaved pairs and some chats mixed with text, with the modality
warm-up; 'stage3' fine-tunes LLM, adaptor and SigLIP on chats (SFT masks); then the
model is evaluated on held-out scenes (seeds never trained on) by greedy exact match
and multiple choice, against chance and against itself with blank images.
Every stage resumes from its workdir; a finished stage is skipped on a rerun.
"""

import ml_collections

from dsvl_jax.runtime import compile_cache, distributed
from dsvl_jax.data.config import default_config as default_data_config, default_source
from dsvl_jax.eval.eval_config import default_config as eval_config
from dsvl_jax.infer.chat_config import default_config as chat_config
from dsvl_jax.serve.serve_config import default_config as serve_config
from dsvl_jax.train.config import (default_mesh_config, default_optimizer_config,
                                   default_train_config)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SPM_VOCAB = 640  # sentencepiece pieces (ids 0..639: unk, bos, eos, 256 bytes, merges)
ARGS = (None, "accurate")  # every valid arg (tests render each)


def model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.llm = ml_collections.ConfigDict(dict(
      vocab_size=648,  # the tokenizer's 640 pieces + the image token, padded to 8
      hidden_size=128,  # width
      num_layers=4,  # decoder blocks
      num_heads=8,  # query heads: 8 x 16 learns which image token a place names
      num_kv_heads=4,  # grouped key/value heads (4 x 32 mostly did not; BUILD.md)
      head_dim=16,  # per head
      intermediate_size=384,  # SwiGLU width
      rms_norm_eps=1e-6,  # as the real model
      rope_theta=10000.0,  # as the real model
      max_position_embeddings=1024,  # longest chat the demo's chat mode may build
      tie_embeddings=False,  # as the real model
  ))
  m.siglip = ml_collections.ConfigDict(dict(
      image_size=48,  # the low-resolution view: 3 x 3 = 9 image tokens
      patch_size=16,  # pixels per patch side
      width=64,  # ViT width
      depth=2,  # blocks
      num_heads=2,  # attention heads
      mlp_dim=128,  # MLP width
      layer_norm_eps=1e-6,  # as the real model
      select_layer=-1,  # all blocks, then the final norm
      pixel_mean=(0.5, 0.5, 0.5),  # SigLIP normalisation
      pixel_std=(0.5, 0.5, 0.5),
  ))
  m.sam = ml_collections.ConfigDict(dict(
      image_size=144,  # the high-resolution input (what the processor produces)
      patch_size=16,  # 9 x 9 grid
      width=64,  # ViT width
      depth=3,  # window, window, global
      num_heads=2,  # attention heads
      mlp_dim=128,  # MLP width
      layer_norm_eps=1e-6,  # as the real model
      window_size=3,  # 3 x 3 windows over the 9 x 9 grid
      global_attn_indexes=(2,),  # the global block (also feeds the HD branch)
      neck_channels=32,  # neck output channels
      resize_to=12,  # 9 -> 12 bilinear, then two stride-2 convs -> 3 x 3 (SigLIP's grid)
      downsample_channels=(64, 128),  # stride-2 conv widths
      hd_branch=True,  # DeepSeek's HD branch
      pixel_mean=CLIP_MEAN,  # SAM's CLIP normalisation
      pixel_std=CLIP_STD,
  ))
  m.aligner = ml_collections.ConfigDict(dict(type="low_high_hybrid_split_mlp_gelu", depth=2))
  m.compute = ml_collections.ConfigDict(dict(
      dtype="float32",  # float32 compute: a 2-core CPU has no fast bfloat16 everywhere
      param_dtype="float32",  # master weights
      precision="default",  # CPU matmuls are float32 anyway
      remat_policy="none",  # tiny activations
      attention_impl="xla",  # portable reference attention
      attention_block=512,  # keys per block of the 'chunked' backend
      scan_layers=True,  # stacked layer parameters, as every training config
      scan_unroll=4,  # all 4 layers in one loop body: ~12% faster steps on a CPU
      llm_kernels_out_major=False,  # LLM kernels stored [*in, *out] (the CPU generators flip them)
  ))
  m.image_token_id = SPM_VOCAB  # first id after the tokenizer's pieces
  m.bos_token_id = 1  # sentencepiece's <s> (a control piece)
  m.eos_token_id = 2  # sentencepiece's </s>
  m.pad_token_id = 2  # pad = EOS, as released
  return m


def synthetic(seed: int, kinds, modality: str, weight: float = 1.0) -> dict:
  return default_source(type="synthetic", modality=modality, weight=weight, synthetic_seed=seed,
                        synthetic_size=100_000, synthetic_kinds=tuple(kinds))


def get_config(arg=None):
  """No argument: the demo as `make run` runs it. 'accurate': 1200 vision steps (the
  towers learn to read the printed words) and 3000 stage-3 steps (the place binding
  forms with them): held-out 0.992 instead of 0.813, in about 1.3x the time (BUILD.md)."""
  if (arg or None) not in ARGS:
    raise ValueError(f"{__file__}: unknown argument {arg!r}; use none or 'accurate'")
  c = ml_collections.ConfigDict()
  c.mode = "demo"  # dsvl_jax/recipes/demo.py: tokenizer, stages, held-out evaluation
  c.seed = 0  # parameter initialisation
  c.model = model_config()
  c.mesh = default_mesh_config(shape=(1, -1, 1))  # (data, fsdp, tensor)
  c.distributed = distributed.default_config()  # multi-host start-up (dsvl_jax/runtime/distributed.py)
  c.compile_cache = compile_cache.default_config()  # persistent compilation cache (off)

  # Shared by every stage; each stage below overrides what it changes.
  c.data = default_data_config(
      stage=2,  # loss masks (stage 3: answers only)
      pack=False,  # one sample per row unless a stage packs
      seq_len=96,  # tokens per row (16 image tokens per image)
      global_batch_size=8,  # rows per step: many small steps (the image-reading circuit
                            # forms after a number of updates, not of samples)
      max_images_per_row=2,  # image slots per multimodal row
      seed=0,  # shuffling and modality choice
      shuffle=True,
      schedule="constant",  # modality schedule
      multimodal_share=1.0,  # share of multimodal steps
      warmup_steps=0,  # modality warm-up length
      tokenizer="",  # set by the demo: WORKDIR/tokenizer.model
      append_eos=True,  # documents end with EOS
      system_prompt="",  # no system prompt: ~40 tokens that every short chat would repeat
      strict=True,  # the built-in data has no bad samples: any would be a bug
      max_consecutive_skips=1000,
      num_workers=0,  # PIL drawing in the main process (2 cores: the step uses both)
      worker_buffer_size=2,
      prefetch_batches=2,  # drawn by a thread while the step runs
      process_index=-1,
      process_count=-1,
      sources={},  # per stage
  )
  c.train = default_train_config(
      steps=100, trainable=("llm", "aligner"), init_from="", grad_accum_steps=1,
      loss_chunk_tokens=0, nonfinite="skip", log_every=25, checkpoint_every=1000,
      keep_checkpoints=1, async_checkpoints=True, eval_every=0, tensorboard=True,
      progress=False, peak_flops=0.0)
  c.optimizer = default_optimizer_config(
      lr=2e-3, schedule="cosine", warmup_steps=10, final_lr_fraction=0.1,
      step_boundaries=(0.8, 0.9), step_factors=(0.316, 0.1), b1=0.9, b2=0.95, eps=1e-8,
      weight_decay=0.0, grad_clip=1.0,
      lr_scales=dict(llm=1.0, aligner=1.0, siglip=1.0, sam=1.0, sam_neck=1.0))

  # The recipe, in order. Each entry overrides train / optimizer / data fields.
  c.demo = ml_collections.ConfigDict()
  c.demo.stages = ("lm", "vision", "stage1", "stage2", "stage3")  # run in this order
  c.demo.tokenizer_records = 2000  # built-in records per kind the tokenizer is trained on
  c.demo.text_seed = 1  # built-in text (kept apart from the image seeds)
  c.demo.train_seed = 2  # built-in scenes for training
  c.demo.heldout_seed = 1000  # held-out scenes: never trained on
  c.demo.heldout_scenes = 100  # scenes evaluated (one question per type each)
  c.demo.lm = ml_collections.ConfigDict(dict(
      train=dict(steps=300, trainable=("llm",)),
      optimizer=dict(lr=2e-3, warmup_steps=10),
      data=dict(stage=2, pack=True, seq_len=128, multimodal_share=0.0,
                sources=dict(text=synthetic(1, ("text", "text_chat", "text_qa"), "text"))),
  ))
  c.demo.vision = ml_collections.ConfigDict(dict(
      train=dict(steps=400, trainable=("llm", "siglip", "sam", "aligner")),
      optimizer=dict(lr=5e-4, warmup_steps=10),
      data=dict(stage=1, seq_len=32, max_images_per_row=1, multimodal_share=1.0,  # <= 32 tokens
                sources=dict(objects=synthetic(5, ("object",), "multimodal"))),
  ))
  c.demo.stage1 = ml_collections.ConfigDict(dict(
      # Assembled like the real model: the text-pretrained LLM, the caption-pretrained
      # towers, and the adaptor as initialised (random).
      train=dict(steps=50, trainable=("aligner",), init_from="lm",
                 init_groups=dict(siglip="vision", sam="vision")),
      optimizer=dict(lr=2e-3, warmup_steps=10),
      data=dict(stage=1, seq_len=48, max_images_per_row=1, multimodal_share=1.0,  # <= 46 tokens
                sources=dict(captions=synthetic(2, ("caption",), "multimodal"))),
  ))
  c.demo.stage2 = ml_collections.ConfigDict(dict(
      train=dict(steps=400, trainable=("llm", "aligner")),
      optimizer=dict(lr=1e-3, warmup_steps=10),
      data=dict(stage=2, pack=True, seq_len=128, max_images_per_row=4, schedule="warmup",
                multimodal_share=0.8, warmup_steps=100,
                sources=dict(
                    scenes=synthetic(2, ("caption", "interleaved"), "multimodal", 4.0),
                    chats=synthetic(3, ("chat",), "multimodal", 1.0),
                    text=synthetic(1, ("text", "text_chat", "text_qa"), "text"))),
  ))
  c.demo.stage3 = ml_collections.ConfigDict(dict(
      train=dict(steps=2000, trainable=("llm", "aligner", "siglip", "sam_neck")),
      optimizer=dict(lr=3e-4, warmup_steps=10),
      # Packed: a chat is 57 tokens on average, so 8 unpacked rows of 128 were 56%
      # padding. 4 packed rows of 160 hold ~9 chats (8 before) in 2/3 of the step time.
      data=dict(stage=3, pack=True, global_batch_size=4, seq_len=160, max_images_per_row=5,
                multimodal_share=0.9,
                sources=dict(chats=synthetic(4, ("chat",), "multimodal"),
                             text=synthetic(1, ("text_chat", "text_qa"), "text"))),
  ))

  if arg == "accurate":
    c.demo.vision.train.steps = 1200
    c.demo.stage3.train.steps = 3000

  c.eval = eval_config()  # scoring settings of the held-out evaluation (sets are built)
  c.eval.system_prompt = ""  # as trained
  c.eval.max_new_tokens = 8  # answers are a few tokens
  c.eval.batch_size = 32
  c.eval.length_bucket = 16
  c.eval.share_prefixes = False  # a scene's 2-3 questions share little: one prefill program
  c.chat = chat_config()  # --config.mode=chat --config.chat.checkpoint=WORKDIR/stage3
  c.serve = serve_config()  # --config.mode=serve|web --config.serve.checkpoint=WORKDIR/stage3
  c.serve.update(dict(max_len=1024, max_tokens=256, default_max_tokens=64,  # the demo's context
                      system_prompt="", web_image_position="last"))  # as its chats were trained
  c.chat.temperature = 0.0
  c.chat.max_new_tokens = 32
  c.chat.image_position = "last"  # as the demo's chats: the question, then its image
  return c
