"""Fine-tuning a released chat model on a LLaVA-format file, read as released (BUILD.md
"Training on your data").

--config=configs/finetune_llava.py       DeepSeek-VL 1.3B chat
--config=configs/finetune_llava.py:7b    DeepSeek-VL 7B chat

The paper's stage 3 (answers supervised; Table 4's learning rate, schedule and batch)
from the converted chat checkpoint. One LLaVA file feeds both kinds of step: its image
conversations the multimodal steps, its text-only conversations the text steps. Point
the paths at your data on the command line
(--config.data.sources.llava.paths='("my.json",)', likewise llava_text).
"""

import ml_collections

from dsvl_jax.config.args import parse_arg
from dsvl_jax.data import config as data_config
from dsvl_jax.train import recipe

ARGS = (None, "7b")  # every valid arg (tests render each)
SIZES = {None: "1.3b", "7b": "7b"}
FILE = "data/llava/llava_v1_5_mix665k.json"  # LLaVA-1.5's instruction mixture
IMAGES = "data/llava"  # its image paths ("coco/train2017/...") are relative to this


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  size = parse_arg(arg, SIZES, __file__, what="size")
  config = recipe.paper_config(size, "stage3", {3: 1}, __file__)
  config.train.init_from = f"ckpt/deepseek-vl-{size}-chat"  # python -m convert import
  config.data.multimodal_share = 0.94  # the mixture's share of conversations with images
  llava = dict(type="llava", paths=(FILE,), image_folder=IMAGES)
  config.data.sources = ml_collections.ConfigDict(
      {
          "llava": data_config.default_source(**llava),
          "llava_text": data_config.default_source(**llava, modality="text"),
      }
  )
  return config
