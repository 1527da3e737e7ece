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

from dsvl_jax.config import presets
from dsvl_jax.config.args import parse_arg
from dsvl_jax.data.config import default_config as default_data_config
from dsvl_jax.data.config import default_source
from dsvl_jax.train import recipe
from dsvl_jax.train.config import (
    default_mesh_config,
    default_optimizer_config,
    default_train_config,
)

VARIANTS = {None: None, "accurate": "accurate", "lora": "lora"}  # arg -> the run's variant
ARGS = tuple(VARIANTS)  # every valid arg (tests render each)


def synthetic(seed: int, kinds, modality: str, weight: float = 1.0) -> dict:
  return default_source(
      type="synthetic",
      modality=modality,
      weight=weight,
      synthetic_seed=seed,
      synthetic_size=100_000,
      synthetic_kinds=tuple(kinds),
  )


def demo_stage(
    train: dict, lr: float, data: dict, multimodal_share: float, modality_warmup: int = 0, **sources
) -> ml_collections.ConfigDict:
  """One stage of the recipe: the train, optimizer and data fields it sets over c.train,
  c.optimizer and c.data. Every stage warms its learning rate up over 10 steps; its data
  is `data` with `sources` drawn at `multimodal_share` of the steps (reached from 0 over
  `modality_warmup` steps; 0: from the first step)."""
  mixture = dict(sources=sources, multimodal_share=multimodal_share)
  if modality_warmup:
    mixture.update(schedule="warmup", warmup_steps=modality_warmup)
  return ml_collections.ConfigDict(
      dict(train=train, optimizer=dict(lr=lr, warmup_steps=10), data=dict(data, **mixture))
  )


