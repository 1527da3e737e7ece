"""Ahead-of-time compilation of the real sharded train step for a TPU topology.

With `libtpu` installed, `jax.experimental.topologies.get_topology_desc` describes a
TPU slice (v5p:4x4x4, v5e:16x16, ...) as abstract devices on any host; the trainer's
step (trainer.py: the same jit, shardings and mesh as a real run) lowers and compiles
for them from ShapeDtypeStructs, allocating nothing. XLA then reports per-chip memory
(`memory_analysis()`) and FLOPs (`cost_analysis()`): whether a stage config fits a
slice is known before anyone books one. experiments/aot_compile.py is the CLI.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from dsvl_jax.data.mixing import MULTIMODAL, TEXT
from dsvl_jax.runtime import sharding
from dsvl_jax.train import flops as flops_lib
from dsvl_jax.train import partitioning
from dsvl_jax.train.trainer import Trainer

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
  hbm_bytes: int  # per chip
  peak_flops: float  # dense bf16 FLOP/s per chip (dsvl_jax/runtime/perf.py table)


# Published per-chip HBM and bf16 peak (Cloud TPU system architecture pages).
CHIPS = {
    "v4": Chip(32 * GIB, 275e12),
    "v5e": Chip(16 * GIB, 197e12),
    "v5p": Chip(95 * GIB, 459e12),
    "v6e": Chip(32 * GIB, 918e12),
}


def topology_devices(topology: str) -> tuple[list[Any], Chip]:
  """'v5p:4x4x4' -> (the slice's abstract devices, its chip)."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

  kind = topology.split(":")[0]
  if kind not in CHIPS:
    raise ValueError(f"unknown TPU generation {kind!r} in {topology!r}; known: {sorted(CHIPS)}")
  dims = [int(x) for x in topology.split(":")[1].split("x")]
  kwargs = {}
  if len(dims) == 2 and dims[0] * dims[1] < 4:  # below a host's 2x2: the slice is the host
    kwargs["chips_per_host_bounds"] = [*dims, 1]
  desc = topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs)
  return list(desc.devices), CHIPS[kind]


