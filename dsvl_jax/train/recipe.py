"""The paper's three-stage recipe as config (paper 3.2, Tables 1, 2 and 4), and the
sections every config holds.

`base_config(model)` is a whole config for inference: the mode, the seed, the model and
every section main.py may read, at their dataclasses' defaults. `with_stage(config,
size, stage)` turns it into one training stage of configs/deepseek_vl_{1_3b,7b}.py
(`paper_config` is those files' config); `stage_blocks(size, stage)` gives that stage's
`train`, `optimizer` and `data` blocks.
Table 4's values live in TABLE4; the data mixtures of Tables 1 and 2 become source
weights. What the recipe does not set is the dataclasses' default (train/config.py,
data/config.py), stated there once. Source paths are placeholders
(data/<stage>/<name>.jsonl): point them at your manifests or ArrayRecord files on the
command line (`--config.data.sources.captions.paths='("/data/sharegpt4v.jsonl",)'`).
"""

from __future__ import annotations

from typing import NamedTuple

import ml_collections

from dsvl_jax.config import presets
from dsvl_jax.config.args import parse_arg
from dsvl_jax.data import config as data_config
from dsvl_jax.eval import eval_config
from dsvl_jax.infer import chat_config
from dsvl_jax.runtime import compile_cache, distributed
from dsvl_jax.serve import serve_config
from dsvl_jax.train import config as train_config


class Table4Row(NamedTuple):
  """One (size, stage) row of the paper's Table 4."""

  lr: float  # learning rate
  schedule: str  # scheduler (step = DeepSeek-LLM multi-step)
  warmup: int  # warm-up steps
  steps: int  # training steps
  batch: int  # global batch size (rows per step, all hosts)
  seq: int  # sequence length
  pack: bool  # sequence packing


# (size, stage) -> its Table 4 row. All stages: AdamW beta (0.9, 0.95), weight decay 0,
# gradient clip 1.0: OptimizerConfig's defaults.
TABLE4 = {
    #                      lr, scheduler, warm-up, steps, batch, sequence, packing
    ("1.3b", 1): Table4Row(1.0e-3, "cosine", 128, 15000, 256, 512, False),
    ("1.3b", 2): Table4Row(3e-5, "step", 2000, 96000, 1024, 4096, True),
    ("1.3b", 3): Table4Row(2.0e-5, "cosine", 256, 10000, 256, 4096, False),
    ("7b", 1): Table4Row(1.0e-3, "cosine", 128, 15000, 256, 512, False),
    ("7b", 2): Table4Row(4.2e-5, "step", 2000, 42000, 2304, 4096, True),
    ("7b", 3): Table4Row(2.0e-5, "cosine", 256, 10000, 256, 4096, False),
}

# The argument of configs/deepseek_vl_{1_3b,7b}.py -> the paper's stage (None: inference).
STAGE_ARGS = {None: None, "stage1": 1, "stage2": 2, "stage3": 3}

# Trained groups per stage (paper Figure 3): SAM stays frozen in stage 3 (add "sam_neck"
# to train its neck and downsample convolutions).
TRAINABLE = {1: ("aligner",), 2: ("llm", "aligner"), 3: ("llm", "aligner", "siglip")}

# stage -> {source: weight}: stage 1 = ShareGPT4V captions (1.25M) + document OCR
# renderings (2.5M); stage 2 = Table 1 shares (text 70%); stage 3 = Table 2 shares. The
# paper mixes a small share of SFT data into stage 2 (`sft`, section 4.4) so that a
# small model can follow instructions while it is monitored.
SOURCES = {
    1: dict(captions=1.25, document_ocr=2.5),
    2: dict(
        interleaved=15.2,
        captions=11.1,
        table_chart=2.1,
        web_code=0.4,
        scene_ocr=1.2,
        sft=0.6,
        text=1.0,
    ),
    3: dict(
        taxonomy_sft=10.5, general_multimodal=35.5, table_chart=4.1, web_code=2.0, text_sft=47.9
    ),
}
TEXT_SOURCES = ("text", "text_sft")  # text-only; every other source is multimodal
MULTIMODAL_SHARE = {1: 1.0, 2: 0.3, 3: 0.521}  # stage 3: 52.1% multimodal SFT (Table 2)
# Image slots per row: stage 2 packs interleaved documents; SFT chats have 1-2 images.
MAX_IMAGES = {1: 1, 2: 4, 3: 2}
# Stage 2's modality warm-up (paper 4.4: language share 1.0 lowered to 0.7); the
# paper gives no length, so it is a config value [verify].
MODALITY_WARMUP_STEPS = 8000


