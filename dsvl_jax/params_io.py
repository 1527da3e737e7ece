"""Our parameter checkpoint: an orbax PyTree checkpoint plus the model config as JSON.

  DIR/dsvl_jax_config.json   VLMConfig.to_dict() and a format version
  DIR/params/                orbax StandardCheckpointer (tensorstore/zarr), any sharding
  DIR/<tokenizer files>      copied from the source checkpoint when present

Restoring targets an abstract tree (shapes, dtypes, shardings), so each device reads
only its own shards.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from dsvl_jax.models.config import VLMConfig

CONFIG_NAME = "dsvl_jax_config.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 1
SAVE_CONCURRENT_GB = 1


def is_checkpoint(path: str | pathlib.Path) -> bool:
  path = pathlib.Path(path)
  return (path / CONFIG_NAME).exists() and (path / PARAMS_DIR).is_dir()


def write_config(path: pathlib.Path, cfg: VLMConfig) -> None:
  (path / CONFIG_NAME).write_text(json.dumps(
      {"format_version": FORMAT_VERSION, "model": cfg.to_dict()}, indent=2) + "\n")


def read_config(path: str | pathlib.Path) -> VLMConfig:
  data = json.loads((pathlib.Path(path) / CONFIG_NAME).read_text())
  return VLMConfig.from_dict(data["model"])


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
  path = pathlib.Path(path).absolute()
  with ocp.StandardCheckpointer() as ckptr:
    return ckptr.restore(path / PARAMS_DIR, abstract)


def abstract_like(abstract: Any, dtype: Any, shardings: Any = None) -> Any:
  """ShapeDtypeStructs with a new dtype and (optionally) shardings."""
  if shardings is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype, sharding=device),
                        abstract)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype, sharding=s),
                      abstract, shardings)
