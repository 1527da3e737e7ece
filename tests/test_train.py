"""Training: freezing, exact resume, loss normalisation, the step's FLOPs, fine-tuning.

Tiny configs of both families (configs/tiny.py) on the built-in data; every comparison
is bit for bit unless a float32 tolerance is stated.
"""

import json
import pathlib

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import traverse_util
from train_fixtures import run_config, sigterm_then_resume

from dsvl_jax.config.files import load_config
from dsvl_jax.config.schema import ConfigError
from dsvl_jax.models import DeepseekVL, VLMConfig
from dsvl_jax.models.init import init_params
from dsvl_jax.train import flops as flops_lib
from dsvl_jax.train import freezing
from dsvl_jax.train.config import optimizer_config
from dsvl_jax.train.optimizer import make_optimizer
from dsvl_jax.train.step import init_state, make_loss_and_grads, make_train_step
from dsvl_jax.train.trainer import NonFiniteError, Trainer


def paths_of(tree):
  return set(traverse_util.flatten_dict(tree, sep="/"))


def fake_batch(cfg, rows=2, length=24, images=1, seed=0):
  """Rows with `images` image blocks each (image tokens after BOS), random text."""
  rng = np.random.default_rng(seed)
  k = cfg.num_image_tokens
  ids = rng.integers(3, 400, (rows, length)).astype(np.int32)
  ids[:, 0] = cfg.bos_token_id
  for j in range(images):
    ids[:, 1 + j * k : 1 + (j + 1) * k] = cfg.image_token_id
  s = cfg.image_size
  weights = (ids != cfg.image_token_id).astype(np.float32)
  return dict(
      inputs=ids,
      targets=np.roll(ids, -1, 1),
      weights=weights,
      segment_ids=np.ones_like(ids),
      positions=np.tile(np.arange(length), (rows, 1)),
      images=rng.random((rows, images, 3, s, s), dtype=np.float32),
  )


def count_primitives(jaxpr, name):
  """Occurrences of a primitive, sub-jaxprs (scan, pjit, remat, custom_vjp) included."""
  n = sum(eqn.primitive.name == name for eqn in jaxpr.eqns)
  for sub in jax.extend.core.subjaxprs(jaxpr):
    n += count_primitives(sub, name)
  return n


# --- freezing (acceptance 2) -------------------------------------------------------------

STAGES = {
    "stage1": ("aligner",),
    "stage2": ("llm", "aligner"),
    "stage3": ("llm", "aligner", "siglip"),
    "stage3_sam_neck": ("llm", "aligner", "siglip", "sam_neck"),
}


