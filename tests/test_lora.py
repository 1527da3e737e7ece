"""Low-rank adapters (model.compute.lora): an adapter starts as the identity and computes
x W + (alpha / rank) x A B; a stage trains exactly its adapters and its full groups, with
optimizer state for those alone; a LoRA run from a base checkpoint leaves the base
untouched and resumes bit for bit."""

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from test_train import _final, fake_batch, mirrored_paths
from train_fixtures import run_config, sigterm_then_resume

import dsvl_jax
from dsvl_jax.config.files import load_config
from dsvl_jax.config.schema import ConfigError
from dsvl_jax.models import DeepseekVL, VLMConfig, lora
from dsvl_jax.models.init import init_params
from dsvl_jax.train import freezing
from dsvl_jax.train.config import optimizer_config
from dsvl_jax.train.optimizer import make_optimizer
from dsvl_jax.train.step import init_state, make_train_step
from dsvl_jax.train.trainer import Trainer

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANK, ALPHA = 4, 8.0


def configs(family, **lora_fields):
  """(the tiny base config, the same with adapters)."""
  model = load_config(f"configs/tiny.py:{family}").model
  base = VLMConfig.from_dict(model)
  model.compute.lora.update(dict(rank=RANK, alpha=ALPHA, **lora_fields))
  return base, VLMConfig.from_dict(model)


def flat(tree):
  return traverse_util.flatten_dict(tree, sep="/")


def _forward(cfg, params, batch):
  return DeepseekVL(cfg).apply({"params": params}, batch["inputs"], batch["images"])["logits"]


def _merged(base, adapters, scale):
  """The base with each adapted kernel replaced by W + scale * A B, computed here in
  numpy (layers stacked first; kernels [L, *in, *out], A [L, *in, r], B [L, r, *out])."""
  out = {k: np.asarray(v) for k, v in flat(base).items()}
  for path, a in flat(adapters).items():
    if not path.endswith("lora_a"):
      continue
    module = path.rsplit("/", 1)[0]
    a = np.asarray(a, np.float64)
    b = np.asarray(flat(adapters)[module + "/lora_b"], np.float64)
    w = out[module + "/kernel"]
    n_layers, r = a.shape[0], a.shape[-1]
    delta = np.einsum("lir,lro->lio", a.reshape(n_layers, -1, r), b.reshape(n_layers, r, -1))
    out[module + "/kernel"] = (w + scale * delta.reshape(w.shape)).astype(w.dtype)
  return traverse_util.unflatten_dict(out, sep="/")


@pytest.mark.parametrize("family", ["siglip", "hybrid"])
def test_an_adapter_starts_as_the_identity_and_adds_its_low_rank_update(family):
  base_cfg, cfg = configs(family)
  params = init_params(cfg, jax.random.key(0))
  adapters, base = lora.split(params)
  assert flat(base).keys() == flat(init_params(base_cfg, jax.random.key(0))).keys()
  shapes = {k: v.shape for k, v in flat(adapters).items()}
  assert {k.rsplit("/", 1)[0] for k in shapes} == {f"llm/layers/{p}" for p in PROJECTIONS}
  layers = base_cfg.llm.num_layers
  d, f = base_cfg.llm.hidden_size, base_cfg.llm.intermediate_size
  h, kvh, dh = base_cfg.llm.num_heads, base_cfg.llm.num_kv_heads, base_cfg.llm.head_dim
  assert shapes["llm/layers/q_proj/lora_a"] == (layers, d, RANK)
  assert shapes["llm/layers/k_proj/lora_b"] == (layers, RANK, kvh, dh)
  assert shapes["llm/layers/o_proj/lora_a"] == (layers, h, dh, RANK)
  assert shapes["llm/layers/down_proj/lora_a"] == (layers, f, RANK)
  # peft's initialisation: A uniform within 1/sqrt(fan_in), B zero
  a = np.asarray(flat(adapters)["llm/layers/down_proj/lora_a"])
  assert 0.5 / f**0.5 < np.abs(a).max() <= 1 / f**0.5
  assert not any(np.any(v) for k, v in flat(adapters).items() if k.endswith("lora_b"))

  batch = fake_batch(base_cfg)
  np.testing.assert_array_equal(_forward(cfg, params, batch), _forward(base_cfg, base, batch))

  rng = np.random.default_rng(1)
  trained = {
      k: (rng.normal(0, 0.05, v.shape).astype(np.float32) if k.endswith("lora_b") else v)
      for k, v in flat(adapters).items()
  }
  trained = traverse_util.unflatten_dict(trained, sep="/")
  ours = _forward(cfg, lora.merge(base, trained), batch)
  reference = _forward(base_cfg, _merged(base, trained, ALPHA / RANK), batch)
  assert not np.allclose(ours, _forward(base_cfg, base, batch), atol=1e-3)
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_targets_choose_the_adapted_kernels():
  _, cfg = configs("hybrid", targets=("vision/siglip/*", "aligner/*proj"))
  paths = {k.rsplit("/", 1)[0] for k in flat(lora.split(init_params(cfg, jax.random.key(0)))[0])}
  siglip = {f"vision/siglip/blocks/{m}" for m in ("attn/qkv", "attn/proj", "mlp/fc1", "mlp/fc2")}
  assert paths == {"aligner/high_up_proj", "aligner/low_up_proj", "aligner/proj"} | siglip