def base_config(model: ml_collections.ConfigDict, mode: str = "chat") -> ml_collections.ConfigDict:
  """Every config's mode, seed, model (a dsvl_jax/config/presets.py preset) and the
  sections main.py may read in any mode, each with every field (all overridable)."""
  config = ml_collections.ConfigDict()
  config.mode = mode  # what main.py runs: train | eval | chat | serve | web | demo
  config.seed = 0  # PRNG seed for initialisation and sampling
  config.model = model  # see dsvl_jax/models/config.py for every field
  config.chat = chat_config.default_config()  # mode=chat: checkpoint, tokenizer, sampling
  config.serve = serve_config.default_config()  # mode=serve (OpenAI API) | web (chat page)
  config.eval = eval_config.default_config()  # mode=eval and train.eval_every (dsvl_jax/eval)
  # Read by main.py in every mode (serving a pod needs them as much as training).
  config.distributed = distributed.default_config()  # multi-host start-up
  config.compile_cache = compile_cache.default_config()  # persistent compilation cache (off)
  return config


def with_stage(
    config: ml_collections.ConfigDict, size: str, stage: int, grad_accum_steps: int = 1
) -> ml_collections.ConfigDict:
  """`config` (from base_config) as training stage `stage` of model `size`; the
  micro-batches per step are fitted per size and stage (the config files say how)."""
  config.mode = "train"
  config.update(stage_blocks(size, stage))  # train, optimizer, data (Table 4)
  config.train.grad_accum_steps = grad_accum_steps
  # Long packed rows: recompute activations in the backward pass (memory for compute).
  config.model.compute.remat_policy = "none" if stage == 1 else "full"
  # Each platform's fused kernel (TPU splash, GPU cuDNN), the reference elsewhere.
  config.model.compute.attention_impl = "auto"
  config.mesh = train_config.default_mesh_config(shape=(1, -1, 1))  # (data, fsdp, tensor)
  return config


def paper_config(
    size: str, arg: str | None, grad_accum_steps: dict[int, int], file: str
) -> ml_collections.ConfigDict:
  """The config of configs/deepseek_vl_{size}.py (`file`) for its argument `arg`: the
  "size" preset for inference, or with an arg of STAGE_ARGS its training stage with
  `grad_accum_steps[stage]` micro-batches per step."""
  stage = parse_arg(arg, STAGE_ARGS, file, what="stage")
  config = base_config(presets.model(size))
  if stage is None:
    return config
  return with_stage(config, size, stage, grad_accum_steps[stage])


def paper_get_config(size: str, grad_accum_steps: dict[int, int], file: str):
  """The `get_config(arg=None)` of a paper config file (see `paper_config`)."""

  def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return paper_config(size, arg, grad_accum_steps, file)

  return get_config


def stage_blocks(size: str, stage: int) -> dict[str, ml_collections.ConfigDict]:
  """{'train', 'optimizer', 'data'} blocks of one stage of one model size: every field of
  their dataclasses, the defaults where the recipe sets nothing."""
  if (size, stage) not in TABLE4:
    sizes = sorted({s for s, _ in TABLE4})
    raise ValueError(f"no recipe for size {size!r} stage {stage!r}; sizes {sizes}, stages 1, 2, 3")
  t = TABLE4[size, stage]
  train = train_config.default_train_config(
      steps=t.steps,  # Table 4 training steps
      trainable=TRAINABLE[stage],  # groups trained; the rest frozen (no optimizer state)
      loss_chunk_tokens=1024,  # vocabulary projection in 1024-token chunks (102,400 columns)
  )
  optimizer = train_config.default_optimizer_config(
      lr=t.lr,  # Table 4 learning rate
      schedule=t.schedule,  # Table 4 scheduler (step = DeepSeek-LLM multi-step)
      warmup_steps=t.warmup,  # Table 4 warm-up steps
  )
  data = data_config.default_config(
      stage=stage,  # loss masks: stages 1-2 all text tokens, stage 3 answers only
      pack=t.pack,  # Table 4 sequence packing
      seq_len=t.seq,  # Table 4 sequence length
      global_batch_size=t.batch,  # Table 4 batch size (rows per step, all hosts)
      max_images_per_row=MAX_IMAGES[stage],  # image slots per multimodal row
      schedule="warmup" if stage == 2 else "constant",  # modality warm-up in stage 2
      multimodal_share=MULTIMODAL_SHARE[stage],  # target share of multimodal steps
      warmup_steps=MODALITY_WARMUP_STEPS if stage == 2 else 0,  # language 1.0 -> 0.7
      tokenizer="",  # "" = the tokenizer files of train.init_from
      num_workers=8,  # grain worker processes per modality (decoding, resizing)
      sources={
          name: dict(
              type="jsonl",
              modality="text" if name in TEXT_SOURCES else "multimodal",
              weight=weight,
              paths=(f"data/stage{stage}/{name}.jsonl",),
          )
          for name, weight in SOURCES[stage].items()
      },
  )
  return {"train": train, "optimizer": optimizer, "data": data}
