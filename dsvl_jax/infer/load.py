"""Weights and tokenizer for inference jobs (chat, eval, serve) from their config section.

A section has `checkpoint` (any directory dsvl_jax.load reads; "" = a random init of
config.model with config.seed), `dtype` (of the loaded parameters), `quantize` and
`quant_block` (weight-only quantisation of the kernels model.compute.quant.targets
names), `kv_cache_dtype` (int8: model.compute.kv_cache_dtype for the generators) and
`tokenizer` ("" = the checkpoint's own files; a tokenizer.json, a sentencepiece
.model, or builtin:bytes).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from dsvl_jax.config.schema import ConfigError
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.processor.layout import TokenLayout
from dsvl_jax.processor.tokenizer import Tokenizer, make_tokenizer, special_token_mismatch


def load_model(config, section, name: str) -> tuple[VLMConfig, Any]:
  """(model config, parameters) from section.checkpoint, else a random init; with
  section.adapter, a PEFT LoRA folder's adapters beside the kernels they adapt. `name`:
  the section's config path, for errors."""
  # A checkpoint without an adapter to merge first has its kernels quantised as they are
  # read (a PyTorch folder never exists as a float tree); the rest after.
  while_reading = bool(section.checkpoint) and not section.adapter
  if section.checkpoint:
    import dsvl_jax  # pylint: disable=g-import-not-at-top
    from dsvl_jax.checkpoint.formats import QuantizeError  # pylint: disable=g-import-not-at-top

    try:
      loaded = dsvl_jax.load(
          section.checkpoint,
          dtype=section.dtype,
          quantize=section.quantize if while_reading else "none",
          quant_block=section.quant_block,
      )
    except QuantizeError as e:
      raise ConfigError(f"config field '{name}.quantize': {e}") from e
    cfg, params = loaded.config, loaded.params
  else:
    from dsvl_jax.models.init import init_params  # pylint: disable=g-import-not-at-top

    cfg = VLMConfig.from_dict(config.model)
    params = init_params(cfg, jax.random.key(config.seed))
  if section.adapter:
    from dsvl_jax.models import lora  # pylint: disable=g-import-not-at-top

    cfg, adapters = _read_peft(section.adapter, cfg, section, f"{name}.adapter")
    params = lora.merge(params, jax.tree.map(lambda a: a.astype(section.dtype), adapters))
  if section.quantize != "none" and not while_reading:
    cfg, params = quantized(cfg, params, section.quantize, section.quant_block, name)
  if section.kv_cache_dtype != "auto":
    compute = dataclasses.replace(cfg.compute, kv_cache_dtype=section.kv_cache_dtype)
    cfg = cfg.replace(compute=compute)
  return cfg, params


def quantized(cfg: VLMConfig, params: Any, kind: str, block: int, name: str):
  """(cfg with compute.quant's kind and block, params with the kernels it targets stored
  quantised: models/quant.py). `name`: the section, for errors."""
  from dsvl_jax.models import quant_tree  # pylint: disable=g-import-not-at-top

  try:
    cfg = quant_tree.with_quant(cfg, kind, block)
    params = quant_tree.quantize_tree(params, cfg)
  except (ConfigError, ValueError) as e:
    raise ConfigError(f"config field '{name}.quantize': {e}") from e
  return cfg, params


def _read_peft(folder: str, cfg: VLMConfig, section, field: str) -> tuple[VLMConfig, Any]:
  """(cfg with the adapter's compute.lora, its adapter tree) of a PEFT folder for the
  base `cfg`; errors name the config `field`."""
  from dsvl_jax.checkpoint.adapters import from_peft  # pylint: disable=g-import-not-at-top
  from dsvl_jax.checkpoint.mapping import ConversionError  # pylint: disable=g-import-not-at-top

  if cfg.compute.lora.rank:
    raise ConfigError(f"config field '{field}': {section.checkpoint} holds adapters already")
  try:
    return from_peft(folder, cfg)
  except ConversionError as e:
    raise ConfigError(f"config field '{field}': {e}") from e


def stack_adapters(section, cfg: VLMConfig, params: Any, name: str) -> tuple[VLMConfig, Any]:
  """section.adapters ({model name: PEFT folder}) stacked over the base
  (models/adapter_stack.py): adapter i + 1 is the i-th name in sorted order (config data
  keeps no order of its own), 0 the base alone."""
  from dsvl_jax.models import adapter_stack, lora  # pylint: disable=g-import-not-at-top

  read = [
      _read_peft(folder, cfg, section, f"{name}.adapters.{key}")
      for key, folder in sorted(section.adapters.items())
  ]
  try:
    cfg, stacked = adapter_stack.stack(cfg, [(own.compute.lora, tree) for own, tree in read])
  except ValueError as e:
    names = ", ".join(f"{i} = {key!r}" for i, key in enumerate(sorted(section.adapters), 1))
    raise ConfigError(f"config field '{name}.adapters' ({names}): {e}") from e
  return cfg, lora.merge(params, jax.tree.map(lambda a: a.astype(section.dtype), stacked))


def load_tokenizer(section, cfg: VLMConfig, name: str) -> Tokenizer:
  """section.tokenizer, else the checkpoint directory's own files; `name` is the
  section's config path for errors. The template's EOS and the image placeholder must
  be single config ids (the template and the image blocks rely on both)."""
  spec = section.tokenizer or section.checkpoint
  if not spec:
    raise ConfigError(
        f"config field '{name}.tokenizer': a tokenizer.json / .model / "
        f"'builtin:bytes' is needed (or a {name}.checkpoint holding one)"
    )
  tokenizer = make_tokenizer(spec, TokenLayout.of(cfg))
  if bad := special_token_mismatch(tokenizer, cfg):
    text, got, want = bad
    raise ConfigError(
        f"config field '{name}.tokenizer': {spec!r} encodes {text!r} to "
        f"{got}, the model config needs [{want}]; use the checkpoint's own "
        f"tokenizer"
    )
  return tokenizer
