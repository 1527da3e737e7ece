"""Model behaviour beyond parity: errors, caching, packing, remat, reduced precision."""

import dataclasses
import functools

import chex
import hf_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import linen as nn

from convert import state_dict_to_params
from dsvl_jax.config.files import load_config
from dsvl_jax.models import ConfigError, DeepseekVL, VLMConfig, init_cache, positions_from_mask
from dsvl_jax.models.config import REMAT_POLICIES
from dsvl_jax.models.init import init_params


@pytest.fixture(scope="module")
def hybrid():
  cfg = tiny_config("hybrid")
  return cfg, init_params(cfg, jax.random.key(0))


def _images(cfg, n, seed=0):
  return np.random.default_rng(seed).random(
      (n, 3, cfg.image_size, cfg.image_size), dtype=np.float32
  )


# --- configuration -----------------------------------------------------------------------


def test_real_configs_validate():
  for name in ("deepseek_vl_1_3b", "deepseek_vl_7b"):
    cfg = VLMConfig.from_dict(load_config(f"configs/{name}.py").model)
    assert cfg.num_image_tokens == 576
  assert VLMConfig.from_dict(load_config("configs/deepseek_vl_7b.py").model).sam.out_grid == 24


@pytest.mark.parametrize(
    "path,value,match",
    [
        ("llm.num_kv_heads", 3, r"model\.llm\.num_kv_heads"),
        ("llm.hidden_sise", 64, r"unknown field\(s\) \['hidden_sise'\]"),
        ("compute.dtype", "float64", r"model\.compute\.dtype"),
        ("compute.remat_policy", "some", r"model\.compute\.remat_policy"),
        ("siglip.select_layer", 0, r"model\.siglip\.select_layer"),
        ("image_token_id", 10**6, r"model\.image_token_id"),
        ("llm.num_layers", "2", r"model\.llm\.num_layers.*expected an int"),
    ],
)
def test_bad_config_fields_are_named(path, value, match):
  model = load_config("configs/tiny.py:siglip").model.to_dict()
  node = model
  *parents, leaf = path.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ConfigError, match=match):
    VLMConfig.from_dict(model)


def test_hybrid_grid_mismatch_is_caught_at_start():
  model = load_config("configs/tiny.py:hybrid").model
  model.sam.resize_to = 32
  with pytest.raises(ConfigError, match=r"model\.sam\.resize_to"):
    VLMConfig.from_dict(model)


# --- images ------------------------------------------------------------------------------


def test_image_token_count_mismatch_raises(hybrid):
  cfg, params = hybrid
  ids = np.array([[1] + [cfg.image_token_id] * (cfg.num_image_tokens - 1) + [3]])
  with pytest.raises(ValueError, match=r"15 image-token positions .* 1 image\(s\)"):
    DeepseekVL(cfg).apply({"params": params}, ids, _images(cfg, 1))
  ids = np.array([[1] + [cfg.image_token_id] * cfg.num_image_tokens])
  with pytest.raises(ValueError, match="0 image"):
    DeepseekVL(cfg).apply({"params": params}, ids)


def test_text_only_batch_never_runs_the_vision_tower(hybrid):
  cfg, params = hybrid
  text_params = {"llm": params["llm"]}  # no vision or aligner weights at all
  ids = np.array([[1, 5, 6, 7]])
  out = DeepseekVL(cfg).apply({"params": text_params}, ids)["logits"]
  full = DeepseekVL(cfg).apply({"params": params}, ids)["logits"]
  np.testing.assert_array_equal(np.asarray(out), np.asarray(full))


# --- positions, KV cache and packing -----------------------------------------------------