@pytest.mark.parametrize(
    "trainable", [("llm", "aligner"), ("llm", "aligner", "siglip")], ids=["stage2", "stage3"]
)
def test_a_stage_trains_its_adapters_and_full_groups_only(trainable):
  _, cfg = configs("hybrid")
  params = init_params(cfg, jax.random.key(0))
  mask = freezing.trainable_mask(params, trainable)
  labels = freezing.partition(freezing.group_labels(params), mask)[0]
  tx = make_optimizer(optimizer_config({"lr": 1e-2}), 10, labels)
  step = jax.jit(make_train_step(DeepseekVL(cfg), tx, mask))
  state = init_state(params, tx, mask, 0)
  batch = fake_batch(cfg)
  new, _ = step(*step(state, batch)[:1], batch)  # two steps: A moves once B is non-zero

  full = {g for g in trainable if g != "llm"}
  expected = {p for p in flat(params) if lora.is_adapter(p) or freezing.group_of(p) in full}
  old, now = flat(params), flat(new.params)
  changed = {p for p in old if not np.array_equal(np.asarray(old[p]), np.asarray(now[p]))}
  assert changed == expected
  assert {p for p, m in flat(mask).items() if m} == expected

  # Adam's mu and nu exist for exactly the trained leaves.
  assert sorted(mirrored_paths(new.opt_state)) == sorted(2 * list(expected))


def test_dropout_is_on_the_adapter_input_as_peft_does_it():
  """y = x W + s (dropout(x) A) B, the base path never dropped: with W = 0 and A = B = I
  (s = 1) a training forward returns dropout(x) itself, each entry 0 or x / (1 - p)."""
  from dsvl_jax.models import layers
  from dsvl_jax.models.config import ComputeConfig, LoraConfig

  p, n = 0.5, 64
  compute = ComputeConfig(lora=LoraConfig(rank=n, alpha=float(n), targets=("*",), dropout=p))
  dense = layers.dense(compute, n, ("embed", "mlp"), use_bias=False, name="proj")
  x = np.random.default_rng(0).normal(size=(8, n)).astype(np.float32)
  params = {"kernel": np.zeros((n, n), np.float32), "lora_a": np.eye(n), "lora_b": np.eye(n)}
  params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params)
  y = np.asarray(dense.apply({"params": params}, x, rngs={"dropout": jax.random.key(1)}))
  kept = y != 0
  np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
  assert 0.3 < kept.mean() < 0.7
  np.testing.assert_array_equal(dense.apply({"params": params}, x), x)  # no rng: inference