def mirrored_paths(opt_state) -> list[str]:
  """The parameter path of every array leaf of an optimizer state (the trailing dict keys
  inside mu or nu); its other leaves must be scalars (step counts)."""
  mirrored = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state):
    keys = []
    for entry in reversed(path):
      if not isinstance(entry, jax.tree_util.DictKey):
        break
      keys.append(str(entry.key))
    if keys:
      mirrored.append("/".join(reversed(keys)))
    else:
      assert leaf.size == 1, f"unexpected optimizer leaf {path}"
  return mirrored


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_stage_trains_exactly_its_groups(stage):
  cfg = tiny_config("hybrid")
  params = init_params(cfg, jax.random.key(0))
  mask = freezing.trainable_mask(params, STAGES[stage])
  labels = freezing.partition(freezing.group_labels(params), mask)[0]
  tx = make_optimizer(optimizer_config({"lr": 1e-2}), 10, labels)
  step = make_train_step(DeepseekVL(cfg), tx, mask)
  state = init_state(params, tx, mask, 0)
  batch = fake_batch(cfg)
  jitted = jax.jit(step)
  new, _ = jitted(*jitted(state, batch)[:1], batch)

  flat_old = traverse_util.flatten_dict(params, sep="/")
  flat_new = traverse_util.flatten_dict(new.params, sep="/")
  flat_mask = traverse_util.flatten_dict(mask, sep="/")
  for path, trained in flat_mask.items():
    same = np.array_equal(np.asarray(flat_old[path]), np.asarray(flat_new[path]))
    assert (
        same != trained
    ), f"{path}: {'unchanged though trained' if same else 'changed though frozen'}"
  if stage == "stage3":  # SAM frozen, neck included; 'sam_neck' trains the neck only
    assert not any(flat_mask[p] for p in flat_mask if p.startswith("vision/sam/"))
  if stage == "stage3_sam_neck":
    assert flat_mask["vision/sam/neck/conv1/kernel"] and flat_mask["vision/sam/hd_alpha"]
    assert not flat_mask["vision/sam/blocks/block_0/attn/qkv/kernel"]

  # Optimizer state: Adam's mu and nu mirror the trainable parameters and nothing else.
  trainable = {p for p, t in flat_mask.items() if t}
  assert sorted(mirrored_paths(new.opt_state)) == sorted(2 * list(trainable))

  # No backward pass through a frozen tower: the step's program has exactly the
  # forward convolutions plus the weight gradient of each trained conv (the images are
  # not differentiated, so a trained patch embedding needs no input gradient).
  forward = jax.make_jaxpr(
      lambda p, b: DeepseekVL(cfg).apply(
          {"params": p}, b["inputs"], b["images"], method=DeepseekVL.hidden_states
      )
  )(params, batch)
  train = jax.make_jaxpr(step)(state, batch)
  n_fwd = count_primitives(forward.jaxpr, "conv_general_dilated")
  n_train = count_primitives(train.jaxpr, "conv_general_dilated")
  assert (
      n_fwd == 1 + 9
  )  # SigLIP patch embedding; SAM patch embedding, 2 necks x 2, 2 x 2 downsamples
  expected = {"stage1": 0, "stage2": 0, "stage3": 1}.get(stage)
  if expected is not None:
    assert n_train == n_fwd + expected, (n_train, n_fwd)
  else:  # + SigLIP's patch-embedding weight gradient; weight gradients of both necks'
    # 2 convs and of the 2 shared downsample convs on both branches (8); input gradients
    # through the downsample convs (4) and each neck's 3x3 conv (2), and none into SAM's
    # blocks (each neck's 1x1 conv passes nothing down)
    assert n_train == n_fwd + 1 + 8 + 6, (n_train, n_fwd)


def test_every_parameter_belongs_to_a_group(family):
  params = jax.eval_shape(lambda: init_params(tiny_config(family), jax.random.key(0)))
  labels = traverse_util.flatten_dict(freezing.group_labels(params), sep="/")
  assert {"llm", "aligner", "siglip"} <= set(labels.values())
  assert labels["llm/layers/q_proj/kernel"] == "llm"
  if family == "hybrid":
    assert labels["vision/sam/neck_hd/conv2/kernel"] == "sam_neck"
    assert labels["vision/sam/downsample_1/kernel"] == "sam_neck"
    assert labels["vision/sam/pos_embed"] == "sam"
  else:
    with pytest.raises(ConfigError, match=r"train\.trainable.*\['sam'\]"):
      freezing.trainable_mask(params, ("llm", "sam"))


# --- loss normalisation (acceptance 5) ----------------------------------------------------


def _samples(cfg, seed):
  """Three samples of different lengths, two with an image, with partial loss masks."""
  rng = np.random.default_rng(seed)
  k, s = cfg.num_image_tokens, cfg.image_size
  out = []
  for n, has_image in ((30, True), (11, False), (22, True)):
    ids = (
        [cfg.bos_token_id]
        + ([cfg.image_token_id] * k if has_image else [])
        + list(rng.integers(3, 400, n))
    )
    ids = np.array(ids, np.int32)
    mask = (ids != cfg.image_token_id) & (rng.random(len(ids)) < 0.7)
    mask[0] = False
    images = rng.random((int(has_image), 3, s, s), dtype=np.float32)
    out.append((ids, mask, images))
  return out


def _rows(cfg, groups, length, slots):
  """Rows of packed samples: groups = [[sample, ...] per row]."""
  from dsvl_jax.data.packing import RowBuilder

  s = cfg.image_size
  rows = []
  for group in groups:
    rb = RowBuilder(length, cfg.pad_token_id, (3, s, s), max_images=slots)
    for ids, mask, images in group:
      rb.add(ids, mask, images)
    rows.append(rb.build())
  return dict(
      inputs=np.stack([r.inputs for r in rows]),
      targets=np.stack([r.targets for r in rows]),
      weights=np.stack([r.weights for r in rows]),
      segment_ids=np.stack([r.segment_ids for r in rows]),
      positions=np.stack([r.positions for r in rows]),
      images=np.stack([r.images for r in rows]),
  )