def test_default_positions_count_each_rows_real_tokens_from_zero():
  """RoPE is relative, so a positions_from_mask that shifts every real token of a row by
  the same amount (off by one, or counting the padding) leaves logits unchanged up to
  rounding, and the parity tests cannot see it; counted here from first principles."""
  mask = np.array(
      [
          [0, 0, 0, 1, 1, 1, 1],  # left padding
          [1, 1, 1, 1, 1, 1, 1],  # none
          [0, 0, 0, 0, 0, 0, 1],  # one real token
          [1, 1, 1, 1, 1, 0, 0],
      ]
  )  # right padding
  positions = np.asarray(positions_from_mask(mask))
  assert positions.shape == mask.shape
  for row, pos in zip(mask, positions):
    real = [t for t in range(len(row)) if row[t]]
    assert list(pos[real]) == list(range(len(real))), (row, pos)
    assert all(0 <= p < len(row) for p in pos)  # padding gets any in-range value


def test_prefill_then_decode_equals_full_forward(hybrid):
  cfg, params = hybrid
  model = DeepseekVL(cfg)
  k = cfg.num_image_tokens
  ids = np.array(
      [
          [2, 2, 1] + [cfg.image_token_id] * k + [5, 6, 7, 8, 9],
          [1, 11, 12] + [cfg.image_token_id] * k + [13, 14, 15, 16, 17],
      ]
  )
  mask = np.ones_like(ids)
  mask[0, :2] = 0  # left padding
  images = _images(cfg, 2)
  full = np.asarray(model.apply({"params": params}, ids, images, attention_mask=mask)["logits"])

  n_prompt, max_len = ids.shape[1] - 3, ids.shape[1] + 4
  positions = np.where(mask > 0, np.cumsum(mask, -1) - 1, 1)
  slots = np.zeros((2, max_len), np.int32)
  slots[:, :n_prompt] = mask[:, :n_prompt]
  cache = init_cache(cfg.llm, 2, max_len)
  out = model.apply(
      {"params": params},
      ids[:, :n_prompt],
      images,
      attention_mask=slots,
      positions=positions[:, :n_prompt],
      cache=cache,
      cache_index=0,
  )
  real = mask[:, :n_prompt].astype(bool)  # padded rows are never read
  np.testing.assert_allclose(
      np.asarray(out["logits"])[real], full[:, :n_prompt][real], atol=1e-5, rtol=1e-5
  )
  cache = out["cache"]
  for t in range(n_prompt, ids.shape[1]):
    slots[:, t] = 1
    out = model.apply(
        {"params": params},
        ids[:, t : t + 1],
        attention_mask=slots,
        positions=positions[:, t : t + 1],
        cache=cache,
        cache_index=t,
    )
    cache = out["cache"]
    np.testing.assert_allclose(out["logits"][:, 0], full[:, t], atol=1e-5, rtol=1e-5)