def test_dropout_changes_training_steps_only():
  base_cfg, cfg = configs("siglip", dropout=0.5)
  _, plain = configs("siglip")
  params = init_params(cfg, jax.random.key(0))
  adapters, base = lora.split(params)
  rng = np.random.default_rng(1)
  noisy = {
      k: v + rng.normal(0, 0.05, v.shape).astype(np.float32) for k, v in flat(adapters).items()
  }
  params = lora.merge(base, traverse_util.unflatten_dict(noisy, sep="/"))
  batch = fake_batch(base_cfg)
  model = DeepseekVL(cfg)

  def train_forward(p, key):
    return model.apply({"params": p}, batch["inputs"], batch["images"], rngs={"dropout": key})[
        "logits"
    ]

  # without a dropout key (inference, evaluation) nothing is dropped
  np.testing.assert_array_equal(_forward(cfg, params, batch), _forward(plain, params, batch))
  one, two = jax.random.key(1), jax.random.key(2)
  np.testing.assert_array_equal(train_forward(params, one), train_forward(params, one))
  assert not np.allclose(train_forward(params, one), train_forward(params, two), atol=1e-4)
  # the train step draws its key from the state's rng: the same state steps the same way
  mask = freezing.trainable_mask(params, ("llm",))
  labels = freezing.partition(freezing.group_labels(params), mask)[0]
  tx = make_optimizer(optimizer_config({"lr": 1e-2}), 10, labels)
  step = jax.jit(make_train_step(model, tx, mask))
  state = init_state(params, tx, mask, 0)
  a, b = step(state, batch)[1]["loss"], step(state, batch)[1]["loss"]
  other = step(state.replace(rng=jax.random.PRNGKey(5)), batch)[1]["loss"]
  assert a == b and a != other


def test_adapters_in_a_frozen_group_are_refused():
  _, cfg = configs("siglip")
  with pytest.raises(ConfigError, match="model.compute.lora.targets.*'llm'"):
    freezing.trainable_mask(init_params(cfg, jax.random.key(0)), ("aligner",))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  wd = tmp_path_factory.mktemp("base")
  Trainer(run_config(**{"train.steps": 2}), wd).run()
  return wd


def _lora_fields(base_wd):
  return {
      "train.steps": 4,
      "train.init_from": str(base_wd),
      "model.compute.lora.rank": RANK,
      "model.compute.lora.alpha": ALPHA,
  }


def test_a_lora_run_keeps_its_base_and_resumes_exactly(base_run, tmp_path):
  fields = _lora_fields(base_run)
  Trainer(run_config(**fields), tmp_path / "whole").run()
  assert Trainer(run_config(**fields), tmp_path / "cut").run(until=2)["step"] == 2
  assert Trainer(run_config(**fields), tmp_path / "cut").run()["step"] == 4
  step_a, params_a, train_a, data_a = _final(tmp_path / "whole")
  step_b, params_b, train_b, data_b = _final(tmp_path / "cut")
  assert step_a == step_b == 4
  chex.assert_trees_all_equal(params_a, params_b)
  chex.assert_trees_all_equal(train_a, train_b)
  assert data_a == data_b

  # A step saves what the run trains (the adapters, the aligner in full); its base is
  # the base run's last step, named in base.json and read back by dsvl_jax.load.
  trained = {p for p in flat(params_a)}
  assert {p.rsplit("/", 2)[0] for p in trained if not lora.is_adapter(p)} <= {"aligner"}
  assert {freezing.group_of(p) for p in trained} == {"llm", "aligner"}
  ref = json.loads((tmp_path / "whole" / "base.json").read_text())
  assert pathlib.Path(ref["path"]) == base_run / "checkpoints" / "2"
  loaded = dsvl_jax.load(str(tmp_path / "whole")).params
  assert {k: v for k, v in flat(loaded).items() if k in trained}.keys() == flat(params_a).keys()
  chex.assert_trees_all_equal(
      {k: v for k, v in flat(loaded).items() if k in trained}, flat(params_a)
  )

  # The frozen base is the checkpoint's, bit for bit (the LLM's through its adapters,
  # the vision tower's); the aligner, trained in full, moved; so did every adapter leaf.
  _, base_params, _, _ = _final(base_run)
  adapters, base = lora.split(loaded)
  before, after = flat(base_params), flat(base)
  assert before.keys() == after.keys()
  for path in before:
    same = np.array_equal(np.asarray(before[path]), np.asarray(after[path]))
    assert same == (freezing.group_of(path) != "aligner"), path
  assert all(np.any(np.asarray(v)) for v in jax.tree.leaves(adapters))
  assert set(flat(adapters)) == {
      f"llm/layers/{p}/{leaf}" for p in PROJECTIONS for leaf in lora.ADAPTER_LEAVES
  }
  assert jnp.dtype(jax.tree.leaves(adapters)[0].dtype) == jnp.float32