def test_loss_and_gradients_do_not_depend_on_packing_accumulation_or_chunking():
  cfg = tiny_config("siglip")
  params = init_params(cfg, jax.random.key(1))
  mask = freezing.trainable_mask(params, ("llm", "aligner", "siglip"))
  model = DeepseekVL(cfg)
  a, b = _samples(cfg, 0), _samples(cfg, 1)
  # One sample per row (6 rows), or packed 3 per row (2 rows): the same supervised tokens.
  unpacked = _rows(cfg, [[x] for x in a + b] + [[]] * 2, 64, 1)
  packed = _rows(cfg, [a, b], 96, 2)
  assert unpacked["weights"].sum() == packed["weights"].sum()

  def run(batch, accum=1, chunk=0):
    fn = jax.jit(make_loss_and_grads(model, mask, accum=accum, loss_chunk=chunk))
    return fn(params, batch)

  ref_loss, ref_grads = run(unpacked)
  for batch, accum, chunk in ((unpacked, 2, 0), (unpacked, 4, 16), (packed, 1, 0), (packed, 2, 40)):
    loss, grads = run(batch, accum, chunk)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-6)
    chex.assert_trees_all_close(grads, ref_grads, atol=2e-6, rtol=2e-5)
  # Token-weighted, not row-weighted: the row mean of per-row losses would differ.
  per_row = [run(_rows(cfg, [[x]], 64, 1))[0] for x in a[:2]]
  assert abs(float(np.mean(per_row)) - float(run(_rows(cfg, [a[:2]], 96, 2))[0])) > 1e-3


# --- schedules and stage configs (acceptance 4) ------------------------------------------

TABLE4 = {  # paper Table 4: lr, scheduler, warm-up, steps, batch, sequence, packing
    ("1_3b", 1): (1.0e-3, "cosine", 128, 15000, 256, 512, False),
    ("1_3b", 2): (3e-5, "step", 2000, 96000, 1024, 4096, True),
    ("1_3b", 3): (2.0e-5, "cosine", 256, 10000, 256, 4096, False),
    ("7b", 1): (1.0e-3, "cosine", 128, 15000, 256, 512, False),
    ("7b", 2): (4.2e-5, "step", 2000, 42000, 2304, 4096, True),
    ("7b", 3): (2.0e-5, "cosine", 256, 10000, 256, 4096, False),
}


@pytest.mark.parametrize("size,stage", list(TABLE4))
def test_stage_configs_carry_table_4(size, stage):
  from dsvl_jax.train.schedules import learning_rate
  from dsvl_jax.train.trainer import RunConfig

  c = load_config(f"configs/deepseek_vl_{size}.py:stage{stage}")
  c.train.init_from = "ckpt/deepseek-vl"  # a tokenizer source, as a user would give
  run = RunConfig.of(c)
  lr, sched, warm, steps, batch, seq, pack = TABLE4[(size, stage)]
  o, t, d = run.optimizer, run.train, run.data
  assert (o.lr, o.schedule, o.warmup_steps, t.steps) == (lr, sched, warm, steps)
  assert (d.global_batch_size, d.seq_len, d.pack, d.stage) == (batch, seq, pack, stage)
  assert (o.b1, o.b2, o.weight_decay, o.grad_clip) == (0.9, 0.95, 0.0, 1.0)
  assert (
      t.trainable
      == {1: ("aligner",), 2: ("llm", "aligner"), 3: ("llm", "aligner", "siglip")}[stage]
  )
  assert run.model.hybrid == (size == "7b")
  if stage == 2:  # the modality warm-up: language share 1.0 at step 0 down to 0.7
    assert (d.schedule, d.multimodal_share) == ("warmup", 0.3)
    assert d.modality_schedule.share_at(0) == 0.0
    assert {n for n, s in d.sources if s.modality == "text"} and "sft" in dict(
        d.sources
    )  # the slot for a small share of SFT data

  f = learning_rate(o, steps)
  np.testing.assert_allclose(f(0), lr / warm, rtol=1e-6)  # warm-up, first step moves
  np.testing.assert_allclose(f(warm - 1), lr, rtol=1e-6)  # peak at the end of warm-up
  if sched == "cosine":
    mid = warm + (steps - warm) // 2
    np.testing.assert_allclose(f(mid), lr * 0.5, rtol=1e-3)
    np.testing.assert_allclose(f(steps), 0.0, atol=lr * 1e-6)
  else:  # DeepSeek-LLM multi-step: peak until 80%, x0.316 until 90%, then x0.1
    for at, want in (
        (int(0.8 * steps) - 1, 1.0),
        (int(0.8 * steps), 0.316),
        (int(0.9 * steps) - 1, 0.316),
        (int(0.9 * steps), 0.1),
        (steps - 1, 0.1),
    ):
      np.testing.assert_allclose(f(at), lr * want, rtol=1e-5, err_msg=f"step {at}")