def abstract_batch(trainer: Trainer, modality: str) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch a step of `modality` receives (the pipeline's dtypes), sharded."""
  d = trainer.run_cfg.data
  s = trainer.layout.image.image_size
  b, t = d.global_batch_size, d.seq_len
  m = d.max_images_per_row if modality == MULTIMODAL else 0
  spec = partitioning.batch_sharding(trainer.mesh)
  i32, f32 = jnp.int32, jnp.float32
  shapes = {
      "inputs": ((b, t), i32),
      "targets": ((b, t), i32),
      "weights": ((b, t), f32),
      "segment_ids": ((b, t), i32),
      "positions": ((b, t), i32),
      "images": ((b, m, 3, s, s), f32),
  }
  return {
      k: jax.ShapeDtypeStruct(shape, dtype, sharding=spec) for k, (shape, dtype) in shapes.items()
  }


def full_batch_shape(trainer: Trainer, modality: str) -> flops_lib.BatchShape:
  """The model work of a step whose rows are full: packed rows count as one document
  per row (the attention term's upper bound), every image slot used."""
  d = trainer.run_cfg.data
  b, t = d.global_batch_size, d.seq_len
  m = d.max_images_per_row if modality == MULTIMODAL else 0
  return flops_lib.BatchShape(tokens=b * t, segment_sq=b * t * t, images=b * m)


@dataclasses.dataclass
class AotResult:
  topology: str
  chips: int
  mesh: dict[str, int]
  modality: str
  compile_seconds: float
  argument_bytes: int  # per chip: state + batch
  output_bytes: int
  alias_bytes: int  # outputs written in place of donated arguments (the state)
  temp_bytes: int  # activations and other temporaries
  hbm_bytes: int
  xla_flops: float  # per chip, XLA's cost analysis
  formula_flops: float  # per chip, flops.step_flops (BUILD.md) of a full batch
  peak_flops: float
  report: str  # the trainer's start-up memory report
  kernels: tuple[str, ...]  # splash kernels in the compiled program (forward, dq, dkv)

  @property
  def total_bytes(self) -> int:
    """Peak per chip: arguments + temporaries + outputs not aliased to arguments."""
    return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

  def mfu_at(self, step_seconds: float) -> float:
    return self.formula_flops / (step_seconds * self.peak_flops)

  def table(self, step_seconds: float | None = None) -> str:
    rows = [
        ("arguments (state + batch)", self.argument_bytes),
        ("outputs not aliased to inputs", self.output_bytes - self.alias_bytes),
        ("temporaries", self.temp_bytes),
        ("total", self.total_bytes),
        ("chip HBM", self.hbm_bytes),
    ]
    lines = [
        f"{self.topology} ({self.chips} chips), mesh {self.mesh}, {self.modality} "
        f"step, compiled in {self.compile_seconds:.0f} s",
        "| per chip | GiB |",
        "|---|---|",
    ]
    lines += [f"| {name} | {n / GIB:.2f} |" for name, n in rows]
    lines.append(
        f"fits: {'yes' if self.total_bytes <= self.hbm_bytes else 'NO'} "
        f"({self.total_bytes / self.hbm_bytes:.0%} of HBM)"
    )
    # XLA's cost analysis counts a loop body once (the scanned layers, the micro-batch
    # scan) and cannot see into Pallas kernels, so only the formula is the MFU numerator.
    lines.append(
        f"FLOPs per chip and step: formula {self.formula_flops:.3e}; XLA's cost "
        f"analysis {self.xla_flops:.3e} (one iteration of each scanned loop"
        + (", without the Pallas kernels" if self.kernels else "")
        + ")"
    )
    lines.append(
        f"100% MFU would be {self.formula_flops / self.peak_flops:.2f} s/step; "
        f"50% MFU {2 * self.formula_flops / self.peak_flops:.2f} s/step"
    )
    if self.kernels:
      lines.append(f"Pallas kernels: {', '.join(self.kernels)}")
    if step_seconds:
      lines.append(
          f"at {step_seconds:g} s/step this is {self.mfu_at(step_seconds):.1%} MFU "
          f"(formula FLOPs / (step time x {self.peak_flops / 1e12:.0f} TFLOP/s))"
      )
    return "\n".join(lines)


def compile_step(
    config: ml_collections.ConfigDict, topology: str, modality: str = MULTIMODAL
) -> AotResult:
  """Compiles `config`'s train step for `topology` (e.g. 'v5p:2x2x2')."""
  if modality not in (TEXT, MULTIMODAL):
    raise ValueError(f"modality {modality!r} not in {(TEXT, MULTIMODAL)}")
  devices, chip = topology_devices(topology)
  trainer = Trainer(config, "/dev/null/aot", devices=devices)
  batch = abstract_batch(trainer, modality)
  t0 = time.perf_counter()
  with jax.set_mesh(trainer.mesh), sharding.activation_rules():
    compiled = trainer._step.lower(trainer.state_abstract, batch).compile()  # pylint: disable=protected-access
  seconds = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  n = len(devices)
  formula = flops_lib.step_flops(
      trainer.run_cfg.model, trainer.run_cfg.train.trainable, full_batch_shape(trainer, modality)
  )
  return AotResult(
      topology=topology,
      chips=n,
      mesh=dict(trainer.mesh.shape),
      modality=modality,
      compile_seconds=seconds,
      argument_bytes=mem.argument_size_in_bytes,
      output_bytes=mem.output_size_in_bytes,
      alias_bytes=mem.alias_size_in_bytes,
      temp_bytes=mem.temp_size_in_bytes,
      hbm_bytes=chip.hbm_bytes,
      xla_flops=float(cost.get("flops", 0.0)),
      formula_flops=formula / n,
      peak_flops=chip.peak_flops,
      report=trainer.memory_report.text(),
      kernels=tuple(sorted(set(re.findall(r"splash_mqa_[a-z_]+", compiled.as_text())))),
  )
