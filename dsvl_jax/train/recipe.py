"""The paper's three-stage recipe as config blocks (paper 3.2, Tables 1, 2 and 4).

`stage_blocks(size, stage)` returns the `train`, `optimizer` and `data` blocks of
configs/deepseek_vl_{1_3b,7b}.py:stage{1,2,3}. Table 4's values live in TABLE4; the data
mixtures of Tables 1 and 2 become source weights. Source paths are placeholders
(data/<stage>/<name>.jsonl): point them at your manifests or ArrayRecord files on the
command line (`--config.data.sources.captions.paths='("/data/sharegpt4v.jsonl",)'`).
"""

from __future__ import annotations

import ml_collections

from dsvl_jax.data import config as data_config
from dsvl_jax.train import config as train_config

# size -> stage -> Table 4 (learning rate, scheduler, warm-up steps, training steps,
# global batch size, sequence length, sequence packing). All stages: AdamW beta
# (0.9, 0.95), weight decay 0, gradient clip 1.0.
TABLE4 = {
    "1.3b": {
        1: dict(lr=1.0e-3, schedule="cosine", warmup=128, steps=15000, batch=256, seq=512, pack=False),
        2: dict(lr=3e-5, schedule="step", warmup=2000, steps=96000, batch=1024, seq=4096, pack=True),
        3: dict(lr=2.0e-5, schedule="cosine", warmup=256, steps=10000, batch=256, seq=4096, pack=False),
    },
    "7b": {
        1: dict(lr=1.0e-3, schedule="cosine", warmup=128, steps=15000, batch=256, seq=512, pack=False),
        2: dict(lr=4.2e-5, schedule="step", warmup=2000, steps=42000, batch=2304, seq=4096, pack=True),
        3: dict(lr=2.0e-5, schedule="cosine", warmup=256, steps=10000, batch=256, seq=4096, pack=False),
    },
}

# Trained groups per stage (paper Figure 3): SAM stays frozen in stage 3 (add "sam_neck"
# to train its neck and downsample convolutions).
TRAINABLE = {1: ("aligner",), 2: ("llm", "aligner"), 3: ("llm", "aligner", "siglip")}

# (name, modality, weight): stage 1 = ShareGPT4V captions (1.25M) + document OCR
# renderings (2.5M); stage 2 = Table 1 shares (text 70%); stage 3 = Table 2 shares.
SOURCES = {
    1: (("captions", "multimodal", 1.25), ("document_ocr", "multimodal", 2.5)),
    2: (("interleaved", "multimodal", 15.2), ("captions", "multimodal", 11.1),
        ("table_chart", "multimodal", 2.1), ("web_code", "multimodal", 0.4),
        ("scene_ocr", "multimodal", 1.2),
        # The paper mixes a small share of SFT data into stage 2 (section 4.4) so that
        # a small model can follow instructions while it is monitored.
        ("sft", "multimodal", 0.6),
        ("text", "text", 1.0)),
    3: (("taxonomy_sft", "multimodal", 10.5), ("general_multimodal", "multimodal", 35.5),
        ("table_chart", "multimodal", 4.1), ("web_code", "multimodal", 2.0),
        ("text_sft", "text", 47.9)),
}
MULTIMODAL_SHARE = {1: 1.0, 2: 0.3, 3: 0.521}  # stage 3: 52.1% multimodal SFT (Table 2)
# Image slots per row: stage 2 packs interleaved documents; SFT chats have 1-2 images.
MAX_IMAGES = {1: 1, 2: 4, 3: 2}
# Stage 2's modality warm-up (paper 4.4: language share 1.0 lowered to 0.7); the
# paper gives no length, so it is a config value [verify].
MODALITY_WARMUP_STEPS = 8000


def stage_blocks(size: str, stage: int) -> dict[str, ml_collections.ConfigDict]:
  """{'train', 'optimizer', 'data'} blocks of one stage of one model size: every field of
  their dataclasses, the defaults where the recipe sets nothing."""
  if size not in TABLE4 or stage not in TABLE4[size]:
    raise ValueError(f"no recipe for size {size!r} stage {stage!r}; sizes {list(TABLE4)}, "
                     f"stages 1, 2, 3")
  t = TABLE4[size][stage]
  train = train_config.default_train_config(
      steps=t["steps"],  # Table 4 training steps
      trainable=TRAINABLE[stage],  # groups trained; the rest frozen (no optimizer state)
      init_from="",  # a converted checkpoint, the previous stage's workdir, or "" (random)
      grad_accum_steps=1,  # micro-batches per step
      loss_chunk_tokens=1024,  # vocabulary projection in 1024-token chunks (102,400 columns)
      nonfinite="skip",  # skip | stop
      log_every=10,  # steps per metric line
      checkpoint_every=1000,  # steps per checkpoint
      keep_checkpoints=3,  # checkpoints kept
      async_checkpoints=True,  # orbax saves in the background
      eval_every=0,  # steps per evaluation on config.eval.sets (0 = never)
      tensorboard=True,  # event files in the workdir
      progress=True,  # console progress bar
      peak_flops=0.0,  # per-device peak for MFU (0 = table / measured)
  )
  optimizer = train_config.default_optimizer_config(
      lr=t["lr"],  # Table 4 learning rate
      schedule=t["schedule"],  # Table 4 scheduler (step = DeepSeek-LLM multi-step)
      warmup_steps=t["warmup"],  # Table 4 warm-up steps
      final_lr_fraction=0.0,  # cosine floor (not stated in the paper) [verify]
      step_boundaries=(0.8, 0.9),  # multi-step: after 80% and 90% of the steps ...
      step_factors=(0.316, 0.1),  # ... 31.6% and 10% of the peak (DeepSeek-LLM)
      b1=0.9,  # AdamW beta1 (Table 4)
      b2=0.95,  # AdamW beta2 (Table 4)
      eps=1e-8,  # AdamW epsilon
      weight_decay=0.0,  # Table 4
      grad_clip=1.0,  # Table 4 gradient clip
      lr_scales=dict(llm=1.0, aligner=1.0, siglip=1.0, sam=1.0, sam_neck=1.0),  # per group
  )
  data = data_config.default_config(
      stage=stage,  # loss masks: stages 1-2 all text tokens, stage 3 answers only
      pack=t["pack"],  # Table 4 sequence packing
      seq_len=t["seq"],  # Table 4 sequence length
      global_batch_size=t["batch"],  # Table 4 batch size (rows per step, all hosts)
      max_images_per_row=MAX_IMAGES[stage],  # image slots per multimodal row
      seed=0,  # shuffling, mixing, modality choice
      schedule="warmup" if stage == 2 else "constant",  # modality warm-up in stage 2
      multimodal_share=MULTIMODAL_SHARE[stage],  # target share of multimodal steps
      warmup_steps=MODALITY_WARMUP_STEPS if stage == 2 else 0,  # language 1.0 -> 0.7
      tokenizer="",  # "" = the tokenizer files of train.init_from
      system_prompt="default",  # the released system prompt in chats
      num_workers=8,  # grain worker processes per modality (decoding, resizing)
      sources={name: dict(type="jsonl", modality=modality, weight=weight,
                          paths=(f"data/stage{stage}/{name}.jsonl",))
               for name, modality, weight in SOURCES[stage]},
  )
  return {"train": train, "optimizer": optimizer, "data": data}