def test_packed_segments_do_not_attend_across(hybrid):
  cfg, params = hybrid
  model = DeepseekVL(cfg)
  k = cfg.num_image_tokens
  a = [1] + [cfg.image_token_id] * k + [5, 6, 7]
  b = [1, 8, 9, 10, 11]
  images = _images(cfg, 1)
  packed = np.array([a + b])
  seg = np.array([[1] * len(a) + [2] * len(b)])
  pos = np.array([list(range(len(a))) + list(range(len(b)))])
  out = np.asarray(
      model.apply({"params": params}, packed, images, segment_ids=seg, positions=pos)["logits"]
  )[0]
  alone_a = np.asarray(model.apply({"params": params}, np.array([a]), images)["logits"])[0]
  alone_b = np.asarray(model.apply({"params": params}, np.array([b]))["logits"])[0]
  np.testing.assert_allclose(out[: len(a)], alone_a, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(out[len(a) :], alone_b, atol=1e-5, rtol=1e-5)


# --- remat and precision -----------------------------------------------------------------


# What each ComputeConfig.remat_policy name must mean (written out here, not read from
# layers.py, so that a wrong table there fails).
REMAT_POLICY_FUNCTIONS = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _equations(jaxpr):
  """Every equation of a jaxpr and of the jaxprs nested in it (scan, pjit, remat, ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _equations(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _equations(sub)


@pytest.mark.parametrize("policy", REMAT_POLICIES)
def test_remat_wraps_every_scanned_stack_with_the_named_policy(hybrid, policy):
  """The gradient program recomputes each scanned stack (SigLIP, SAM, LLM) under
  jax.checkpoint with the policy the name stands for; 'none' has no checkpoint at all."""
  cfg, params = hybrid
  remat_cfg = cfg.replace(compute=dataclasses.replace(cfg.compute, remat_policy=policy))
  ids = np.array([[1] + [cfg.image_token_id] * cfg.num_image_tokens + [5, 6]])
  images = _images(cfg, 1)

  def loss(p):
    return jnp.mean(DeepseekVL(remat_cfg).apply({"params": p}, ids, images)["logits"] ** 2)

  jaxpr = jax.make_jaxpr(jax.jit(jax.value_and_grad(loss)))(params).jaxpr
  found = [
      e.params["policy"]
      for e in _equations(jaxpr)
      if e.primitive.name in ("checkpoint", "remat", "remat2")
  ]
  want = REMAT_POLICY_FUNCTIONS[policy]
  assert found == ([] if want is None else [want] * 3), found


@pytest.fixture(scope="module")
def llm_value_and_grad(hybrid):
  """policy -> loss and gradients of a text-only batch: the LLM stack alone, which
  compiles in seconds (that the towers are rematerialised too is shown above)."""
  cfg, params = hybrid
  ids = np.array([[1, 5, 6, 7, 8, 9, 10, 11], [1, 12, 13, 14, 15, 16, 17, 18]])

  @functools.lru_cache(maxsize=None)
  def run(policy):
    remat_cfg = cfg.replace(compute=dataclasses.replace(cfg.compute, remat_policy=policy))

    def loss(p):
      return jnp.mean(DeepseekVL(remat_cfg).apply({"params": p}, ids)["logits"] ** 2)

    return jax.jit(jax.value_and_grad(loss))({"llm": params["llm"]})

  return run


@pytest.mark.parametrize("policy", [p for p in REMAT_POLICIES if p != "none"])
def test_remat_changes_nothing_numerically(llm_value_and_grad, policy):
  l0, g0 = llm_value_and_grad("none")
  l1, g1 = llm_value_and_grad(policy)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  chex.assert_trees_all_close(g1, g0, atol=1e-6, rtol=1e-5)


# bf16 has an 8-bit mantissa (~4e-3 per op); 2-layer towers + LLM. A smoke test: at this
# bound it cannot see a float32 island done in bf16; test_precision.py tests each one.
BF16_REL_TOL = 5e-2


@pytest.mark.parametrize("family", ["siglip", "hybrid"])
@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_bfloat16_forward_agrees_with_float32(family, param_dtype):
  """Same weights (from the transformers reference), bf16 compute vs fp32 compute."""
  cfg32 = tiny_config(family)
  cfg16 = tiny_config(family, dtype="bfloat16", param_dtype=param_dtype, precision="default")
  params, _ = state_dict_to_params(ref.state_dict(ref.build(cfg32, seed=2)), cfg32)
  params16 = jax.tree.map(lambda x: jnp.asarray(x, param_dtype), params)
  k = cfg32.num_image_tokens
  ids = np.array([[1, 4] + [cfg32.image_token_id] * k + [5, 6, 7, 8], [1] + [9] * (k + 5)])
  images = _images(cfg32, 1)
  out32 = np.asarray(DeepseekVL(cfg32).apply({"params": params}, ids, images)["logits"])
  out16 = DeepseekVL(cfg16).apply({"params": params16}, ids, images)["logits"]
  assert out16.dtype == jnp.float32  # logits are returned in float32 for the loss
  err = np.abs(np.asarray(out16) - out32).max() / np.abs(out32).max()
  print(f"bf16 ({param_dtype} params) vs fp32, {family}: relative error {err:.2e}")
  assert err < BF16_REL_TOL, f"bf16 relative error {err:.3g}"
  assert err > 0  # it really ran in reduced precision


def test_unstacked_layer_loop_equals_scan(hybrid):
  """Decoding's per-layer weights (scan_layers=False) compute exactly what the scan does."""
  from dsvl_jax.models.llm import unstack_layers

  cfg, params = hybrid
  loop_cfg = cfg.replace(compute=dataclasses.replace(cfg.compute, scan_layers=False))
  loop_params = {**params, "llm": unstack_layers(params["llm"])}
  assert "layers_1" in loop_params["llm"] and "layers" not in loop_params["llm"]
  ids = np.array([[1] + [cfg.image_token_id] * cfg.num_image_tokens + [5, 6]])
  images = _images(cfg, 1)
  a = DeepseekVL(cfg).apply({"params": params}, ids, images)["logits"]
  b = DeepseekVL(loop_cfg).apply({"params": loop_params}, ids, images)["logits"]
  np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, rtol=1e-5)


