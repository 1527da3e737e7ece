"""Streaming conversion between a PyTorch-layout TensorSource and our parameter tree.

Import reads one tensor at a time, converts it and places it; each finished leaf goes
straight to its device layout (sharded when shardings are given) and the host copy is
dropped, so peak host memory stays near one copy of the parameters plus one leaf. A
config with compute.quant gets its targeted kernels quantised as they are read, one
layer of a stack at a time, so peak memory is near the quantised tree plus one float
layer. Before any data is read, key sets and shapes (from file headers) are checked and
every problem is reported by name.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dsvl_jax.checkpoint.mapping import (
    HF_SIGLIP_PREFIXES,
    LAYOUTS,
    ConversionError,
    ParamSpec,
    _get,
    _set,
    param_specs,
    unused_patterns,
)
from dsvl_jax.checkpoint.safetensors_io import DictSource, TensorSource
from dsvl_jax.models import quant_tree
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.models.init import abstract_params


@dataclasses.dataclass
class ImportReport:
  layout: str
  unused: list[str]  # known-unused tensors that were skipped
  num_tensors: int  # tensors read


def detect_layout(keys) -> str:
  keys = list(keys)
  if any(k.startswith(("language_model.", "vision_model.", "aligner.")) for k in keys):
    return "original"
  if any(k.startswith("model.") or k == "lm_head.weight" for k in keys):
    return "hf"
  raise ConversionError(
      "cannot tell the checkpoint layout from its keys (neither "
      f"'language_model.*' nor 'model.*'); first keys: {sorted(keys)[:5]}"
  )


def _siglip_prefix(cfg: VLMConfig, layout: str, keys) -> str | None:
  if layout != "hf":
    return None
  for prefix in HF_SIGLIP_PREFIXES:
    if any(k.startswith(prefix + "embeddings.") for k in keys):
      return prefix
  return HF_SIGLIP_PREFIXES[-1]


def _torch_shapes(spec: ParamSpec, flax_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
  one = flax_shape[1:] if spec.stacked else flax_shape
  out = jax.eval_shape(
      lambda a: spec.transform.to_torch(jnp, a), jax.ShapeDtypeStruct(one, jnp.float32)
  )
  return [tuple(o.shape) for o in out]


def check(source: TensorSource, cfg: VLMConfig, layout: str) -> tuple[list[ParamSpec], list[str]]:
  """Validates keys and shapes without reading tensor data. Returns (specs, unused keys).
  The shapes are the float model's (a quantised config's kernels come from float tensors)."""
  cfg = quant_tree.float_config(cfg)
  keys = source.keys()
  specs = param_specs(cfg, layout, siglip_prefix=_siglip_prefix(cfg, layout, keys))
  wanted = {k for s in specs for ks in s.keys for k in ks}
  extra = sorted(set(keys) - wanted)
  patterns = [
      re.compile(p) for p in unused_patterns(cfg, layout, _siglip_prefix(cfg, layout, keys))
  ]
  unused = [k for k in extra if any(p.fullmatch(k) for p in patterns)]
  unexpected = [k for k in extra if k not in set(unused)]
  missing = sorted(wanted - set(keys))
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing key(s): {missing}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected key(s): {unexpected}")
  if not problems:
    shapes = {
        k: tuple(v.shape) for k, v in traverse_util.flatten_dict(abstract_params(cfg)).items()
    }
    for spec in specs:
      expected = _torch_shapes(spec, shapes[spec.path])
      for ks in spec.keys:
        for k, want in zip(ks, expected):
          found = source.shape(k)
          if found != want:
            problems.append(f"shape mismatch for '{k}': expected {want}, found {found}")
  if problems:
    raise ConversionError(
        f"checkpoint ({layout} layout) does not match the model config: " + "; ".join(problems)
    )
  return specs, unused


def to_params(
    source: TensorSource,
    cfg: VLMConfig,
    layout: str | None = None,
    *,
    dtype: Any = jnp.float32,
    shardings: Any = None,
    to_device: bool = True,
    progress: bool = False,
) -> tuple[dict, ImportReport]:
  """Reads every tensor once and returns the parameter tree the model of `cfg` holds.

  Values are cast to `dtype` as read. A kernel the model holds quantised
  (cfg.compute.kernel_quant) is quantised from those cast values as soon as it is read;
  a stack's layers one at a time into preallocated [L, ...] codes and scales (no float
  stack ever exists), equal to quant_tree.quantize_tree of the float import at `dtype`.
  to_device=False returns numpy arrays (tests, export); otherwise jax arrays, placed with
  `shardings` (a tree like the params of NamedShardings) when given.
  """
  layout = layout or detect_layout(source.keys())
  specs, unused = check(source, cfg, layout)
  flat_shardings = traverse_util.flatten_dict(shardings) if shardings is not None else None
  params: dict = {}
  n = 0
  bar = _progress(len(specs), "import") if progress else None
  for spec in specs:
    leaves = None  # {path: array}: the spec's leaf, or a quantised kernel's codes and scale
    for i, ks in enumerate(spec.keys):
      value = np.asarray(spec.transform.to_flax(np, *[source.get(k) for k in ks]), dtype)
      n += len(ks)
      got = _quantized(spec, value, cfg) or {spec.path: value}
      if not spec.stacked:
        leaves = got
        break
      if leaves is None:  # fill a preallocated stack: no per-layer list plus stacked copy
        leaves = {p: np.empty((len(spec.keys),) + v.shape, v.dtype) for p, v in got.items()}
      for p, v in got.items():
        leaves[p][i] = v
      del value, got
    for path, leaf in leaves.items():
      if to_device:
        leaf = _place(leaf, flat_shardings[path] if flat_shardings else None)
      _set(params, path, leaf)
    del leaves
    if bar:
      bar.update(1)
  if bar:
    bar.close()
  return params, ImportReport(layout, unused, n)


def _quantized(spec: ParamSpec, value: np.ndarray, cfg: VLMConfig) -> dict | None:
  """{path: numpy array} of the codes and scale of `value` (a kernel, or one layer of a
  stacked one) when the model of `cfg` holds it quantised, else None."""
  if spec.path[-1] != "kernel":
    return None
  module = "/".join(spec.path[:-1])
  try:
    stored = quant_tree.quantize_kernel(module, value, cfg, layer=spec.stacked)
  except ValueError as e:
    raise ConversionError(str(e)) from None
  if stored is None:
    return None
  return {spec.path[:-1] + ("kernel_q", k): np.asarray(v) for k, v in stored.items()}


def _place(leaf: np.ndarray, sharding) -> jax.Array:
  if sharding is None:
    return jax.device_put(leaf)
  # Each device (each host, under multi-process) takes only its own slices.
  return jax.make_array_from_callback(leaf.shape, sharding, lambda idx: leaf[idx])


def from_params(
    params: Mapping, cfg: VLMConfig, layout: str, *, dtype: Any = None, progress: bool = False
) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (PyTorch key, array) one tensor at a time, in the layout's key names. A
  kernel the model of `cfg` holds quantised is written dequantised (in
  compute.param_dtype, as quant_tree.dequantize_tree), one layer of a stack at a time."""
  specs = param_specs(cfg, layout)
  bar = _progress(len(specs), "export") if progress else None
  for spec in specs:
    for ks, v in zip(spec.keys, _float_layers(params, spec, cfg)):
      if dtype is not None:
        v = v.astype(dtype)
      for k, t in zip(ks, spec.transform.to_torch(np, v)):
        yield k, np.ascontiguousarray(t)
    if bar:
      bar.update(1)
  if bar:
    bar.close()


