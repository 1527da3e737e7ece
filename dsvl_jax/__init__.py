"""dsvl_jax: DeepSeek-VL in JAX/Flax.

The stable surface (what BUILD.md teaches); internal modules may move, these names stay:

  dsvl_jax.load(path)            a checkpoint of any layout -> config, module, params
  dsvl_jax.load_config(spec)     "configs/x.py[:arg]" -> the ConfigDict main.py runs
  dsvl_jax.VLMConfig, DeepseekVL the model's typed config and Flax module
  dsvl_jax.Tokenizer             text <-> ids with the config's special ids
  dsvl_jax.ImageProcessorConfig, process_image, load_image   images -> pixels
  dsvl_jax.Generator, SamplingConfig                         KV-cache generation
  dsvl_jax.Engine                continuous batching (the server's runtime)
  dsvl_jax.Trainer, TrainDataset the training loop and its grain pipeline

Names resolve on first use (PEP 562), so `import dsvl_jax` stays light: config files
import the package without JAX starting.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "load_config": "dsvl_jax.config.files:load_config",
    "VLMConfig": "dsvl_jax.models.config:VLMConfig",
    "DeepseekVL": "dsvl_jax.models.vlm:DeepseekVL",
    "Tokenizer": "dsvl_jax.processor.tokenizer:Tokenizer",
    "ImageProcessorConfig": "dsvl_jax.processor.image_processor:ImageProcessorConfig",
    "process_image": "dsvl_jax.processor.image_processor:process",
    "load_image": "dsvl_jax.processor.image_processor:load_image",
    "Generator": "dsvl_jax.infer.generate:Generator",
    "SamplingConfig": "dsvl_jax.infer.sampling:SamplingConfig",
    "Engine": "dsvl_jax.infer.engine:Engine",
    "Trainer": "dsvl_jax.train.trainer:Trainer",
    "TrainDataset": "dsvl_jax.data.pipeline:TrainDataset",
}
__all__ = ["load", *_PUBLIC]


def load(
    path: str,
    dtype: str = "float32",
    mesh=None,
    progress: bool = False,
    quantize: str = "none",
    quant_block: int = 64,
):
  """Loads our checkpoint (float or quantised), a transformers directory or an
  original-release directory; `quantize` (int8 | int4 | nf4) stores a float one's
  targeted kernels quantised as they are read.

  Returns an object with .config, .module, .params and .logits(input_ids,
  attention_mask=None, images=None). See dsvl_jax/checkpoint/loading.py.
  """
  from dsvl_jax.checkpoint.loading import load as _load  # pylint: disable=g-import-not-at-top

  return _load(
      path, dtype=dtype, mesh=mesh, progress=progress, quantize=quantize, quant_block=quant_block
  )


def __getattr__(name: str) -> Any:
  if name not in _PUBLIC:
    raise AttributeError(f"module 'dsvl_jax' has no attribute {name!r}")
  module, attr = _PUBLIC[name].split(":")
  value = getattr(importlib.import_module(module), attr)
  globals()[name] = value  # resolved once
  return value


def __dir__() -> list[str]:
  return sorted([*globals(), *_PUBLIC])
