"""Which parameters a stage trains, by parameter path (paper 3.2, Table 4).

Every parameter belongs to exactly one group (models/groups.py: "vision/sam/neck/conv1/
kernel" is `sam_neck`, not `sam`). A stage trains the groups
named in `train.trainable`:

  stage 1   aligner                   (both towers and the LLM frozen)
  stage 2   llm, aligner              (towers frozen)
  stage 3   llm, aligner, siglip      (SAM frozen; add sam_neck to train its neck, the
                                       HD neck, the downsample convs and the HD alpha)

Training `sam` trains all of SAM, neck included. With low-rank adapters
(model.compute.lora, models/lora.py) a group is trained in full, through its adapters
(when it holds any: its base then frozen), or frozen. Frozen parameters are not arguments of
the differentiated function (no gradient is computed for them) and hold no optimizer
state; `partition` / `merge` split and rejoin the tree (None marks the other part).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import traverse_util

from dsvl_jax.config.schema import ConfigError
from dsvl_jax.models import lora
from dsvl_jax.models.groups import group_of


def group_labels(params: Any) -> Any:
  """The group name of every leaf (same tree structure as params)."""
  flat = traverse_util.flatten_dict(params, sep="/")
  return traverse_util.unflatten_dict({k: group_of(k) for k in flat}, sep="/")


def group_mask(params: Any, groups: Sequence[str], field: str = "train.trainable") -> Any:
  """Tree of bools: True where the leaf's group is in `groups` ('sam' implies
  'sam_neck'), adapters included.

  Raises a ConfigError naming `field` for a group this model does not have (say 'sam'
  for the SigLIP-only 1.3B family).
  """
  chosen = set(groups) | ({"sam_neck"} if "sam" in groups else set())
  labels = group_labels(params)
  present = set(jax.tree.leaves(labels))
  missing = sorted(set(groups) - present)
  if missing:
    raise ConfigError(
        f"config field '{field}': {missing} match no parameter of "
        f"this model (its groups: {sorted(present)})"
    )
  return jax.tree.map(lambda g: g in chosen, labels)


def trainable_mask(params: Any, trainable: Sequence[str]) -> Any:
  """Tree of bools: what a stage trains. A group of `train.trainable` is trained in full,
  unless it holds adapters (model.compute.lora): then only its adapters are, its base
  frozen. Adapters in a group that is not trained are a ConfigError."""
  chosen = group_mask(params, trainable)
  flat = traverse_util.flatten_dict(params, sep="/")
  adapted = {group_of(k) for k in flat if lora.is_adapter(k)}
  idle = sorted(adapted - set(trainable) - ({"sam_neck"} if "sam" in trainable else set()))
  if idle:
    raise ConfigError(
        f"config field 'model.compute.lora.targets': adapters in {idle}, which "
        f"train.trainable={tuple(trainable)} does not train"
    )
  keep = {k: lora.is_adapter(k) or group_of(k) not in adapted for k in flat}
  return jax.tree.map(lambda m, k: m and k, chosen, traverse_util.unflatten_dict(keep, sep="/"))


def partition(tree: Any, mask: Any) -> tuple[Any, Any]:
  """(leaves where mask, None elsewhere), (the rest, None elsewhere)."""
  a = jax.tree.map(lambda x, m: x if m else None, tree, mask)
  b = jax.tree.map(lambda x, m: None if m else x, tree, mask)
  return a, b


def merge(a: Any, b: Any) -> Any:
  """Inverse of `partition`."""
  return jax.tree.map(lambda x, y: y if x is None else x, a, b, is_leaf=lambda x: x is None)


def count(tree: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def nbytes(tree: Any) -> int:
  """Bytes of the arrays (or ShapeDtypeStructs) in `tree`, as stored."""
  return int(sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))