# --- the trainer: resume, metrics, compilations, SIGTERM (acceptance 3) ------------------


def _final(workdir):
  """Params, optimizer state and data state of a workdir's latest checkpoint."""
  import orbax.checkpoint as ocp

  root = pathlib.Path(workdir) / "checkpoints"
  step = max(int(p.name) for p in root.iterdir() if p.name.isdigit())
  with ocp.StandardCheckpointer() as ck:
    params = ck.restore(root / str(step) / "params")
    train = ck.restore(root / str(step) / "train")
  data = json.loads(next((root / str(step) / "data").glob("*.json")).read_text())
  return step, params, train, data


def _losses(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r["loss"] for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  wd = tmp_path_factory.mktemp("full")
  summary = Trainer(run_config(), wd).run()
  return wd, summary


def test_resume_continues_exactly(uninterrupted, tmp_path):
  full, summary = uninterrupted
  # Both modalities ran and each (modality, shape) compiled once.
  assert summary["compilations"] == 2
  first = Trainer(run_config(), tmp_path).run(until=3)
  assert first["step"] == 3
  resumed = Trainer(run_config(), tmp_path).run()
  assert resumed["step"] == 6
  step_a, params_a, train_a, data_a = _final(full)
  step_b, params_b, train_b, data_b = _final(tmp_path)
  assert step_a == step_b == 6
  chex.assert_trees_all_equal(params_a, params_b)
  chex.assert_trees_all_equal(train_a, train_b)
  assert data_a == data_b  # the iterator is at the same place: the same batches were read
  assert _losses(tmp_path) == _losses(full)  # and step by step the same losses


def test_metrics_are_written(uninterrupted):
  from dsvl_jax.data.pipeline import TrainDataset
  from dsvl_jax.processor.layout import TokenLayout
  from dsvl_jax.train.schedules import learning_rate
  from dsvl_jax.train.trainer import RunConfig

  full, _ = uninterrupted
  rows = [json.loads(l) for l in (full / "metrics.jsonl").read_text().splitlines()]
  keys = set().union(*rows)
  for k in (
      "loss",
      "lr",
      "grad_norm",
      "tokens_per_s",
      "step_time_s",
      "mfu",
      "compilations",
      "params/trainable",
      "params/frozen",
      "loss/text",
      "loss/multimodal",
      "data/skipped",
      "data/multimodal_share",
      "nonfinite_skipped",
  ):
    assert k in keys, k
  assert rows[-1]["params/frozen"] > 0 and rows[-1]["params/trainable"] > 0
  # The values, step by step (a line per step): the rate that step's update used (the
  # optimizer's count is 0-based; warm-up makes an off-by-one visible), and the real
  # (non-padding) tokens of the batch that step read, over its logged time.
  run = RunConfig.of(run_config())
  schedule = learning_rate(run.optimizer, run.train.steps)
  it = iter(TrainDataset(run.data, TokenLayout.of(run.model)))
  batches = [next(it) for _ in range(run.train.steps)]
  it.close()
  rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in rows] == list(range(1, 7))
  for r, host in zip(rows, batches):
    assert r["lr"] == pytest.approx(float(schedule(r["step"] - 1)), rel=1e-6), r["step"]
    tokens = int(np.sum(host["segment_ids"] > 0))
    assert 0 < tokens < host["segment_ids"].size  # the packed rows end in padding
    assert r["tokens_per_s"] * r["step_time_s"] == pytest.approx(tokens, rel=1e-9), r["step"]
    assert r["nonfinite_skipped"] in (0.0, 1.0)
  assert rows[0]["lr"] == pytest.approx(5e-4) and rows[1]["lr"] == pytest.approx(1e-3)
  _, _, train, _ = _final(full)
  assert sum(r["nonfinite_skipped"] for r in rows) == int(train["nonfinite"])
  events = list((full / "tensorboard").glob("events.out.tfevents.*"))
  assert events and b"loss/multimodal" in events[0].read_bytes()
  saved = json.loads((full / "config.json").read_text())
  assert saved["train"]["steps"] == 6 and saved["model"]["llm"]["hidden_size"] == 64


