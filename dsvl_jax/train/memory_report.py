"""The start-up sharding report: bytes per device, and what is replicated and why.

Logged once by the trainer (and printed by experiments/aot_compile.py) so that a run on
a new mesh shows, before the first step, whether the state fits and which large
arrays every device holds in full:

  parameters  1.23 GiB per device (9.84 GiB in total), optimizer 0.41 GiB per device
  replicated (largest first):
    llm/layers/k_proj/kernel  32.0 MiB  over tensor: 'kv_heads' (2) does not split over tensor (4)
    sam/neck/conv1/kernel      1.1 MiB  over fsdp, tensor: no dimension of (...) maps to fsdp; ...
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, PartitionSpec

from dsvl_jax.runtime import sharding


@dataclasses.dataclass(frozen=True)
class Replicated:
  path: str
  bytes: int  # of the whole array, held by every device of the replicated axes
  why: str


@dataclasses.dataclass(frozen=True)
class MemoryReport:
  param_bytes_per_device: int
  param_bytes_total: int
  opt_bytes_per_device: int
  opt_bytes_total: int
  replicated: tuple[Replicated, ...]

  def text(self, limit: int = 10) -> str:
    lines = [
        f"parameters {_fmt(self.param_bytes_per_device)} per device "
        f"({_fmt(self.param_bytes_total)} in total), optimizer "
        f"{_fmt(self.opt_bytes_per_device)} per device "
        f"({_fmt(self.opt_bytes_total)} in total)"
    ]
    if self.replicated:
      lines.append(
          f"replicated over the mesh ({len(self.replicated)} arrays; largest "
          f"{min(limit, len(self.replicated))}):"
      )
      width = max(len(r.path) for r in self.replicated[:limit])
      lines += [
          f"  {r.path:<{width}}  {_fmt(r.bytes):>10}  {r.why}" for r in self.replicated[:limit]
      ]
    return "\n".join(lines)


def _fmt(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if n < 1024 or unit == "TiB":
      return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  raise AssertionError


def _axes(spec) -> set[str]:
  """The mesh axes a PartitionSpec (or its entries) uses."""
  return {
      ax
      for entry in spec
      if entry is not None
      for ax in (entry if isinstance(entry, tuple) else (entry,))
  }


def _nbytes(shape, dtype) -> int:
  return int(np.prod(shape)) * np.dtype(dtype).itemsize


def _per_device(tree: Any, shardings: Any) -> tuple[int, int]:
  per = total = 0
  for a, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
    per += _nbytes(s.shard_shape(a.shape), a.dtype)
    total += _nbytes(a.shape, a.dtype)
  return per, total


def memory_report(
    params: Any,
    param_shardings: Any,
    param_logical: Any,
    opt_state: Any,
    opt_shardings: Any,
    mesh: Mesh,
    min_bytes: int = 1 << 20,
) -> MemoryReport:
  """params / opt_state: abstract trees (ShapeDtypeStructs); shardings: NamedShardings.

  Lists every parameter of at least `min_bytes` that some parameter-splitting mesh
  axis of size > 1 (sharding.PARAM_AXES) does not split, with the reason.
  """
  p_per, p_total = _per_device(params, param_shardings)
  o_per, o_total = _per_device(opt_state, opt_shardings)
  replicated = []
  splitting = [a for a in sharding.PARAM_AXES if mesh.shape[a] > 1]
  flat = jax.tree_util.tree_leaves_with_path(params)
  specs = jax.tree.leaves(param_logical, is_leaf=lambda x: isinstance(x, PartitionSpec))
  for (path, a), s, logical in zip(flat, jax.tree.leaves(param_shardings), specs):
    size = _nbytes(a.shape, a.dtype)
    missing = [ax for ax in splitting if ax not in _axes(s.spec)]
    if size < min_bytes or not missing:
      continue
    # An axis the rules name for some dimension was dropped for divisibility (fit_to_shape
    # says why); one they name for none is left out by the rule table itself.
    _, why = sharding.fit_to_shape(logical, a.shape, mesh)
    ruled = _axes(nn.logical_to_mesh_axes(logical, list(sharding.RULES)))
    why += [f"no dimension of {tuple(logical)} maps to {ax}" for ax in missing if ax not in ruled]
    replicated.append(
        Replicated(
            jax.tree_util.keystr(path, simple=True, separator="/"),
            size,
            f"over {', '.join(missing)}: " + "; ".join(why),
        )
    )
  replicated.sort(key=lambda r: -r.bytes)
  return MemoryReport(p_per, p_total, o_per, o_total, tuple(replicated))
