"""Low-rank adapters as parameters: which leaves they are, and the tree split in two.

A Dense whose module path matches `compute.lora.targets` holds `lora_a` [*in, rank] and
`lora_b` [rank, *out] beside its kernel (layers.Dense; scanned layers stack them like
the kernel). Everything else about an adapter is a plain pytree operation: the base is
the tree without those leaves, an adapter the tree of only those leaves, and a model
with adapters the two merged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp
from flax import traverse_util

from dsvl_jax.models import quant
from dsvl_jax.models.config import VLMConfig

ADAPTER_LEAVES = ("lora_a", "lora_b")


def is_adapter(path: str) -> bool:
  """Whether the parameter at 'a/b/lora_a' is an adapter leaf."""
  return path.rsplit("/", 1)[-1] in ADAPTER_LEAVES


def flatten(tree: Any) -> dict[str, Any]:
  return traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: dict[str, Any]) -> dict:
  return traverse_util.unflatten_dict(flat, sep="/")


def split(params: Any) -> tuple[dict, dict]:
  """(adapters, base): the adapter leaves and the rest, each a nested dict."""
  flat = flatten(params)
  adapters = {k: v for k, v in flat.items() if is_adapter(k)}
  base = {k: v for k, v in flat.items() if not is_adapter(k)}
  return unflatten(adapters), unflatten(base)


def merge(base: Any, adapters: Any) -> dict:
  """The inverse of `split`: one tree holding both."""
  return unflatten({**flatten(base), **flatten(adapters)})


def quantized(params: Any, cfg: VLMConfig) -> dict:
  """A float base (kernels at every adapted module) with those kernels stored as
  cfg.compute.lora.base_quant codes and scales (`kernel_q`, models/quant.py), as the
  model with that config holds them. Adapters, if any, pass through."""
  spec = cfg.compute.lora
  out = {}
  for path, value in flatten(params).items():
    module, leaf = path.rsplit("/", 1)
    if leaf == "kernel" and spec.base_quant != "none" and spec.adapts(module):
      for name, part in quant.quantize(value, spec.base_quant, spec.quant_block).items():
        out[f"{module}/kernel_q/{name}"] = part
    else:
      out[path] = value
  return unflatten(out)


def merged(params: Any, cfg: VLMConfig) -> tuple[VLMConfig, dict]:
  """(cfg without adapters, params with each adapted kernel W + (alpha / rank) A B): the
  same function, no adapters (a quantised W dequantised first, to float32). Kernels are
  in-major (the training layout)."""
  adapters, base = split(params)
  flat, scale = flatten(base), cfg.compute.lora.alpha / cfg.compute.lora.rank
  flat_adapters = flatten(adapters)
  for path, a in flat_adapters.items():
    if not path.endswith("/lora_a"):
      continue
    module = path[: -len("/lora_a")]
    b = flat_adapters[module + "/lora_b"]
    if module + "/kernel" in flat:
      w = flat[module + "/kernel"]
    else:
      codes, q_scale = flat.pop(module + "/kernel_q/codes"), flat.pop(module + "/kernel_q/scale")
      w = quant.dequantize({"codes": codes, "scale": q_scale}, cfg.compute.lora.base_quant)
    stack = a.ndim + b.ndim - w.ndim - 2  # leading layer dims shared by w, a and b
    n = math.prod(a.shape[:stack])
    r = a.shape[-1]
    a32 = jnp.asarray(a, jnp.float32).reshape(n, -1, r)
    b32 = jnp.asarray(b, jnp.float32).reshape(n, r, -1)
    delta = jnp.einsum("sir,sro->sio", a32, b32, precision="highest").reshape(w.shape)
    flat[module + "/kernel"] = (w.astype(jnp.float32) + scale * delta).astype(w.dtype)
  plain = dataclasses.replace(cfg.compute.lora, rank=0, base_quant="none")
  no_lora = dataclasses.replace(cfg.compute, lora=plain)
  return cfg.replace(compute=no_lora), unflatten(flat)
