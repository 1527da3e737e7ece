"""QLoRA (model.compute.lora.base_quant): the NF4 levels are the published normal
quantiles; nf4 and int8 blockwise quantisation agree with a reference written here; a
QLoRA step equals a LoRA step on the dequantised base; the quantised base's bytes come
from the real tree; a QLoRA run keeps its codes and generates like its float twin."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm
from test_lora import PROJECTIONS, configs
from test_train import _final, fake_batch
from train_fixtures import run_config

from dsvl_jax.models import DeepseekVL, lora, quant
from dsvl_jax.models.init import init_params
from dsvl_jax.train import freezing
from dsvl_jax.train.config import optimizer_config
from dsvl_jax.train.optimizer import make_optimizer
from dsvl_jax.train.step import init_state, make_train_step
from dsvl_jax.train.trainer import Trainer


def test_the_nf4_levels_are_the_published_normal_quantiles():
  """QLoRA's construction (bitsandbytes create_normal_map, offset 0.9677083): 8 positive
  and 7 negative normal quantiles, zero, scaled to a maximum of 1."""
  offset = 0.9677083
  positive = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
  negative = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
  levels = np.sort(np.concatenate([positive, [0.0], negative]))
  levels /= levels.max()
  np.testing.assert_allclose(quant.NF4, levels, atol=2e-7)


def _reference(w, kind, block):
  """Blockwise absmax quantisation written out in numpy: (level indices or int8 codes,
  the dequantised array)."""
  *lead, n = w.shape
  x = w.astype(np.float64).reshape(*lead, n // block, block)
  absmax = np.abs(x).max(-1, keepdims=True)
  x = x / absmax
  if kind == "int8":
    codes = np.round(x * 127)
    deq = codes / 127 * absmax
  else:
    codes = np.abs(x[..., None] - quant.NF4.astype(np.float64)).argmin(-1)
    deq = quant.NF4[codes] * absmax
  return codes.reshape(*lead, n), deq.reshape(*lead, n)


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_blockwise_quantisation_matches_the_reference(kind):
  w = np.random.default_rng(0).normal(0, 0.02, (3, 64, 256)).astype(np.float32)
  w[0, 0, :64] = 0.0  # an all-zero block: scale 0, dequantised to 0
  stored = quant.quantize(jnp.asarray(w), kind, 64)
  codes = np.asarray(stored["codes"])
  if kind == "nf4":
    assert codes.dtype == np.uint8 and codes.shape == (3, 64, 128)
    codes = np.stack([codes >> 4, codes & 15], -1).reshape(3, 64, 256)  # high nibble first
  else:
    assert codes.dtype == np.int8 and codes.shape == (3, 64, 256)
  with np.errstate(invalid="ignore"):  # the zero block: 0 / 0, left out below
    ref_codes, ref_deq = _reference(w, kind, 64)
  ours = np.asarray(quant.dequantize(stored, kind))
  np.testing.assert_array_equal(codes[0, 0, :64], 7 if kind == "nf4" else 0)
  assert not ours[0, 0, :64].any()
  ok = np.abs(w).reshape(3, 64, 4, 64).max(-1).repeat(64, -1) > 0
  assert (codes == ref_codes)[ok].mean() > 0.9999  # ties at a midpoint may round apart
  np.testing.assert_allclose(ours[ok], ref_deq[ok], rtol=0, atol=1e-7)
  gap = 1 / 254 if kind == "int8" else np.diff(quant.NF4).max() / 2
  absmax = np.abs(w).reshape(3, 64, 4, 64).max(-1, keepdims=True)
  assert (np.abs(ours - w).reshape(3, 64, 4, 64) <= gap * absmax + 1e-7).all()


def _qlora(kind):
  base, cfg = configs("hybrid", base_quant=kind, quant_block=16)
  float_cfg = cfg.replace(
      compute=dataclasses.replace(
          cfg.compute, lora=dataclasses.replace(cfg.compute.lora, base_quant="none")
      )
  )
  return base, float_cfg, cfg


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_a_qlora_step_equals_lora_on_the_dequantised_base(kind):
  _, float_cfg, cfg = _qlora(kind)
  rng = np.random.default_rng(0)
  params = jax.tree.map(np.asarray, init_params(float_cfg, jax.random.key(0)))
  flat = lora.flatten(params)
  for k in flat:
    if k.endswith("lora_b"):
      flat[k] = rng.normal(0, 0.05, flat[k].shape).astype(np.float32)
  params = lora.unflatten(flat)
  q_params = lora.quantized(params, cfg)
  # The float twin: every adapted kernel replaced by its dequantised codes.
  twin = lora.flatten(params)
  for path, value in lora.flatten(q_params).items():
    if path.endswith("kernel_q/codes"):
      module = path[: -len("/kernel_q/codes")]
      stored = {"codes": value, "scale": lora.flatten(q_params)[module + "/kernel_q/scale"]}
      twin[module + "/kernel"] = np.asarray(quant.dequantize(stored, kind))
  twin = lora.unflatten(twin)
  assert {p.rsplit("/", 2)[0] for p in lora.flatten(q_params) if "kernel_q" in p} == {
      f"llm/layers/{p}" for p in PROJECTIONS
  }

  batch = fake_batch(cfg)
  results = {}
  for name, c, p in (("qlora", cfg, q_params), ("lora", float_cfg, twin)):
    mask = freezing.trainable_mask(p, ("llm", "aligner"))
    labels = freezing.partition(freezing.group_labels(p), mask)[0]
    tx = make_optimizer(optimizer_config({"lr": 1e-2}), 10, labels)
    step = jax.jit(make_train_step(DeepseekVL(c), tx, mask))
    new, metrics = step(init_state(p, tx, mask, 0), batch)
    results[name] = (float(metrics["loss"]), lora.split(new.params)[0])
  (q_loss, q_adapters), (f_loss, f_adapters) = results["qlora"], results["lora"]
  assert abs(q_loss - f_loss) <= 1e-6 * abs(f_loss)
  for path, value in lora.flatten(q_adapters).items():
    np.testing.assert_allclose(value, lora.flatten(f_adapters)[path], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind, ratio", [("nf4", 0.5 + 4 / 16), ("int8", 1 + 4 / 16)])
def test_the_quantised_base_bytes_come_from_the_tree(kind, ratio):
  """Bytes per float32 parameter x 4: nf4 half a byte plus a float32 scale per 16."""
  _, float_cfg, cfg = _qlora(kind)
  trainer_bytes = {}
  for name, c in (("float", float_cfg), ("quantised", cfg)):
    shapes = jax.eval_shape(lambda k, c=c: init_params(c, k), jax.random.key(0))
    adapted = {
        p: v for p, v in lora.flatten(shapes).items() if any(f"/{q}/" in p for q in PROJECTIONS)
    }
    trainer_bytes[name] = freezing.nbytes(lora.split(lora.unflatten(adapted))[1])
  assert trainer_bytes["quantised"] == pytest.approx(trainer_bytes["float"] * ratio / 4)


def test_a_qlora_run_keeps_its_codes_and_generates_like_its_float_twin(tmp_path):
  import dsvl_jax
  from dsvl_jax.infer.generate import Generator
  from dsvl_jax.infer.sampling import SamplingConfig

  base_wd = tmp_path / "base"
  Trainer(run_config(**{"train.steps": 2}), base_wd).run()
  fields = {
      "train.steps": 3,
      "train.init_from": str(base_wd),
      "model.compute.lora.rank": 4,
      "model.compute.lora.base_quant": "nf4",
      "model.compute.lora.quant_block": 16,
  }
  summary = Trainer(run_config(**fields), tmp_path / "q").run()
  assert summary["params/frozen_bytes"] < summary["params/frozen"] * 4
  # Resumed from step 2, the base re-read and re-quantised: the same step 3.
  Trainer(run_config(**fields), tmp_path / "cut").run(until=2)
  Trainer(run_config(**fields), tmp_path / "cut").run()
  _, saved, _, _ = _final(tmp_path / "q")
  chex.assert_trees_all_equal(saved, _final(tmp_path / "cut")[1])
  # the frozen base is not saved: of the LLM only its adapters are
  assert all(lora.is_adapter(p) for p in lora.flatten(saved) if freezing.group_of(p) == "llm")
  _, base_params, _, _ = _final(base_wd)
  run = dsvl_jax.load(str(tmp_path / "q"))
  params = run.params
  expected = lora.flatten(lora.quantized(base_params, run.config))
  codes = {p: v for p, v in lora.flatten(params).items() if "kernel_q" in p}
  assert len(codes) == 2 * 7  # codes and scales of the LLM's seven projections
  for path, value in codes.items():
    np.testing.assert_array_equal(value, expected[path], path)
  assert all(np.any(np.asarray(v)) for v in jax.tree.leaves(lora.split(params)[0]))

  plain_cfg, plain = lora.merged(run.params, run.config)  # the float twin, merged
  ids = np.array([[1] + list(range(10, 30))], np.int32)
  mask = np.ones_like(ids)
  greedy = SamplingConfig(temperature=0.0, max_new_tokens=6, ignore_eos=True)
  ours = Generator(run.config, run.params).generate(ids, mask, sampling=greedy).tokens
  twin = Generator(plain_cfg, plain).generate(ids, mask, sampling=greedy).tokens
  assert ours == twin


def test_a_base_from_host_memory_is_quantised_leaf_by_leaf_onto_the_mesh(tmp_path):
  """What a QLoRA run on an accelerator does with a float base it read into host memory
  (Trainer._staging): each kernel goes over, is quantised where the run holds it and
  let go. Here the 'host' is one CPU device and the run's mesh is four."""
  fields = {
      "mesh.num_devices": 4,
      "mesh.shape": (1, 4, 1),
      "model.compute.lora.rank": 4,
      "model.compute.lora.base_quant": "int8",
      "model.compute.lora.quant_block": 16,
  }
  trainer = Trainer(run_config(**fields), tmp_path)
  float_cfg, base_shardings, _, _ = trainer._base_layout()
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  base = lora.split(init_params(float_cfg, jax.random.key(0)))[1]
  staged = jax.device_put(base, one)
  got = trainer._quantized(staged)
  targets = lora.flatten(lora.split(trainer.state_sharding.params)[1])
  want = lora.flatten(lora.quantized(base, trainer.run_cfg.model))
  assert set(lora.flatten(got)) == set(want) == set(targets)
  for path, value in lora.flatten(got).items():
    np.testing.assert_array_equal(value, want[path], path)
    assert value.sharding.is_equivalent_to(targets[path], value.ndim), path
