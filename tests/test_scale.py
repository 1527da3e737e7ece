"""Sharded training: one step on every mesh equals one device; the start-up report;
checkpoints restored onto other meshes (8 simulated CPU devices, conftest.py)."""

import functools

import chex
import jax
import numpy as np
import pytest

from dsvl_jax.data.pipeline import TrainDataset
from dsvl_jax.train import partitioning
from dsvl_jax.train.step import BATCH_KEYS
from dsvl_jax.train.trainer import Trainer
from train_fixtures import run_config

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 devices (conftest "
                                "simulates 8 on CPU; a single-accelerator run has 1)")

MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 2, 4)]


def _config(family, shape, **fields):
  """8 packed rows, every step multimodal (images in most rows), all groups trained."""
  return run_config(family, **{
      "mesh.shape": shape or (1, 1, 1), "mesh.num_devices": 8 if shape else 1,
      "data.global_batch_size": 8, "data.schedule": "constant",
      "data.multimodal_share": 1.0, "train.trainable": ("llm", "aligner", "siglip"),
      # Adam's first update is g / (|g| + eps): with eps 1e-8 a gradient of 1e-9, whose
      # float32 sum order differs between meshes, can move by a whole step. eps 1e-6
      # keeps the comparison about the sharding, not about Adam's conditioning.
      "optimizer.eps": 1e-6, **fields})


@functools.lru_cache(maxsize=None)
def _batch(family):
  c = _config(family, None)
  trainer = Trainer(c, "/nonexistent")  # the workdir is not touched without run()
  it = iter(TrainDataset(trainer.run_cfg.data, trainer.layout))
  host = next(it)
  it.close()
  assert host["modality"] == "multimodal" and host["images"].shape[1] > 0
  assert (host["segment_ids"].max(1) > 1).any(), "rows are packed"
  return {k: host[k] for k in BATCH_KEYS}


@functools.lru_cache(maxsize=None)
def _one_step(family, shape):
  trainer = Trainer(_config(family, shape), "/nonexistent")
  state = jax.jit(trainer._init_state, out_shardings=trainer.state_sharding)(  # pylint: disable=protected-access
      trainer.initial_params())
  batch = partitioning.put_batch(_batch(family), trainer.mesh)
  new, metrics = trainer.compiled_step(state, "multimodal", batch)(state, batch)
  return trainer, jax.device_get((metrics["loss"], new.params, new.opt_state))


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_one_step_on_a_mesh_equals_one_device(family, shape):
  _, (loss1, params1, opt1) = _one_step(family, None)
  trainer, (loss, params, opt) = _one_step(family, shape)
  assert trainer.mesh.devices.shape == shape
  np.testing.assert_allclose(loss, loss1, rtol=1e-6)
  # The first Adam step is lr g / (|g| + eps): where |g| is near eps (embedding rows of
  # tokens seen once or twice) a float32 difference in g from another summation order
  # moves the update by ~1e-6 (seen on one Intel host: 1.06e-6 at lr 1e-3). 1e-5 is 1%
  # of a full step; the gradients themselves are compared tightly below (mu, nu).
  chex.assert_trees_all_close(params, params1, atol=1e-5, rtol=1e-6)
  # Adam's mu and nu after one step are 0.1 g and 0.05 g^2: the gradients themselves,
  # each leaf to 1e-5 of its largest entry (measured: 2e-6).
  for a, b in zip(jax.tree.leaves(opt), jax.tree.leaves(opt1)):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(np.max(np.abs(b))), rtol=0)


def test_state_really_is_sharded_and_the_report_says_what_is_not(family):
  trainer = Trainer(_config(family, (1, 2, 4)), "/nonexistent")
  s = trainer.state_sharding.params
  q = s["llm"]["layers"]["q_proj"]["kernel"]  # [layers, embed, heads, head_dim]
  assert q.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  # 2 key/value heads do not split over tensor = 4: replicated on that axis, reported
  k = s["llm"]["layers"]["k_proj"]["kernel"]
  assert k.spec == jax.sharding.PartitionSpec(None, "fsdp", None, None)
  report = trainer.memory_report
  total, per = report.param_bytes_total, report.param_bytes_per_device
  assert total / 8 < per < total / 2  # mostly split 8 ways, some replicated
  # Adam holds mu and nu of the trained groups only, sharded like their parameters
  # (and a few step counters): SAM is frozen in the hybrid family
  assert report.opt_bytes_per_device <= 2 * per + 64
  if family == "hybrid":
    assert report.opt_bytes_per_device < 2 * per
  from dsvl_jax.train.memory_report import memory_report
  from dsvl_jax.models.init import logical_axes
  abstract = trainer.state_abstract
  full = memory_report(abstract.params, s, logical_axes(trainer.run_cfg.model),
                       abstract.opt_state, trainer.state_sharding.opt_state, trainer.mesh,
                       min_bytes=0)
  whys = {r.path: r.why for r in full.replicated}
  assert whys["llm/layers/k_proj/kernel"] == (
      "over tensor: 'kv_heads' (2) does not split over tensor (4)")
  assert "llm/layers/q_proj/kernel" not in whys  # split over fsdp and tensor
  norm = [w for p, w in whys.items() if p.endswith("input_norm/scale")]
  assert norm and "maps to fsdp" in norm[0] and "maps to tensor" in norm[0]
  assert "per device" in report.text()
