"""Whole parameter trees quantised and back (models/quant.py holds one kernel's codes):
the float tree of a model -> the tree the model of a config with compute.quant (or
QLoRA's lora.base_quant) holds, and the inverse for export."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator

import jax
import jax.numpy as jnp
from flax import traverse_util

from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.init import abstract_params
from dsvl_jax.models.quant import KINDS, dequantize, quantize, stored_shapes

_quantize = jax.jit(quantize, static_argnames=("kind", "block"))
_dequantize = jax.jit(dequantize, static_argnames=("kind", "dtype"))


def float_config(cfg: VLMConfig) -> VLMConfig:
  """`cfg` with every kernel float (compute.quant.kind and lora.base_quant "none"): the
  config of `dequantize_tree`'s output."""
  c = cfg.compute
  return cfg.replace(
      compute=dataclasses.replace(
          c,
          quant=dataclasses.replace(c.quant, kind="none"),
          lora=dataclasses.replace(c.lora, base_quant="none"),
      )
  )


@functools.lru_cache(maxsize=8)
def _layout(cfg: VLMConfig) -> tuple[dict[str, dict[str, tuple]], frozenset[str]]:
  """({module: {'codes': shape, 'scale': shape}} of the kernels the model of `cfg` holds
  quantised, the modules holding a float 'kernel'): the model's own init traced
  abstractly, so only Dense kernels, in cfg's layout, shapes as Dense creates them."""
  stored, plain = {}, set()
  for path, value in traverse_util.flatten_dict(abstract_params(cfg), sep="/").items():
    module, _, leaf = path.rpartition("/")
    if module.endswith("/kernel_q"):
      stored.setdefault(module[: -len("/kernel_q")], {})[leaf] = tuple(value.shape)
    elif leaf == "kernel":
      plain.add(module)
  return stored, frozenset(plain)


def with_quant(cfg: VLMConfig, kind: str, block: int) -> VLMConfig:
  """`cfg` with compute.quant's kind and block: the config of `quantize_tree`'s output for
  a float model of `cfg`. ValueError (one line) when cfg's kernels are quantised already,
  or the kind, the block or a targeted kernel's shape does not fit (the model's init is
  traced abstractly, so a block that does not divide a kernel is named here)."""
  if kind not in KINDS:
    raise ValueError(f"no quantisation {kind!r}; one of {KINDS}")
  c = cfg.compute
  if c.quant.kind != "none" or c.lora.base_quant != "none":
    raise ValueError(
        f"the kernels are quantised already (compute.quant.kind {c.quant.kind!r}, "
        f"lora.base_quant {c.lora.base_quant!r}); quantise a float checkpoint"
    )
  out = cfg.replace(
      compute=dataclasses.replace(c, quant=dataclasses.replace(c.quant, kind=kind, block=block))
  )
  out.compute.validate("model.compute")
  _layout(out)
  return out


def quantize_kernel(
    module: str, kernel: Any, cfg: VLMConfig, *, layer: bool = False
) -> dict[str, jax.Array] | None:
  """{'codes', 'scale'} of the Dense `module`'s float `kernel` as the model of `cfg`
  holds it quantised (cfg.compute.kernel_quant: compute.quant's targets, or
  lora.base_quant's adapted kernels), or None when it holds that kernel float (not
  targeted, or a Conv's). layer: `kernel` is one layer [...] of the scanned stack
  [L, ...] the model holds; quantising the layers one at a time gives the stack's codes
  (blocks run along the last axis), so a converter streams a stack without its float
  copy (checkpoint/convert.py)."""
  stored, plain = _layout(cfg)
  spec = cfg.compute.kernel_quant(module)
  if spec is None or module in plain:  # not a Dense kernel it quantises (a Conv's)
    return None
  if module not in stored:
    raise ValueError(
        f"{module}: no such Dense in the model of this config (are the params laid out "
        f"as it is: compute.scan_layers, llm_kernels_out_major?)"
    )
  kind, block = spec
  want = {k: v[1:] if layer else v for k, v in stored[module].items()}
  try:
    got = stored_shapes(tuple(kernel.shape), kind, block)
    if got != want:
      raise ValueError(
          f"kernel {tuple(kernel.shape)} quantises to {got}, the model holds {want} (are "
          f"the params laid out as it is: compute.llm_kernels_out_major?)"
      )
    return _quantize(kernel, kind=kind, block=block)
  except ValueError as e:
    raise ValueError(f"{module}: {e}") from None


def quantize_leaves(params: Any, cfg: VLMConfig) -> Iterator[tuple[str, Any]]:
  """('a/b/leaf', value) of `quantize_tree`'s result, in `params`' order, one kernel
  quantised at a time: each Dense kernel the model of `cfg` holds quantised
  (`quantize_kernel`) is replaced by its 'kernel_q/codes' and 'kernel_q/scale', the
  rest passes through. Nothing is deleted: the caller may still hold `params`. A caller
  that owns a float tree on an accelerator can `.delete()` each float kernel once its
  codes are yielded (as train/trainer.py `_quantized` does), so that the peak is the
  quantised tree plus one float kernel."""
  for path, value in traverse_util.flatten_dict(params, sep="/").items():
    module, _, leaf = path.rpartition("/")
    codes = quantize_kernel(module, value, cfg) if leaf == "kernel" else None
    if codes is None:
      yield path, value
      continue
    for name in ("codes", "scale"):
      yield f"{module}/kernel_q/{name}", codes[name]


def quantize_tree(params: Any, cfg: VLMConfig) -> dict:
  """A float parameter tree (the whole model's or a part, e.g. lora.split's base, laid
  out as the model of `cfg` holds it: scanned or per-layer LLM, in- or out-major LLM
  kernels) -> the tree the model of `cfg` holds: each kernel `cfg.compute.kernel_quant`
  names as {'kernel_q': {'codes', 'scale'}} in place of {'kernel'}, quantised along the
  stored kernel's last axis as Dense's init does; a new tree, `params` left intact.
  With QLoRA's config it is lora.quantized's tree."""
  return traverse_util.unflatten_dict(dict(quantize_leaves(params, cfg)), sep="/")


def dequantize_kernel(module: str, stored: Any, cfg: VLMConfig) -> jax.Array:
  """The Dense `module`'s {'codes', 'scale'} (a stack's or one layer's) back to its
  kernel in compute.param_dtype: the values the model of `cfg` computes with."""
  spec = cfg.compute.kernel_quant(module)
  if spec is None:
    raise ValueError(f"{module}: stored quantised, but this config holds it float")
  return _dequantize(
      {"codes": stored["codes"], "scale": stored["scale"]},
      kind=spec[0],
      dtype=jnp.dtype(cfg.compute.param_dtype),
  )


def dequantize_tree(params: Any, cfg: VLMConfig) -> dict:
  """The inverse (export): every 'kernel_q' {'codes', 'scale'} of the model of `cfg`
  back to a 'kernel' in compute.param_dtype (the values the model's matmuls use), the
  rest as is; the tree of `float_config(cfg)`."""
  flat, out = traverse_util.flatten_dict(params, sep="/"), {}
  for path, value in flat.items():
    module, _, leaf = path.rpartition("/")
    if not module.endswith("/kernel_q"):
      out[path] = value
      continue
    if leaf != "codes":
      continue
    module = module[: -len("/kernel_q")]
    stored = {"codes": value, "scale": flat[f"{module}/kernel_q/scale"]}
    out[f"{module}/kernel"] = dequantize_kernel(module, stored, cfg)
  return traverse_util.unflatten_dict(out, sep="/")
