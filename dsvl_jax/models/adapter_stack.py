"""Several adapters of one base stacked on a leading axis, for serving them together.

layers.Dense with compute.lora.stacked = N holds lora_a [N, *in, rank] and lora_b
[N, rank, *out] and applies to each row of its input the adapter that row's index names
(infer/slots.py runs a decode step of requests for different adapters that way).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from dsvl_jax.models import lora
from dsvl_jax.models.config import LoraConfig, VLMConfig
from dsvl_jax.models.init import abstract_params, logical_axes


def stack(cfg: VLMConfig, adapters: Sequence[tuple[LoraConfig, Any]]) -> tuple[VLMConfig, dict]:
  """Adapters of one base as one tree that serves them together (layers.Dense, stacked):
  (cfg with compute.lora.stacked = N + 1, the stacked adapter leaves). Index 0 is zeros
  (the base alone), index i the i-th of `adapters` ((its LoraConfig, its adapter tree)).
  Ranks are padded with zeros to the largest; each adapter's alpha / rank is folded into
  its lora_b, so the stacked config scales by 1. Targets are the union: an adapter is
  zero where it adapts nothing. cfg: the base's, without adapters."""
  rank = max(spec.rank for spec, _ in adapters)
  targets = tuple(dict.fromkeys(t for spec, _ in adapters for t in spec.targets))
  spec = LoraConfig(rank=rank, alpha=float(rank), targets=targets, stacked=len(adapters) + 1)
  out_cfg = cfg.replace(compute=dataclasses.replace(cfg.compute, lora=spec))
  shapes = lora.flatten(lora.split(abstract_params(out_cfg))[0])
  names = lora.flatten(lora.split(logical_axes(out_cfg))[0])
  stacked = {path: np.zeros(s.shape, np.float32) for path, s in shapes.items()}
  for i, (own, tree) in enumerate(adapters, start=1):
    for path, value in lora.flatten(tree).items():
      if path not in stacked:  # e.g. PEFT's modules_to_save: a whole module, not per row
        raise ValueError(
            f"adapter {i}: {path} is no low-rank adapter leaf; a module trained in full "
            f"cannot change per request (serve that adapter alone, or merged)"
        )
      k, r = names[path].index("lora_adapters"), names[path].index("lora_rank") - 1
      value = np.asarray(value, np.float32)
      if path.endswith("/lora_b"):
        value = value * (own.alpha / own.rank)
      pad = [(0, 0)] * value.ndim
      pad[r] = (0, rank - value.shape[r])
      np.moveaxis(stacked[path], k, 0)[i] = np.pad(value, pad)
  return out_cfg, lora.unflatten(stacked)