def test_restart_refuses_fields_that_decide_shapes_or_data_order(uninterrupted, tmp_path):
  import shutil

  full = shutil.copytree(uninterrupted[0], tmp_path / "copy")  # the fixture stays at step 6
  with pytest.raises(ConfigError, match=r"data\.seq_len, model\.llm\.num_layers"):
    Trainer(run_config(**{"data.seq_len": 128, "model.llm.num_layers": 3}), full).run()
  # the learning rate and the step count may change: this resumes and trains on
  more = Trainer(run_config(**{"optimizer.lr": 5e-4, "train.steps": 7}), full).run()
  assert more["step"] == 7


def test_nonfinite_updates_are_skipped_or_stop_the_run(tmp_path):
  cfg = tiny_config("siglip")
  params = init_params(cfg, jax.random.key(0))
  mask = freezing.trainable_mask(params, ("llm", "aligner"))
  labels = freezing.partition(freezing.group_labels(params), mask)[0]
  tx = make_optimizer(optimizer_config({"lr": 1e-2}), 10, labels)
  state = init_state(params, tx, mask, 0)
  batch = fake_batch(cfg)
  batch["images"][0, 0, 0, 0, 0] = np.nan
  new, metrics = jax.jit(make_train_step(DeepseekVL(cfg), tx, mask))(state, batch)
  assert not bool(metrics["finite"]) and int(new.nonfinite) == 1 and int(new.step) == 1
  chex.assert_trees_all_equal(new.params, params)
  chex.assert_trees_all_equal(new.opt_state, state.opt_state)

  # 'stop': an absurd learning rate overflows the parameters; the run saves and raises.
  c = run_config(
      **{
          "optimizer.lr": 1e30,
          "optimizer.grad_clip": 0.0,
          "train.nonfinite": "stop",
          "train.steps": 6,
      }
  )
  with pytest.raises(NonFiniteError, match="non-finite"):
    Trainer(c, tmp_path).run()
  assert (tmp_path / "checkpoints").is_dir() and any(
      p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir()
  )


def test_a_nonfinite_gradient_with_a_finite_loss_is_skipped():
  """The gradient decides too, not only the loss. A zero LM head makes every logit 0, so
  the loss is exactly log(vocab); a final-norm scale of 1e30 makes the hidden states,
  and so the head's gradient h^T (p - y) / n, about 1e30: every entry finite, their
  squares (the global norm) overflow to inf. Applied, clipping by that norm would zero
  the gradient step while weight decay still moved the matrices: the step must be
  skipped, counted, and leave everything as it was."""
  cfg = tiny_config("siglip")
  params = init_params(cfg, jax.random.key(0))
  llm = params["llm"]
  llm["lm_head"]["kernel"] = jnp.zeros_like(llm["lm_head"]["kernel"])
  llm["norm"]["scale"] = jnp.full_like(llm["norm"]["scale"], 1e30)
  mask = freezing.trainable_mask(params, ("llm", "aligner"))
  labels = freezing.partition(freezing.group_labels(params), mask)[0]
  tx = make_optimizer(optimizer_config({"lr": 1e-2, "weight_decay": 0.1}), 10, labels)
  state = init_state(params, tx, mask, 0)
  batch = fake_batch(cfg)
  model = DeepseekVL(cfg)
  loss, grads = jax.jit(make_loss_and_grads(model, mask))(params, batch)
  assert float(loss) == pytest.approx(np.log(cfg.llm.vocab_size), rel=1e-6)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  assert float(jnp.max(jnp.abs(grads["llm"]["lm_head"]["kernel"]))) > 1e25

  new, metrics = jax.jit(make_train_step(model, tx, mask))(state, batch)
  assert np.isfinite(float(metrics["loss"])) and not np.isfinite(float(metrics["grad_norm"]))
  assert not bool(metrics["finite"]), "a step with a non-finite gradient norm was applied"
  assert int(new.nonfinite) == 1 and int(new.step) == 1
  chex.assert_trees_all_equal(new.params, params)
  chex.assert_trees_all_equal(new.opt_state, state.opt_state)


