"""Shardings of the train state and of batches, from the one logical-axis rule table.

Parameters are sharded by their logical axes (`sharding.RULES`). Optimizer state leaves
that mirror a parameter (Adam's mu and nu) take that parameter's sharding: they are
found by the parameter path that ends their own path and an equal shape. Everything
else in the optimizer state (step counts) is replicated. Batches are split over
('data', 'fsdp') on their leading axis.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dsvl_jax.runtime import sharding
from dsvl_jax.train.step import TrainState


def _dict_keys(path) -> tuple[str, ...]:
  """The trailing run of dict keys of a key path (a parameter's path inside a state)."""
  keys = []
  for entry in reversed(path):
    if not isinstance(entry, jax.tree_util.DictKey):
      break
    keys.append(str(entry.key))
  return tuple(reversed(keys))


def mirror_shardings(tree: Any, params_abstract: Any, params_sharding: Any, mesh: Mesh) -> Any:
  """Shardings for a tree (an optimizer state) whose leaves may mirror parameters."""
  by_path = {}
  for (path, a), s in zip(
      jax.tree_util.tree_leaves_with_path(params_abstract), jax.tree.leaves(params_sharding)
  ):
    by_path[_dict_keys(path)] = (a.shape, s)
  rep = sharding.replicated(mesh)

  def pick(path, leaf):
    keys = _dict_keys(path)
    for start in range(len(keys)):
      hit = by_path.get(keys[start:])
      if hit is not None and hit[0] == leaf.shape:
        return hit[1]
    return rep

  return jax.tree_util.tree_map_with_path(pick, tree)


def state_shardings(state_abstract: TrainState, param_logical: Any, mesh: Mesh) -> TrainState:
  params_sharding = sharding.logical_to_mesh(param_logical, mesh, shapes=state_abstract.params)
  rep = sharding.replicated(mesh)
  return TrainState(
      step=rep,
      params=params_sharding,
      opt_state=mirror_shardings(
          state_abstract.opt_state, state_abstract.params, params_sharding, mesh
      ),
      rng=rep,
      nonfinite=rep,
  )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (row) axis over ('data', 'fsdp'); the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def put_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's rows -> global arrays (`jax.make_array_from_process_local_data`)."""
  s = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(s, v) for k, v in batch.items()}