def test_unrolled_scan_computes_what_the_rolled_one_does(hybrid):
  """compute.scan_unroll (the demo's 4) runs the same stacked parameters: equal loss and
  gradients; an unroll beyond the depth is clamped to it."""
  from dsvl_jax.models.llm import LLM

  cfg, params = hybrid
  embeds = jax.random.normal(jax.random.key(0), (2, 7, cfg.llm.hidden_size))
  positions = jnp.broadcast_to(jnp.arange(7), (2, 7))

  def loss(compute, p):
    return jnp.mean(LLM(cfg.llm, compute).apply({"params": p}, embeds, positions)[0] ** 2)

  ref_loss, ref_grads = jax.jit(jax.value_and_grad(functools.partial(loss, cfg.compute)))(
      params["llm"]
  )
  for unroll in (2, 64):
    compute = dataclasses.replace(cfg.compute, scan_unroll=unroll)
    got_loss, got_grads = jax.jit(jax.value_and_grad(functools.partial(loss, compute)))(
        params["llm"]
    )
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-6)
    chex.assert_trees_all_close(got_grads, ref_grads, atol=1e-6, rtol=1e-5)
  # It did unroll: the rolled program loops over the layers, the unrolled one does not.
  hlo = {
      u: jax.jit(functools.partial(loss, dataclasses.replace(cfg.compute, scan_unroll=u)))
      .lower(params["llm"])
      .as_text()
      for u in (1, 2)
  }
  assert hlo[1].count("stablehlo.while") > hlo[2].count("stablehlo.while")
  with pytest.raises(ConfigError, match="scan_unroll"):
    VLMConfig.from_dict(
        {**cfg.to_dict(), "compute": {**cfg.to_dict()["compute"], "scan_unroll": 0}}
    )


@pytest.mark.parametrize("n_in, rows", [(1, 3), (1, 80), (2, 3), (2, 80)])
def test_an_out_major_dense_computes_what_the_in_major_one_does(n_in, rows):
  """Dense(out_major=True) on the transposed kernel (the generators' LLM layout on a
  CPU): the same y for a few rows (kernel . x^T) and for many (x . kernel^T)."""
  from dsvl_jax.infer.generate import out_major
  from dsvl_jax.models import layers
  from dsvl_jax.models.config import ComputeConfig

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, rows // 2 + 1) + (4, 6)[2 - n_in :]), jnp.float32)
  axes = ("a", "b", "c")[:n_in] + ("o1", "o2")
  dense = lambda om: layers.dense(
      ComputeConfig(), (5, 7), axes, n_in=n_in, use_bias=False, out_major=om
  )
  params = nn.unbox(dense(False).init(jax.random.key(0), x))
  want = dense(False).apply(params, x)
  kernel = out_major(params["params"]["kernel"], n_in)
  assert kernel.shape == (5, 7) + x.shape[-n_in:]
  got = dense(True).apply({"params": {"kernel": kernel}}, x)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert got.shape == x.shape[:-n_in] + (5, 7)