def _float_layers(params: Mapping, spec: ParamSpec, cfg: VLMConfig) -> Iterator[np.ndarray]:
  """The spec's float leaf as numpy, its layers one by one when stacked."""
  module = spec.path[:-1]
  stored = _get(params, module).get("kernel_q") if spec.path[-1] == "kernel" else None
  if stored is None:
    value = np.asarray(jax.device_get(_get(params, spec.path)))
    yield from value if spec.stacked else [value]
    return
  name = "/".join(module)
  layers = range(stored["codes"].shape[0]) if spec.stacked else [None]
  for i in layers:
    one = stored if i is None else {k: v[i] for k, v in stored.items()}
    yield np.asarray(quant_tree.dequantize_kernel(name, one, cfg))


def _progress(total: int, desc: str):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  return tqdm(total=total, desc=desc, unit="param", leave=False)


# Convenience wrappers for in-memory state dicts (tests, notebooks).


def state_dict_to_params(
    state: Mapping[str, Any], cfg: VLMConfig, layout: str | None = None, dtype: Any = np.float32
) -> tuple[dict, list[str]]:
  """PyTorch-layout dict -> (numpy parameter tree, known-unused keys skipped)."""
  params, report = to_params(DictSource(state), cfg, layout, dtype=dtype, to_device=False)
  return params, report.unused


def params_to_state_dict(
    params: Mapping, cfg: VLMConfig, layout: str = "hf"
) -> dict[str, np.ndarray]:
  return dict(from_params(params, cfg, layout))


__all__ = [
    "ImportReport",
    "LAYOUTS",
    "check",
    "detect_layout",
    "from_params",
    "params_to_state_dict",
    "state_dict_to_params",
    "to_params",
]