def get_config(arg=None):
  """No argument: the demo as `make run` runs it. 'accurate': 1200 vision steps (the
  towers learn to read the printed words) and 3000 stage-3 steps (the place binding
  forms with them): held-out 0.992 instead of 0.813, in about 1.3x the time (BUILD.md)."""
  variant = parse_arg(arg, VARIANTS, __file__)
  c = recipe.base_config(presets.model("demo"), mode="demo")  # dsvl_jax/recipes/demo.py runs it
  c.mesh = default_mesh_config(shape=(1, -1, 1))  # (data, fsdp, tensor)

  # Shared by every stage; each stage below overrides what it changes.
  c.data = default_data_config(
      pack=False,  # one sample per row unless a stage packs
      seq_len=96,  # tokens per row (16 image tokens per image)
      global_batch_size=8,  # rows per step: many small steps (the image-reading circuit
      # forms after a number of updates, not of samples)
      max_images_per_row=2,  # image slots per multimodal row
      multimodal_share=1.0,  # share of multimodal steps
      tokenizer="",  # set by the demo: WORKDIR/tokenizer.model
      system_prompt="",  # no system prompt: ~40 tokens that every short chat would repeat
      strict=True,  # the built-in data has no bad samples: any would be a bug
      num_workers=0,  # PIL drawing in the main process (2 cores: the step uses both)
      prefetch_batches=2,  # drawn by a thread while the step runs
  )
  c.train = default_train_config(steps=100, log_every=25, keep_checkpoints=1, progress=False)
  c.optimizer = default_optimizer_config(lr=2e-3, warmup_steps=10, final_lr_fraction=0.1)

  # The recipe, in order. Each entry overrides train / optimizer / data fields.
  c.demo = ml_collections.ConfigDict()
  c.demo.stages = ("lm", "vision", "stage1", "stage2", "stage3")  # run in this order
  c.demo.tokenizer_records = 2000  # built-in records per kind the tokenizer is trained on
  c.demo.text_seed = 1  # built-in text (kept apart from the image seeds)
  c.demo.train_seed = 2  # built-in scenes for training
  c.demo.heldout_seed = 1000  # held-out scenes: never trained on
  c.demo.heldout_scenes = 100  # scenes evaluated (one question per type each)
  c.demo.results = "eval.json"  # in the workdir
  c.demo.count_params = False  # results also give the last stage's trained / frozen counts
  text = synthetic(1, ("text", "text_chat", "text_qa"), "text")  # the built-in text
  c.demo.lm = demo_stage(
      dict(steps=300, trainable=("llm",)),
      lr=2e-3,
      data=dict(stage=2, pack=True, seq_len=128),
      multimodal_share=0.0,
      text=text,
  )
  c.demo.vision = demo_stage(
      dict(steps=400, trainable=("llm", "siglip", "sam", "aligner")),
      lr=5e-4,
      data=dict(stage=1, seq_len=32, max_images_per_row=1),  # <= 32 tokens
      multimodal_share=1.0,
      objects=synthetic(5, ("object",), "multimodal"),
  )
  c.demo.stage1 = demo_stage(
      # Assembled like the real model: the text-pretrained LLM, the caption-pretrained
      # towers, and the adaptor as initialised (random).
      dict(
          steps=50,
          trainable=("aligner",),
          init_from="lm",
          init_groups=dict(siglip="vision", sam="vision"),
      ),
      lr=2e-3,
      data=dict(stage=1, seq_len=48, max_images_per_row=1),  # <= 46 tokens
      multimodal_share=1.0,
      captions=synthetic(2, ("caption",), "multimodal"),
  )
  c.demo.stage2 = demo_stage(
      dict(steps=400, trainable=("llm", "aligner")),
      lr=1e-3,
      data=dict(stage=2, pack=True, seq_len=128, max_images_per_row=4),
      multimodal_share=0.8,
      modality_warmup=100,
      scenes=synthetic(2, ("caption", "interleaved"), "multimodal", 4.0),
      chats=synthetic(3, ("chat",), "multimodal", 1.0),
      text=text,
  )
  c.demo.stage3 = demo_stage(
      dict(steps=2000, trainable=("llm", "aligner", "siglip", "sam_neck")),
      lr=3e-4,
      # Packed: a chat is 57 tokens on average, so 8 unpacked rows of 128 were 56%
      # padding. 4 packed rows of 160 hold ~9 chats (8 before) in 2/3 of the step time.
      data=dict(stage=3, pack=True, global_batch_size=4, seq_len=160, max_images_per_row=5),
      multimodal_share=0.9,
      chats=synthetic(4, ("chat",), "multimodal"),
      text=synthetic(1, ("text_chat", "text_qa"), "text"),
  )

  if variant == "accurate":
    c.demo.vision.train.steps = 1200
    c.demo.stage3.train.steps = 3000
  if variant == "lora":
    # Stage 3 with the LLM trained through rank-16 adapters (its base frozen), the rest
    # as in stage 3, from the same stage-2 checkpoint; stages before it are shared with
    # `make run`'s workdir (a finished stage is skipped).
    c.demo.stages = ("lm", "vision", "stage1", "stage2", "stage3_lora")
    c.demo.stage3_lora = c.demo.stage3.copy_and_resolve_references()
    # Adapters at 10x stage 3's rate (they start at zero); the groups still trained in
    # full keep stage 3's 3e-4 through their scale.
    c.demo.stage3_lora.optimizer.lr = 3e-3
    c.demo.stage3_lora.optimizer.lr_scales = dict(aligner=0.1, siglip=0.1, sam_neck=0.1)
    c.demo.stage3_lora.lora = dict(rank=32, alpha=32.0)  # model.compute.lora fields
    c.demo.results = "eval_lora.json"
    c.demo.count_params = True

  # Scoring settings of the held-out evaluation (the demo builds its sets).
  c.eval.system_prompt = ""  # as trained
  c.eval.max_new_tokens = 8  # answers are a few tokens
  c.eval.batch_size = 32
  c.eval.length_bucket = 16
  c.eval.share_prefixes = False  # a scene's 2-3 questions share little: one prefill program
  # --config.mode=chat --config.chat.checkpoint=WORKDIR/stage3, or mode=serve|web with
  # --config.serve.checkpoint=WORKDIR/stage3
  c.serve.update(
      dict(
          max_len=1024,
          max_tokens=256,
          default_max_tokens=64,  # the demo's context
          system_prompt="",
          web_image_position="last",
      )
  )  # as its chats were trained
  c.chat.temperature = 0.0
  c.chat.max_new_tokens = 32
  c.chat.image_position = "last"  # as the demo's chats: the question, then its image
  return c