def test_skipped_updates_are_summed_over_each_log_window(tmp_path):
  """train.nonfinite='skip' with an absurd learning rate: the first update overflows the
  parameters and every later step is skipped. A line every 3 steps carries the window's
  count (a sum, not a mean), and the lines add up to the state's counter."""
  c = run_config(**{"optimizer.lr": 1e30, "optimizer.grad_clip": 0.0, "train.log_every": 3})
  assert Trainer(c, tmp_path).run()["step"] == 6
  rows = [
      r
      for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
      if "nonfinite_skipped" in r
  ]
  assert [r["step"] for r in rows] == [3, 6]
  _, _, train, _ = _final(tmp_path)
  assert [r["nonfinite_skipped"] for r in rows] == [2.0, 3.0]
  assert sum(r["nonfinite_skipped"] for r in rows) == int(train["nonfinite"]) == 5


@pytest.mark.slow
def test_sigterm_saves_exits_zero_and_resumes_equal(uninterrupted, tmp_path):
  full, _ = uninterrupted
  workdir, stopped, out = sigterm_then_resume(tmp_path, {})
  assert 2 <= stopped < 6, out
  assert "SIGTERM" in out
  step_a, params_a, train_a, data_a = _final(full)
  step_b, params_b, train_b, data_b = _final(workdir)
  assert step_a == step_b == 6
  chex.assert_trees_all_equal(params_a, params_b)
  chex.assert_trees_all_equal(train_a, train_b)
  assert data_a == data_b


def test_a_bad_config_field_is_one_line_and_exit_2(tmp_path):
  import subprocess
  import sys

  repo = pathlib.Path(__file__).parent.parent
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "dsvl_jax.main",
          "--config=configs/tiny.py",
          "--config.train.trainable=('vision',)",
          f"--workdir={tmp_path}",
      ],
      cwd=repo,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 2
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and "train.trainable" in lines[0] and "Traceback" not in out.stderr


# --- model FLOPs (acceptance 6) ---------------------------------------------------------


@pytest.mark.parametrize(
    "family,trainable",
    [
        ("siglip", ("llm", "aligner", "siglip")),
        ("hybrid", ("aligner",)),
        ("hybrid", ("llm", "aligner", "siglip", "sam_neck")),
    ],
)
def test_flops_formula_matches_xla_cost_analysis(family, trainable):
  """One layer per stack (XLA counts a scanned body once), widths where matmuls dominate
  as in real models; the formula's full-attention count against the compiled step."""
  c = load_config(f"configs/tiny.py:{family}").model
  c.llm.update(
      num_layers=1, hidden_size=256, intermediate_size=768, num_heads=4, num_kv_heads=4, head_dim=64
  )
  c.siglip.update(depth=1, width=128, mlp_dim=512)
  if family == "hybrid":
    c.sam.update(depth=3, global_attn_indexes=(2,), width=128, mlp_dim=512)
  cfg = VLMConfig.from_dict(c)
  params = init_params(cfg, jax.random.key(0))
  mask = freezing.trainable_mask(params, trainable)
  labels = freezing.partition(freezing.group_labels(params), mask)[0]
  tx = make_optimizer(optimizer_config({"lr": 1e-3}), 10, labels)
  state = init_state(params, tx, mask, 0)
  batch = fake_batch(cfg, rows=4, length=64, images=2)
  compiled = jax.jit(make_train_step(DeepseekVL(cfg), tx, mask)).lower(state, batch).compile()
  xla = compiled.cost_analysis()["flops"]
  shape = flops_lib.BatchShape(tokens=4 * 64, segment_sq=4 * 64**2, images=8)
  ours = flops_lib.step_flops(cfg, trainable, shape, causal=False)
  print(f"{family} {trainable}: formula {ours:.4g}, XLA {xla:.4g}, ratio {xla / ours:.3f}")
  assert 0.9 < xla / ours < 1.15  # XLA also counts elementwise work (norms, softmax, Adam)


