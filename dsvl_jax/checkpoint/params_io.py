"""Our parameter checkpoint: an orbax PyTree checkpoint plus the model config as JSON.

  DIR/dsvl_jax_config.json   VLMConfig.to_dict() and a format version
  DIR/params/                orbax StandardCheckpointer (tensorstore/zarr), any sharding
  DIR/<tokenizer files>      copied from the source checkpoint when present

A training workdir (dsvl_jax/train/checkpoints.py) holds the same parameter format
under WORKDIR/checkpoints/<step>/params, with the model config inside the run's
WORKDIR/config.json; `training_checkpoint` finds both, so a workdir (its latest step) or
one of its step folders loads and exports like any checkpoint.

Restoring targets an abstract tree (shapes, dtypes, shardings), so each device reads
only its own shards.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from dsvl_jax.models.config import VLMConfig

CONFIG_NAME = "dsvl_jax_config.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 1
SAVE_CONCURRENT_GB = 1


RUN_CONFIG = "config.json"  # a training run's config, in its workdir
TRAIN_CHECKPOINTS = "checkpoints"


def latest_params_dir(workdir: str | pathlib.Path) -> pathlib.Path | None:
  """WORKDIR/checkpoints/<latest step>/params, or None when nothing was saved yet.
  (orbax writes a step under a temporary name and renames it when complete.)"""
  root = pathlib.Path(workdir) / TRAIN_CHECKPOINTS
  if not root.is_dir():
    return None
  steps = sorted(
      int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / PARAMS_DIR).is_dir()
  )
  return root / str(steps[-1]) / PARAMS_DIR if steps else None


def training_checkpoint(path: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path] | None:
  """(params dir, workdir) for a training workdir or one of its step folders, else None."""
  path = pathlib.Path(path)
  if (path / TRAIN_CHECKPOINTS).is_dir() and (path / RUN_CONFIG).is_file():
    params = latest_params_dir(path)
    if params is None:
      raise FileNotFoundError(f"training workdir {path} has no finished checkpoint yet")
    return params, path
  workdir = path.parent.parent
  if (
      (path / PARAMS_DIR).is_dir()
      and path.parent.name == TRAIN_CHECKPOINTS
      and (workdir / RUN_CONFIG).is_file()
  ):
    return path / PARAMS_DIR, workdir
  return None


def read_run_model_config(workdir: str | pathlib.Path) -> VLMConfig:
  data = json.loads((pathlib.Path(workdir) / RUN_CONFIG).read_text())
  return VLMConfig.from_dict(data["model"])


def is_checkpoint(path: str | pathlib.Path) -> bool:
  path = pathlib.Path(path)
  return (path / CONFIG_NAME).exists() and (path / PARAMS_DIR).is_dir()


def write_config(path: pathlib.Path, cfg: VLMConfig) -> None:
  (path / CONFIG_NAME).write_text(
      json.dumps({"format_version": FORMAT_VERSION, "model": cfg.to_dict()}, indent=2) + "\n"
  )


def read_config(path: str | pathlib.Path) -> VLMConfig:
  data = json.loads((pathlib.Path(path) / CONFIG_NAME).read_text())
  return VLMConfig.from_dict(data["model"])


def stored_config(path: str | pathlib.Path) -> VLMConfig | None:
  """The model config of our checkpoint or of a training workdir or step; None for
  anything else (a PyTorch directory)."""
  trained = training_checkpoint(path)
  if trained is not None:
    return read_run_model_config(trained[1])
  return read_config(path) if is_checkpoint(path) else None


def save(path: str | pathlib.Path, params: Any, cfg: VLMConfig) -> None:
  """Writes params + config into `path` (which must not exist yet)."""
  path = pathlib.Path(path).absolute()
  path.mkdir(parents=True)
  write_config(path, cfg)
  # Bounded bytes in flight: orbax stages host copies of what it writes, and its
  # default (96 GB) lets a whole model's worth pile up next to the parameters. The
  # bound must admit the largest single array.
  largest = max(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  concurrent_gb = max(SAVE_CONCURRENT_GB, math.ceil(largest / 1e9))
  with ocp.StandardCheckpointer(save_concurrent_gb=concurrent_gb) as ckptr:
    ckptr.save(path / PARAMS_DIR, params)
    ckptr.wait_until_finished()


def restore(path: str | pathlib.Path, abstract: Any) -> Any:
  """Restores params onto `abstract` (ShapeDtypeStructs, with .sharding when sharded);
  dtypes are cast to the abstract ones."""
  return restore_params_dir(pathlib.Path(path) / PARAMS_DIR, abstract)


def restore_params_dir(params_dir: str | pathlib.Path, abstract: Any) -> Any:
  """`restore` given the params folder itself (ours, or a training step's)."""
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(pathlib.Path(params_dir).absolute(), abstract)


def abstract_like(abstract: Any, dtype: Any, shardings: Any = None) -> Any:
  """ShapeDtypeStructs with float leaves in a new dtype and (optionally) shardings. A
  quantised kernel's leaves keep theirs: integer codes, and float32 scales (the
  model's Dense creates them float32 whatever its param_dtype, models/quant.py)."""

  def like(path, a, s):
    scale = [getattr(k, "key", None) for k in path[-2:]] == ["kernel_q", "scale"]
    cast = jnp.issubdtype(a.dtype, jnp.floating) and not scale
    return jax.ShapeDtypeStruct(a.shape, dtype if cast else a.dtype, sharding=s)

  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map_with_path(lambda p, a: like(p, a, device), abstract)
  return jax.tree_util.tree_map_with_path(like, abstract, shardings)
