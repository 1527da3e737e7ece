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
)


def make_mesh(shape: Sequence[int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
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
    raise ValueError(f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices, "
                     f"{len(devices)} available")
  return jax.make_mesh(tuple(shape), MESH_AXES, devices=devices,
                       axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_mesh(logical_specs: Any, mesh: Mesh, rules=RULES) -> Any:
  """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))


def activation_rules(rules=RULES):
  """Context manager that lets `nn.with_logical_constraint` resolve logical names."""
  return nn.logical_axis_rules(list(rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())