def test_flops_count_causal_attention_over_half_of_each_segments_square():
  """The trainer logs MFU from the causal count (the default); the XLA comparison above
  runs causal=False only. Per layer and (query, key) pair: QK^T and PV, H x Dh
  multiply-adds each, 2 FLOPs per multiply-add; a segment of n tokens has n^2 pairs,
  of which the causal mask keeps half (the formula's convention, not n (n + 1) / 2)."""
  cfg = tiny_config("siglip")
  c = cfg.llm
  shape = flops_lib.BatchShape.of(np.array([[1] * 5 + [2] * 3 + [0] * 2, [3] * 7 + [0] * 3]))
  assert (shape.tokens, shape.segment_sq) == (15, 5**2 + 3**2 + 7**2)
  no_pairs = flops_lib.BatchShape(shape.tokens, 0, 0)
  per_pair = c.num_layers * 2 * 2 * c.num_heads * c.head_dim

  def attention_term(**causal):
    return (
        flops_lib.llm_flops(cfg, shape, **causal)["llm"] - flops_lib.llm_flops(cfg, no_pairs)["llm"]
    )

  assert attention_term(causal=False) == per_pair * 83
  assert attention_term(causal=True) == per_pair * 83 / 2
  assert attention_term() == per_pair * 83 / 2  # causal unless told otherwise
  # A trained LLM costs 3x its forward, the attention term included.
  trained = ("llm", "aligner")
  assert (
      flops_lib.step_flops(cfg, trained, shape) - flops_lib.step_flops(cfg, trained, no_pairs)
  ) == 3 * per_pair * 83 / 2


def test_flops_multipliers():
  m = flops_lib.multipliers(("aligner",))  # stage 1: gradients pass through the LLM
  assert m == {"sam": 1, "siglip": 1, "sam_neck": 1, "aligner": 3, "llm": 2}
  m = flops_lib.multipliers(("llm", "aligner", "siglip"))
  assert m == {"sam": 1, "siglip": 3, "sam_neck": 1, "aligner": 3, "llm": 3}
  assert flops_lib.multipliers(("llm", "sam_neck"))["aligner"] == 2
  shape = flops_lib.BatchShape.of(np.array([[1, 1, 1, 2, 2, 0]]), np.array([1]))
  assert (shape.tokens, shape.segment_sq, shape.images) == (5, 13, 1)


# --- fine-tuning a released checkpoint (acceptance 8) ------------------------------------


def test_finetune_from_a_transformers_checkpoint_and_export(tmp_path):
  import hf_reference as ref
  import torch
  import transformers

  import dsvl_jax
  from dsvl_jax.checkpoint.formats import export_checkpoint

  cfg = tiny_config("siglip")
  hf = ref.build(cfg, seed=3)
  hf.save_pretrained(tmp_path / "hf")
  c = run_config(
      **{
          "train.init_from": str(tmp_path / "hf"),
          "data.stage": 3,
          "data.tokenizer": "builtin:bytes",
          "train.steps": 2,
          "data.schedule": "constant",
          "data.multimodal_share": 1.0,
          "train.trainable": ("llm", "aligner", "siglip"),
          "optimizer.lr": 1e-3,
      }
  )
  c.model.compute.precision = "highest"
  Trainer(c, tmp_path / "run").run()
  tuned = dsvl_jax.load(str(tmp_path / "run"))
  before = dsvl_jax.load(str(tmp_path / "hf"))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), tuned.params, before.params)
  flat = traverse_util.flatten_dict(changed, sep="/")
  assert flat["llm/layers/q_proj/kernel"] and flat["vision/siglip/patch_embed/kernel"]
  export_checkpoint(tmp_path / "run", tmp_path / "out", layout="hf", progress=False)
  back = transformers.DeepseekVLForConditionalGeneration.from_pretrained(tmp_path / "out")
  ids = np.array([[1] + [cfg.image_token_id] * cfg.num_image_tokens + [5, 6, 7]])
  images = np.random.default_rng(0).random((1, 3, cfg.image_size, cfg.image_size), dtype=np.float32)
  with torch.no_grad():
    theirs = back(
        input_ids=torch.from_numpy(ids).long(), **ref.pixel_kwargs(cfg, images)
    ).logits.numpy()
  ours = np.asarray(tuned.logits(ids, images=images))
  np.testing.assert_allclose(ours, theirs, atol=1e-5 * np.abs(theirs).max())
