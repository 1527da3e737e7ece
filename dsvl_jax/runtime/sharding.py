"""The device mesh and the one table that maps logical axis names to mesh axes.

Models name every parameter and activation axis logically ('embed', 'heads', ...);
nothing else in the code base names a mesh axis. Mesh axes:

  data   - pure data parallelism (parameters replicated)
  fsdp   - data parallelism with parameters and optimizer state sharded (ZeRO-3 style)
  tensor - Megatron-style tensor parallelism over heads / MLP width / vocabulary

A 1x1x1 mesh is a single device; the same code runs on a CPU, a GPU box or a TPU pod.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
# Axes that split parameters (over 'data' every device holds a full copy, by design).
PARAM_AXES = ("fsdp", "tensor")

# logical name -> mesh axis (or axes, or None = replicated). First match wins.
RULES: tuple[tuple[str, Any], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    # language model
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    # vision towers: small (0.4B), FSDP-sharded on width, tensor-parallel on heads/MLP
    ("vit_embed", "fsdp"),
    ("vit_heads", "tensor"),
    ("vit_mlp", "tensor"),
    ("vit_tokens", None),
    ("vit_h", None),
    ("vit_w", None),
    ("qkv", None),
    ("rel_pos", None),
    ("conv_h", None),
    ("conv_w", None),
    ("conv_in", None),
    # Conv kernels stay replicated (a few MB): with output channels sharded on 'tensor',
    # XLA:CPU's SPMD partitioner (jax 0.10.2) returned wrong convolution results
    # (tests/test_sharding.py caught it), and the convs are too small to need sharding.
    ("conv_out", None),
    ("scalar", None),
    ("lora_rank", None),  # an adapter's rank dimension (a few to a few hundred)
    ("lora_adapters", None),  # adapters served together, stacked (serving)
)


def make_mesh(
    shape: Sequence[int] | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """A (data, fsdp, tensor) mesh. Default: every device on 'fsdp'.

  One size may be -1: it takes all remaining devices.
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = list(shape if shape is not None else (1, -1, 1))
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: at most one -1")
  if -1 in shape:
    known = int(np.prod([s for s in shape if s != -1]))
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(
        f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, "
        f"{len(devices)} available"
    )
  return jax.make_mesh(
      tuple(shape), MESH_AXES, devices=devices, axis_types=(AxisType.Auto,) * len(MESH_AXES)
  )


def logical_to_mesh(logical_specs: Any, mesh: Mesh, rules=RULES, shapes: Any = None) -> Any:
  """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`.

  With `shapes` (a tree of arrays or ShapeDtypeStructs like the specs), a dimension
  that its mesh axes do not divide is replicated instead (see `fit_to_shape`).
  """
  if shapes is None:
    return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))
  return jax.tree.map(
      lambda spec, a: fit_to_shape(spec, a.shape, mesh, rules)[0],
      logical_specs,
      shapes,
      is_leaf=_is_spec,
  )


def _is_spec(x) -> bool:
  return isinstance(x, PartitionSpec)


def fit_to_shape(
    logical: PartitionSpec, shape: Sequence[int], mesh: Mesh, rules=RULES
) -> tuple[NamedSharding, list[str]]:
  """One array's sharding by the rules, and why any dimension stays replicated.

  A dimension whose size its mesh axes do not divide is replicated (e.g. 2 key/value
  heads on a tensor axis of 4); the reason names the logical axis and the sizes.
  """
  axes = nn.logical_to_mesh_axes(logical, list(rules))
  fitted, why = [], []
  for name, dim, ax in zip(logical, shape, axes):
    if ax is None:
      fitted.append(None)
      continue
    names = ax if isinstance(ax, tuple) else (ax,)
    n = int(np.prod([mesh.shape[a] for a in names]))
    if dim % n:
      fitted.append(None)
      why.append(f"'{name}' ({dim}) does not split over {'x'.join(names)} ({n})")
    else:
      fitted.append(ax)
  return NamedSharding(mesh, PartitionSpec(*fitted)), why


def activation_rules(rules=RULES):
  """Context manager that lets `nn.with_logical_constraint` resolve logical names."""
  return nn.logical_axis_rules(list(rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
