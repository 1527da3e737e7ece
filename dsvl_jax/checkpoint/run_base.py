"""A LoRA run's frozen base: named by the run, not copied into each of its checkpoints.

A run with adapters (model.compute.lora.rank > 0) saves under each step's `params` only
what it trains (the adapters and any group trained in full). Its base is named in

  WORKDIR/base.json   {"path": a checkpoint dsvl_jax.load reads (absolute),
                       "fingerprint": sums over its parameters (`fingerprint`)}

A base that is no checkpoint yet (a random init, or train.init_groups mixing several)
is written once, to WORKDIR/base. Whoever reads the run (the trainer resuming,
dsvl_jax.load, convert export) reads the base from there, quantises it as the run's
config says (QLoRA), checks its fingerprint (a base changed since the run started is
refused) and lays the saved leaves over it.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from dsvl_jax.config.schema import ConfigError
from dsvl_jax.models import lora
from dsvl_jax.models.config import VLMConfig

BASE_FILE = "base.json"
BASE_DIR = "base"
# The fingerprint is summed in float32, in an order that depends on the sharding: a
# relative tolerance, far below what any change of a trained model's weights moves.
FINGERPRINT_RTOL = 1e-4


def fingerprint(params: Any) -> list[float]:
  """[sum of |x|, sum of x^2] over every float leaf, each value rounded to bfloat16
  first (so a base read in float32 or bfloat16 gives the same): a cheap check that a
  base is the one the run started from (one pass over the weights, wherever they sit)."""
  leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.floating)]

  def sums(xs):
    xs = [x.astype(jnp.bfloat16).astype(jnp.float32) for x in xs]
    return jnp.stack([sum(jnp.sum(jnp.abs(x)) for x in xs), sum(jnp.sum(x * x) for x in xs)])

  return [float(v) for v in jax.device_get(jax.jit(sums)(leaves))]


def read(workdir: str | pathlib.Path) -> dict | None:
  """WORKDIR/base.json's {"path", "fingerprint"}, or None for a run that saves whole."""
  f = pathlib.Path(workdir) / BASE_FILE
  return json.loads(f.read_text()) if f.is_file() else None


def write(workdir: str | pathlib.Path, path: str | pathlib.Path, print_: list[float]) -> None:
  """Names the base (process 0 writes)."""
  if jax.process_index() == 0:
    ref = {"path": str(pathlib.Path(path).absolute()), "fingerprint": print_}
    (pathlib.Path(workdir) / BASE_FILE).write_text(json.dumps(ref, indent=2) + "\n")


def matches(got: list[float], want: list[float]) -> bool:
  """Whether two fingerprints are of the same parameters (to their summing's rounding)."""
  return len(got) == len(want) and all(
      math.isclose(g, w, rel_tol=FINGERPRINT_RTOL) for g, w in zip(got, want)
  )


def check(ref: dict, base: Any, workdir: str | pathlib.Path) -> None:
  """Refuses a base whose fingerprint is not the one the run recorded."""
  got, want = fingerprint(base), ref["fingerprint"]
  if not matches(got, want):
    raise ConfigError(
        f"{workdir}: its base {ref['path']} has changed since the run started (parameter "
        f"sums {got} against {want} recorded in {BASE_FILE}); restore that base or "
        f"start a new run"
    )


def plain(cfg: VLMConfig) -> VLMConfig:
  """The base's config: `cfg` without adapters (nor their quantised kernels)."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  return cfg.replace(compute=dataclasses.replace(cfg.compute, lora=type(cfg.compute.lora)()))


def saved_paths(params_dir: str | pathlib.Path) -> list[str]:
  """The leaves ('a/b/c') a step's params folder holds, from its orbax metadata."""
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(pathlib.Path(params_dir).absolute()).item_metadata
  return sorted(lora.flatten(meta.tree if hasattr(meta, "tree") else meta))


def compose(cfg: VLMConfig, base: Any, params_dir: str | pathlib.Path, abstract: Any) -> Any:
  """The run's parameters: `base` (float, the plain config's tree), its adapted kernels
  quantised as cfg says, under the leaves saved in params_dir, restored onto `abstract`
  (the whole tree's ShapeDtypeStructs)."""
  if cfg.compute.lora.base_quant != "none":
    base = lora.quantized(base, cfg)
  flat_abstract = lora.flatten(abstract)
  target = lora.unflatten({k: flat_abstract[k] for k in saved_paths(params_dir)})
  with ocp.StandardCheckpointer() as ckptr:
    saved = ckptr.restore(pathlib.Path(params_dir).absolute(), target)
  return lora.merge(base, saved)
