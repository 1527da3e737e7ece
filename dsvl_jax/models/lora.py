"""Low-rank adapters as parameters: which leaves they are, and the tree split in two.

A Dense whose module path matches `compute.lora.targets` holds `lora_a` [*in, rank] and
`lora_b` [rank, *out] beside its kernel (layers.Dense; scanned layers stack them like
the kernel). Everything else about an adapter is a plain pytree operation: the base is
the tree without those leaves, an adapter the tree of only those leaves, and a model
with adapters the two merged.
"""

from __future__ import annotations

from typing import Any

from flax import traverse_util

ADAPTER_LEAVES = ("lora_a", "lora_b")


def is_adapter(path: str) -> bool:
  """Whether the parameter at 'a/b/lora_a' is an adapter leaf."""
  return path.rsplit("/", 1)[-1] in ADAPTER_LEAVES


def split(params: Any) -> tuple[dict, dict]:
  """(adapters, base): the adapter leaves and the rest, each a nested dict."""
  flat = traverse_util.flatten_dict(params, sep="/")
  adapters = {k: v for k, v in flat.items() if is_adapter(k)}
  base = {k: v for k, v in flat.items() if not is_adapter(k)}
  return (
      traverse_util.unflatten_dict(adapters, sep="/"),
      traverse_util.unflatten_dict(base, sep="/"),
  )


def merge(base: Any, adapters: Any) -> dict:
  """The inverse of `split`: one tree holding both."""
  flat = traverse_util.flatten_dict(base, sep="/")
  flat.update(traverse_util.flatten_dict(adapters, sep="/"))
  return traverse_util.unflatten_dict(flat, sep="/")