def test_a_lora_run_resumes_after_sigterm_bit_for_bit(base_run, tmp_path):
  fields = {**_lora_fields(base_run), "train.steps": 6}
  Trainer(run_config(**fields), tmp_path / "whole").run()
  workdir, stopped, out = sigterm_then_resume(tmp_path, fields)
  assert 2 <= stopped < 6 and "SIGTERM" in out, out
  step_a, params_a, train_a, data_a = _final(tmp_path / "whole")
  step_b, params_b, train_b, data_b = _final(workdir)
  assert step_a == step_b == 6
  chex.assert_trees_all_equal(params_a, params_b)
  chex.assert_trees_all_equal(train_a, train_b)
  assert data_a == data_b


def test_a_random_base_is_written_once_and_a_changed_base_is_refused(tmp_path):
  """Without train.init_from the base is the run's random init, written once to
  WORKDIR/base; a run resumes from it exactly; a base whose fingerprint no longer
  matches base.json stops a resume and a load with one line each."""
  from dsvl_jax.checkpoint import run_base

  fields = {"train.steps": 4, "model.compute.lora.rank": RANK, "model.compute.lora.alpha": ALPHA}
  Trainer(run_config(**fields), tmp_path / "whole").run()
  Trainer(run_config(**fields), tmp_path / "cut").run(until=2)
  Trainer(run_config(**fields), tmp_path / "cut").run()
  chex.assert_trees_all_equal(_final(tmp_path / "whole")[1], _final(tmp_path / "cut")[1])
  ref = json.loads((tmp_path / "cut" / "base.json").read_text())
  assert pathlib.Path(ref["path"]) == tmp_path / "cut" / "base"
  base = dsvl_jax.load(ref["path"]).params
  assert not any(lora.is_adapter(p) for p in flat(base))
  loaded = dsvl_jax.load(str(tmp_path / "cut")).params
  frozen = lambda tree: {k: v for k, v in flat(tree).items() if freezing.group_of(k) != "aligner"}
  chex.assert_trees_all_equal(frozen(lora.split(loaded)[1]), frozen(base))

  perturbed = jax.tree.map(lambda x: x * 1.001, base)
  assert run_base.fingerprint(perturbed) != run_base.fingerprint(base)
  ref["fingerprint"] = run_base.fingerprint(perturbed)
  (tmp_path / "cut" / "base.json").write_text(json.dumps(ref))
  with pytest.raises(ConfigError, match="has changed since the run started") as e:
    dsvl_jax.load(str(tmp_path / "cut"))
  assert "\n" not in str(e.value)
  with pytest.raises(ConfigError, match="has changed since the run started"):
    Trainer(run_config(**{**fields, "train.steps": 6}), tmp_path / "cut").run()
  assert _final(tmp_path / "cut")[0] == 4  # nothing moved aside as damaged
  assert not (tmp_path / "cut" / "checkpoints_damaged").exists()


def test_a_lora_run_saved_whole_before_base_json_resumes_as_it_was(base_run, tmp_path, monkeypatch):
  """Steps a LoRA run saved whole (no base.json: before runs named their base) resume,
  and the run goes on saving whole steps."""
  from dsvl_jax.checkpoint import run_base
  from dsvl_jax.train import checkpoints

  fields = _lora_fields(base_run)
  Trainer(run_config(**fields), tmp_path / "new").run()
  with monkeypatch.context() as m:  # the old behaviour: every parameter saved, no base.json
    m.setattr(run_base, "write", lambda *a, **k: None)
    m.setattr(
        Trainer,
        "checkpoints",
        property(
            lambda self: self.__dict__.setdefault(
                "_ckpt", checkpoints.Checkpoints(self.workdir, 3, False)
            )
        ),
    )
    Trainer(run_config(**fields), tmp_path / "old").run(until=2)
  assert not (tmp_path / "old" / "base.json").exists()
  Trainer(run_config(**fields), tmp_path / "old").run()
  step, whole, _, _ = _final(tmp_path / "old")
  assert step == 4 and any(not lora.is_adapter(p) for p in flat(whole) if "llm" in p)
  new = _final(tmp_path / "new")[1]
  chex.assert_trees_all_equal({k: flat(whole)[k] for k in flat(new)}, flat(new))
