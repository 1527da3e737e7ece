"""The transformers reference model the benchmarks compare against (test-only deps)."""

from __future__ import annotations

import torch
import transformers

from convert.configs import to_hf
from dsvl_jax.models import VLMConfig


def hf_model(cfg: VLMConfig, train: bool = False):
  """transformers' DeepSeek-VL of `cfg`'s family and shapes, float32, seed 0 init."""
  config = to_hf(cfg)
  config_cls = (transformers.DeepseekVLHybridConfig if cfg.hybrid
                else transformers.DeepseekVLConfig)
  cls = (transformers.DeepseekVLHybridForConditionalGeneration if cfg.hybrid
         else transformers.DeepseekVLForConditionalGeneration)
  torch.manual_seed(0)
  model = cls(config_cls(**{k: v for k, v in config.items() if k != "architectures"}))
  return model.to(torch.float32).train(train)
