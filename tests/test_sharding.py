"""The logical-axis rule table shards every parameter and leaves the math unchanged."""

import chex
import jax
import numpy as np
import pytest
from conftest import tiny_config

from dsvl_jax.models import DeepseekVL
from dsvl_jax.models.init import init_params, logical_axes
from dsvl_jax.runtime import sharding


def test_every_parameter_has_logical_axes(family):
  cfg = tiny_config(family)
  specs = jax.tree.leaves(
      logical_axes(cfg), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
  )
  shapes = jax.tree.leaves(init_params(cfg, jax.random.key(0)))
  assert len(specs) == len(shapes)
  rule_names = {name for name, _ in sharding.RULES}
  for spec, leaf in zip(specs, shapes):
    assert len(spec) == leaf.ndim, (spec, leaf.shape)
    assert all(name in rule_names for name in spec), f"{spec} has a name without a rule"


@pytest.mark.skipif(
    len(jax.devices()) < 8,
    reason="needs 8 devices (conftest simulates 8 on CPU; a single-accelerator run has 1)",
)
def test_sharded_forward_matches_single_device(family):
  cfg = tiny_config(family)
  params = init_params(cfg, jax.random.key(0))
  mesh = sharding.make_mesh((2, 2, 2))
  shardings = sharding.logical_to_mesh(logical_axes(cfg), mesh)
  sharded = jax.device_put(params, shardings)
  # Parameters really are split across devices.
  q = sharded["llm"]["layers"]["q_proj"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert q.addressable_shards[0].data.shape[1] == q.shape[1] // 2

  k = cfg.num_image_tokens
  ids = np.array([[1] + [cfg.image_token_id] * k + [3, 4, 5], [1, 6, 7, 8] + [10] * k])
  images = np.random.default_rng(0).random((1, 3, cfg.image_size, cfg.image_size), dtype=np.float32)

  def forward(p):
    return DeepseekVL(cfg).apply({"params": p}, ids, images)["logits"]

  expected = jax.jit(forward)(params)
  with jax.set_mesh(mesh), sharding.activation_rules():
    got = jax.jit(forward)(sharded)
  chex.assert_trees_all_close(got, expected, atol=1e-5, rtol=1e-5)


def test_make_mesh_validates_shape():
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.make_mesh((2, 4, 2))
  assert sharding.make_mesh((2, -1, 1)).shape == {"data": 2, "fsdp": 4, "tensor": 1}
