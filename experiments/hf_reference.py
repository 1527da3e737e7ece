"""The transformers reference model the benchmarks compare against (test-only deps)."""

from __future__ import annotations

import torch
import transformers

from dsvl_jax.checkpoint.configs import to_hf
from dsvl_jax.models import VLMConfig


def hf_model(cfg: VLMConfig, train: bool = False):
  """transformers' DeepSeek-VL of `cfg`'s family and shapes, float32, seed 0 init."""
  config = to_hf(cfg)
  config_cls = transformers.DeepseekVLHybridConfig if cfg.hybrid else transformers.DeepseekVLConfig
  cls = (
      transformers.DeepseekVLHybridForConditionalGeneration
      if cfg.hybrid
      else transformers.DeepseekVLForConditionalGeneration
  )
  torch.manual_seed(0)
  model = cls(config_cls(**{k: v for k, v in config.items() if k != "architectures"}))
  return model.to(torch.float32).train(train)


def paired_models(cfg: VLMConfig):
  """(transformers model, our parameters converted from its weights, on the device)."""
  import jax  # pylint: disable=g-import-not-at-top

  from convert import state_dict_to_params  # pylint: disable=g-import-not-at-top

  hf = hf_model(cfg)
  params, _ = state_dict_to_params({k: v.numpy() for k, v in hf.state_dict().items()}, cfg)
  return hf, jax.device_put(params)
