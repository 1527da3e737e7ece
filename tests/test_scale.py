"""Sharded training: one step on every mesh equals one device; the start-up report;
checkpoints restored onto other meshes (8 simulated CPU devices, conftest.py)."""

import functools
import json

import chex
import jax
import numpy as np
import pytest
from train_fixtures import run_config

from dsvl_jax.data.pipeline import TrainDataset
from dsvl_jax.train import aot, partitioning
from dsvl_jax.train import flops as flops_lib
from dsvl_jax.train.step import BATCH_KEYS
from dsvl_jax.train.trainer import Trainer

pytestmark = pytest.mark.skipif(
    len(jax.devices()) < 8,
    reason="needs 8 devices (conftest simulates 8 on CPU; a single-accelerator run has 1)",
)

MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 2, 4)]


def _config(family, shape, **fields):
  """8 packed rows, every step multimodal (images in most rows), all groups trained."""
  return run_config(
      family,
      **{
          "mesh.shape": shape or (1, 1, 1),
          "mesh.num_devices": 8 if shape else 1,
          "data.global_batch_size": 8,
          "data.schedule": "constant",
          "data.multimodal_share": 1.0,
          "train.trainable": ("llm", "aligner", "siglip"),
          # Adam's first update is g / (|g| + eps): with eps 1e-8 a gradient of 1e-9, whose
          # float32 sum order differs between meshes, can move by a whole step. eps 1e-6
          # keeps the comparison about the sharding, not about Adam's conditioning.
          "optimizer.eps": 1e-6,
          **fields,
      },
  )


@functools.lru_cache(maxsize=None)
def _host(family):
  """The pipeline's first batch (the same on every mesh: one host reads them all)."""
  c = _config(family, None)
  trainer = Trainer(c, "/nonexistent")  # the workdir is not touched without run()
  it = iter(TrainDataset(trainer.run_cfg.data, trainer.layout))
  host = next(it)
  it.close()
  assert host["modality"] == "multimodal" and host["images"].shape[1] > 0
  assert (host["segment_ids"].max(1) > 1).any(), "rows are packed"
  return host


def _batch(family):
  return {k: _host(family)[k] for k in BATCH_KEYS}


@functools.lru_cache(maxsize=None)
def _one_step(family, shape):
  trainer = Trainer(_config(family, shape), "/nonexistent")
  state = jax.jit(trainer._init_state, out_shardings=trainer.state_sharding)(  # pylint: disable=protected-access
      trainer.initial_params()
  )
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
  from dsvl_jax.models.init import logical_axes
  from dsvl_jax.train.memory_report import memory_report

  abstract = trainer.state_abstract
  full = memory_report(
      abstract.params,
      s,
      logical_axes(trainer.run_cfg.model),
      abstract.opt_state,
      trainer.state_sharding.opt_state,
      trainer.mesh,
      min_bytes=0,
  )
  whys = {r.path: r.why for r in full.replicated}
  assert whys["llm/layers/k_proj/kernel"] == (
      "over tensor: 'kv_heads' (2) does not split over tensor (4)"
  )
  assert "llm/layers/q_proj/kernel" not in whys  # split over fsdp and tensor
  norm = [w for p, w in whys.items() if p.endswith("input_norm/scale")]
  assert norm and "maps to fsdp" in norm[0] and "maps to tensor" in norm[0]
  assert "per device" in report.text()


def test_logged_mfu_is_the_causal_formula_over_every_devices_peak(tmp_path):
  """One step on (1, 8, 1): the logged MFU against the FLOPs counted by hand for the
  batch it read (attention causal: half of each segment's n^2 pairs; the full count is
  what tests/test_train.py checks against XLA) over the logged step time x 8 devices x
  the configured peak (1e11)."""
  c = _config("siglip", (1, 8, 1), **{"train.steps": 1})
  trainer = Trainer(c, tmp_path)
  trainer.run()
  row = next(
      r
      for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
      if "mfu" in r
  )
  host = _host("siglip")
  shape = flops_lib.BatchShape.of(host["segment_ids"], host["num_images"])
  assert shape.images > 0 and shape.segment_sq < shape.tokens * host["segment_ids"].shape[1]
  llm = trainer.run_cfg.model.llm
  trainable = trainer.run_cfg.train.trainable
  full = flops_lib.step_flops(trainer.run_cfg.model, trainable, shape, causal=False)
  # The LLM is trained (3x its forward); causal attention does half of the full count.
  causal_half = 3 * llm.num_layers * 4 * llm.num_heads * llm.head_dim * shape.segment_sq / 2
  flops = full - causal_half
  assert row["model_flops_per_s"] * row["step_time_s"] == pytest.approx(flops, rel=1e-9)
  assert trainer.mesh.size == 8
  assert row["mfu"] == pytest.approx(flops / (row["step_time_s"] * 8 * 1e11), rel=1e-9)


def test_fsdp_splits_the_activations_over_the_devices_not_only_the_parameters():
  """The rule table maps 'batch' to (data, fsdp): on (1, 8, 1) each device computes 1 of
  the 8 rows. Mapped to 'data' alone the numbers stay the same (every test above
  passes) but activations are gathered whole onto every device. XLA's temporaries of
  the compiled step per device, single device 56.8 MB: (1, 8, 1) 7.4 MB (0.13 of it);
  with 'batch' -> 'data' 19.8 MB (0.35) and 3x the all-reduces (jax 0.10.2, CPU)."""

  def temp_bytes(shape):
    trainer = Trainer(_config("siglip", shape), "/nonexistent")
    batch = aot.abstract_batch(trainer, "text")  # compiled only; nothing is allocated
    exe = trainer.compiled_step(trainer.state_abstract, "text", batch)
    return exe.memory_analysis().temp_size_in_bytes

  one, fsdp = temp_bytes(None), temp_bytes((1, 8, 1))
  assert fsdp < 0.25 * one, f"(1, 8, 1) holds {fsdp / one:.2f} of one device's temporaries"
