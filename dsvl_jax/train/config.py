"""Typed, validated training configuration (`config.train`, `config.optimizer`, `config.mesh`).

Built once at start-up from the ml_collections data in configs/*.py; a wrong field fails
there with its dotted name, never at step 9000. No JAX import: the config check runs
before anything is compiled. The `default_*` functions give configs every field, so that
each can be overridden on the command line (ml_collections refuses a key it lacks).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

import ml_collections

from dsvl_jax.config.schema import ConfigError, build_dataclass, check, choices, with_defaults

# Parameter groups, by path (freezing.py holds the patterns). A group is trained when
# named in train.trainable; everything else is frozen and has no optimizer state.
Group = Literal["llm", "aligner", "siglip", "sam", "sam_neck"]
Schedule = Literal["cosine", "step", "constant"]  # step: DeepSeek-LLM's multi-step decay
Nonfinite = Literal["skip", "stop"]  # a non-finite loss/grad: skip the update | stop
GROUPS = choices(Group)

# Per-group learning-rate multipliers (1.0 = the schedule's rate): one float field per
# group, made from GROUPS so that a new group gets its scale (and its config key).
LRScales = dataclasses.make_dataclass(
    "LRScales",
    [(g, float, dataclasses.field(default=1.0)) for g in GROUPS],
    frozen=True,
    namespace={
        "__doc__": "Per-group learning-rate multipliers (1.0 = the schedule's rate).",
        "__module__": __name__,
    },
)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with global-norm clipping and a warm-up + decay schedule (paper Table 4)."""

  lr: float = 1e-3  # peak learning rate
  schedule: Schedule = "cosine"  # cosine | step (DeepSeek-LLM multi-step) | constant
  warmup_steps: int = 0  # linear warm-up: lr * (step + 1) / warmup_steps
  final_lr_fraction: float = 0.0  # cosine: rate at the last step, as a fraction of lr
  step_boundaries: tuple[float, ...] = (0.8, 0.9)  # step: fractions of train.steps ...
  step_factors: tuple[float, ...] = (0.316, 0.1)  # ... after which lr is multiplied by these
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.0  # decoupled; applied to matrices only (not norms, biases)
  grad_clip: float = 1.0  # global-norm clip over all trainable parameters; 0 = off
  lr_scales: LRScales = LRScales()

  def validate(self) -> "OptimizerConfig":
    check(self.lr > 0, "optimizer.lr", f"must be > 0, got {self.lr}")
    check(self.warmup_steps >= 0, "optimizer.warmup_steps", "must be >= 0")
    check(0.0 <= self.final_lr_fraction <= 1.0, "optimizer.final_lr_fraction", "must be in [0, 1]")
    check(
        len(self.step_boundaries) == len(self.step_factors),
        "optimizer.step_factors",
        f"{len(self.step_factors)} factors for {len(self.step_boundaries)} boundaries",
    )
    check(
        list(self.step_boundaries) == sorted(self.step_boundaries)
        and all(0.0 < b < 1.0 for b in self.step_boundaries),
        "optimizer.step_boundaries",
        f"increasing fractions in (0, 1), got {self.step_boundaries}",
    )
    check(all(f > 0 for f in self.step_factors), "optimizer.step_factors", "must be > 0")
    check(
        0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0, "optimizer.b1", "b1 and b2 must be in [0, 1)"
    )
    check(self.weight_decay >= 0, "optimizer.weight_decay", "must be >= 0")
    check(self.grad_clip >= 0, "optimizer.grad_clip", "must be >= 0 (0 = off)")
    for g in GROUPS:
      check(getattr(self.lr_scales, g) >= 0, f"optimizer.lr_scales.{g}", "must be >= 0")
    return self


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The loop: what is trained, for how long, how often it logs, saves and evaluates."""

  steps: int = 1000  # optimizer steps in total (a resumed run continues to this)
  trainable: tuple[Group, ...] = ("llm", "aligner")  # groups trained; the rest frozen
  init_from: str = ""  # "" random | any checkpoint dsvl_jax.load reads | a training workdir
  # group -> checkpoint: these groups' parameters come from another checkpoint (a stage
  # assembled from separately pretrained parts: towers from one run, LLM from another)
  init_groups: tuple[tuple[str, str], ...] = ()
  grad_accum_steps: int = 1  # micro-batches per step (global batch / this per pass)
  loss_chunk_tokens: int = 0  # sequence chunk for the vocabulary projection; 0 = whole row
  nonfinite: Nonfinite = "skip"  # non-finite loss/grad: skip the update | stop (after a save)
  log_every: int = 10  # steps between metric lines
  checkpoint_every: int = 1000  # steps between saves (also saved at the end and on SIGTERM)
  keep_checkpoints: int = 3  # the last N are kept
  async_checkpoints: bool = True  # orbax writes in the background while training goes on
  eval_every: int = 0  # steps between evaluations on config.eval.sets; 0 = never
  tensorboard: bool = True  # TensorBoard event files in the workdir
  progress: bool = True  # a console progress bar
  peak_flops: float = 0.0  # per-device peak for MFU; 0 = the device table, or measured on CPU

  def validate(self) -> "TrainConfig":
    check(self.steps >= 1, "train.steps", f"must be >= 1, got {self.steps}")
    check(len(self.trainable) > 0, "train.trainable", "train at least one group")
    for group, path in self.init_groups:
      check(group in GROUPS, f"train.init_groups.{group}", f"unknown group; known: {GROUPS}")
      check(bool(path), f"train.init_groups.{group}", "empty checkpoint path")
    check(self.grad_accum_steps >= 1, "train.grad_accum_steps", "must be >= 1")
    check(self.loss_chunk_tokens >= 0, "train.loss_chunk_tokens", "must be >= 0")
    for f in ("log_every", "checkpoint_every", "keep_checkpoints"):
      check(getattr(self, f) >= 1, f"train.{f}", "must be >= 1")
    check(self.eval_every >= 0, "train.eval_every", "must be >= 0 (0 = never)")
    check(self.peak_flops >= 0, "train.peak_flops", "must be >= 0 (0 = automatic)")
    return self


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  shape: tuple[int, ...] = (1, -1, 1)  # (data, fsdp, tensor); one entry may be -1
  num_devices: int = 0  # 0 = every device; N = the first N (one host only: tests, sharing)

  def validate(self) -> "MeshConfig":
    check(self.num_devices >= 0, "mesh.num_devices", "must be >= 0 (0 = all devices)")
    check(len(self.shape) == 3, "mesh.shape", f"(data, fsdp, tensor), got {self.shape}")
    check(list(self.shape).count(-1) <= 1, "mesh.shape", "at most one -1")
    check(all(s == -1 or s >= 1 for s in self.shape), "mesh.shape", "sizes >= 1 or -1")
    return self


def optimizer_config(d: Mapping[str, Any]) -> OptimizerConfig:
  return build_dataclass(
      OptimizerConfig, d, "optimizer", {(OptimizerConfig, "lr_scales"): LRScales}
  ).validate()


def train_config(d: Mapping[str, Any]) -> TrainConfig:
  d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
  groups = d.pop("init_groups", None) or {}
  if not isinstance(groups, Mapping):
    raise ConfigError("config field 'train.init_groups': expected a mapping group -> path")
  cfg = build_dataclass(TrainConfig, d, "train")
  return dataclasses.replace(
      cfg, init_groups=tuple(sorted((str(g), str(p)) for g, p in groups.items()))
  ).validate()


def mesh_config(d: Mapping[str, Any]) -> MeshConfig:
  return build_dataclass(MeshConfig, d, "mesh").validate()


def default_train_config(**overrides: Any) -> ml_collections.ConfigDict:
  """`config.train`: every TrainConfig field, its defaults under `overrides`;
  `init_groups` is a mapping group -> checkpoint (`--config.train.init_groups='{...}'`)."""
  return ml_collections.ConfigDict(
      with_defaults(TrainConfig, {"init_groups": {}, **overrides}, "train")
  )


def default_optimizer_config(**overrides: Any) -> ml_collections.ConfigDict:
  """`config.optimizer`: every OptimizerConfig field, its defaults under `overrides`
  (`lr_scales` too: a partial mapping keeps the other groups at 1.0)."""
  d = with_defaults(OptimizerConfig, overrides, "optimizer")
  d["lr_scales"] = with_defaults(
      LRScales, dict(overrides.get("lr_scales", {})), "optimizer.lr_scales"
  )
  return ml_collections.ConfigDict(d)


def default_mesh_config(**overrides: Any) -> ml_collections.ConfigDict:
  """`config.mesh`: every MeshConfig field, its defaults under `overrides`."""
  return ml_collections.ConfigDict(with_defaults(MeshConfig, overrides, "mesh"))
