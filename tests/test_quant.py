"""Weight-only quantisation (model.compute.quant, models/quant.py): int8, int4 and nf4
codes and scales agree with a numpy reference written here; every value is within half
a step of its weight; a model holding quantised kernels computes exactly what the float
model does on the dequantised kernels; int8 logits stay within a tolerance derived from
the quantisation step; the config fields reach config data and refuse what they cannot
mean; QLoRA's representation is this one."""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from conftest import tiny_config
from flax import traverse_util
from ml_collections import config_flags

from dsvl_jax.config.files import REPO_ROOT, load_config
from dsvl_jax.config.schema import ConfigError
from dsvl_jax.models import DeepseekVL, VLMConfig, layers, lora, quant, quant_tree
from dsvl_jax.models.config import ComputeConfig, QuantConfig
from dsvl_jax.models.init import abstract_params, init_params

LEVELS = {"int8": 127, "int4": 7}  # codes per side of zero
TOWERS = ("llm/layers*/*_proj", "vision/siglip/*", "vision/sam/*", "aligner/*")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def flat(tree):
  return traverse_util.flatten_dict(tree, sep="/")


# --- one array against numpy ---------------------------------------------------------


def reference(w, kind, block):
  """Blockwise absmax quantisation in float64 numpy: (codes or NF4 level indices,
  dequantised values, absmax per block [..., n / b])."""
  *lead, n = w.shape
  b = min(block, n)
  x = w.astype(np.float64).reshape(*lead, n // b, b)
  absmax = np.abs(x).max(-1, keepdims=True)
  u = x / np.where(absmax == 0, 1, absmax)
  if kind == "nf4":
    codes = np.abs(u[..., None] - quant.NF4.astype(np.float64)).argmin(-1)
    deq = quant.NF4.astype(np.float64)[codes] * absmax
  else:
    codes = np.round(u * LEVELS[kind])
    deq = codes / LEVELS[kind] * absmax
  return codes.reshape(w.shape), deq.reshape(w.shape), absmax[..., 0]


def unpack(codes, kind):
  """Stored codes -> one code per value, by numpy bit operations on the bytes."""
  if kind == "int8":
    assert codes.dtype == np.int8
    return codes.astype(np.int64)
  byte = codes.view(np.uint8).astype(np.int64)
  hi, lo = byte >> 4, byte & 15  # the first value of a pair in the high nibble
  if kind == "int4":  # each nibble a 4-bit two's complement
    assert codes.dtype == np.int8
    hi, lo = np.where(hi >= 8, hi - 16, hi), np.where(lo >= 8, lo - 16, lo)
  else:
    assert codes.dtype == np.uint8
  return np.stack([hi, lo], -1).reshape(*codes.shape[:-1], -1)


def special_kernel():
  """[3, 5, 256] normal weights (blocks of 64) with an all-zero block, a block of one
  value (positive and negative), and a block holding one nonzero value."""
  w = np.random.default_rng(0).normal(0, 0.02, (3, 5, 256)).astype(np.float32)
  w[0, 0, :64] = 0.0
  w[0, 1, 64:128] = 0.0375
  w[1, 2, 128:192] = -0.0125
  w[2, 3, 192:] = 0.0
  w[2, 3, 200] = -0.05
  return w


@pytest.mark.parametrize("kind", ["int8", "int4", "nf4"])
def test_codes_scales_and_values_match_numpy(kind):
  w = special_kernel()
  stored = quant.quantize(jnp.asarray(w), kind, 64)
  codes, scale = np.asarray(stored["codes"]), np.asarray(stored["scale"])
  ref_codes, ref_deq, ref_absmax = reference(w, kind, 64)
  assert codes.shape == ((3, 5, 256) if kind == "int8" else (3, 5, 128))
  assert scale.dtype == np.float32 and scale.shape == (3, 5, 4)
  np.testing.assert_array_equal(scale, ref_absmax.astype(np.float32))
  np.testing.assert_array_equal(unpack(codes, kind), ref_codes)
  ours = np.asarray(quant.dequantize(stored, kind))
  assert ours.dtype == np.float32
  np.testing.assert_allclose(ours, ref_deq, rtol=2.5e-7, atol=0)  # two float32 roundings
  # The special blocks: zero stays zero (scale 0); a block of one value and a lone
  # value come back exactly (their code is the top one, 1.0 x the scale).
  assert scale[0, 0, 0] == 0 and not ours[0, 0, :64].any()
  np.testing.assert_array_equal(ours[0, 1, 64:128], np.float32(0.0375))
  np.testing.assert_array_equal(ours[1, 2, 128:192], np.float32(-0.0125))
  np.testing.assert_array_equal(ours[2, 3, 192:], w[2, 3, 192:])
  if kind != "nf4":
    assert np.abs(unpack(codes, kind)).max() == LEVELS[kind]  # -8 never written (int4)


def test_int4_packs_two_signed_nibbles_a_byte_high_first():
  w = np.array([[-7, 7, 0, -1, 3, -3, 7, 2]], np.float32) / 7 * 0.5  # absmax 0.5: codes
  stored = quant.quantize(jnp.asarray(w), "int4", 8)
  assert np.asarray(stored["codes"]).view(np.uint8).tolist() == [[0x97, 0x0F, 0x3D, 0x72]]
  np.testing.assert_allclose(np.asarray(quant.dequantize(stored, "int4")), w, atol=1e-8)


def test_a_last_axis_shorter_than_the_block_is_one_block():
  w = np.random.default_rng(1).normal(size=(4, 16)).astype(np.float32)
  stored = quant.quantize(jnp.asarray(w), "int4", 64)
  assert stored["scale"].shape == (4, 1)
  np.testing.assert_array_equal(
      unpack(np.asarray(stored["codes"]), "int4"), reference(w, "int4", 16)[0]
  )


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_every_value_is_within_half_a_step(kind):
  """|w - deq(q(w))| <= absmax / (2 * 127) (int8) or absmax / (2 * 7) (int4) in every
  block, and the worst value comes near it (the step is no finer than that)."""
  w = np.random.default_rng(2).standard_t(4, (64, 1024)).astype(np.float32)
  ours = np.asarray(quant.dequantize(quant.quantize(jnp.asarray(w), kind, 64), kind))
  absmax = np.abs(w).reshape(64, 16, 64).max(-1, keepdims=True)
  err = np.abs(ours.astype(np.float64) - w).reshape(64, 16, 64) / absmax
  bound = 1 / (2 * LEVELS[kind])
  assert err.max() <= bound * (1 + 1e-6)
  assert err.max() > 0.98 * bound


def test_nf4_values_are_within_half_the_widest_gap():
  w = np.random.default_rng(3).normal(size=(32, 512)).astype(np.float32)
  ours = np.asarray(quant.dequantize(quant.quantize(jnp.asarray(w), "nf4", 64), "nf4"))
  absmax = np.abs(w).reshape(32, 8, 64).max(-1, keepdims=True)
  err = np.abs(ours - w).reshape(32, 8, 64) / absmax
  assert err.max() <= np.diff(quant.NF4.astype(np.float64)).max() / 2 + 1e-6


@pytest.mark.parametrize("kind", ["int8", "int4"])
@pytest.mark.parametrize("out_major", [False, True])
def test_one_matmul_is_within_the_propagated_bound(kind, out_major):
  """The per-weight bound through one Dense: y_j = sum_i x_i W_ij moves by at most
  sum_i |x_i| absmax(W_ij's block) / (2 levels), blocks along the stored kernel's last
  axis (the output axis in-major, the input axis out-major)."""
  rng = np.random.default_rng(4)
  x = rng.standard_t(3, (5, 64)).astype(np.float32)  # heavy-tailed activations
  w = rng.normal(0, 0.05, (64, 48)).astype(np.float32)  # [in, out]
  stored_w = w.T if out_major else w
  compute = ComputeConfig(precision="highest", quant=QuantConfig(kind, 16, ("*",)))
  dense = layers.dense(compute, 48, ("embed", "mlp"), use_bias=False, out_major=out_major)
  stored = quant.quantize(jnp.asarray(stored_w), kind, 16)
  y = np.asarray(dense.apply({"params": {"kernel_q": stored}}, jnp.asarray(x)), np.float64)
  rows = stored_w.shape[0]
  absmax = np.abs(stored_w).reshape(rows, -1, 16).max(-1).repeat(16, -1)  # per weight
  absmax = absmax.T if out_major else absmax  # [in, out]
  bound = np.abs(x).astype(np.float64) @ absmax / (2 * LEVELS[kind])
  err = np.abs(y - x.astype(np.float64) @ w.astype(np.float64))
  assert (err <= bound + 1e-5 * np.abs(y).max()).all()
  assert err.max() > 0  # it computed with the codes


# --- whole models ---------------------------------------------------------------------


def _cfg(family, **quant_fields):
  return tiny_config(family, quant=dict(targets=TOWERS, **quant_fields))


@functools.lru_cache(maxsize=None)
def _setup(family):
  """(float config, float params, ids with an image and a text-only row, the image)."""
  cfg = tiny_config(family)
  params = init_params(cfg, jax.random.key(0))
  k = cfg.num_image_tokens
  ids = np.array(
      [[1, 4] + [cfg.image_token_id] * k + list(range(5, 25)), [1] + list(range(30, k + 51))]
  )
  images = np.random.default_rng(0).random((1, 3, cfg.image_size, cfg.image_size), np.float32)
  return cfg, params, ids, images


def _logits(cfg, params, ids, images):
  fn = jax.jit(lambda p: DeepseekVL(cfg).apply({"params": p}, ids, images)["logits"])
  return np.asarray(fn(params))


@functools.lru_cache(maxsize=None)
def _quantised(family, kind):
  """(quantised config, tree, logits)."""
  _, params, ids, images = _setup(family)
  cfg = _cfg(family, kind=kind)
  tree = quant_tree.quantize_tree(params, cfg)
  return cfg, tree, _logits(cfg, tree, ids, images)


def _expected_modules(cfg: VLMConfig) -> set[str]:
  """The Dense layers of the towers, the aligner and the LLM's projections, by hand."""
  out = {f"llm/layers/{p}" for p in PROJECTIONS}
  vit = ("attn/qkv", "attn/proj")
  out |= {f"vision/siglip/blocks/{m}" for m in vit + ("mlp/fc1", "mlp/fc2")}
  if cfg.hybrid:
    out |= {"aligner/high_up_proj", "aligner/low_up_proj", "aligner/proj"}
    groups = cfg.sam.global_attn_indexes[0] + 1  # blocks per scanned group
    out |= {
        f"vision/sam/blocks/block_{i}/{m}"
        for i in range(groups)
        for m in vit + ("mlp/lin1", "mlp/lin2")
    }
  else:
    out |= {"aligner/linear_0", "aligner/linear_1"}
  return out


@pytest.mark.parametrize("kind", ["int8", "int4", "nf4"])
def test_the_quantised_model_is_the_float_model_on_the_dequantised_tree(family, kind):
  fcfg, params, ids, images = _setup(family)
  cfg, tree, logits = _quantised(family, kind)
  before = {k: np.array(v) for k, v in flat(params).items()}
  assert inspect.isgenerator(quant_tree.quantize_leaves(params, cfg))
  got = flat(tree)
  # Exactly the Dense kernels of the targets: no conv (patch embeddings, SAM's neck and
  # downsampling), norm, embedding or LM head; as the model's own init lays them out.
  assert {p.rsplit("/", 2)[0] for p in got if "/kernel_q/" in p} == _expected_modules(cfg)
  assert "llm/lm_head/kernel" in got and "llm/embed_tokens/embedding" in got
  shapes = lambda t: jax.tree.map(lambda v: (v.shape, jnp.dtype(v.dtype)), t)
  assert shapes(tree) == shapes(abstract_params(cfg))
  for path, value in before.items():  # the caller's float tree, untouched
    np.testing.assert_array_equal(np.asarray(flat(params)[path]), value)
  twin = quant_tree.dequantize_tree(tree, cfg)
  assert shapes(twin) == shapes(params) == shapes(abstract_params(quant_tree.float_config(cfg)))
  np.testing.assert_allclose(logits, _logits(fcfg, twin, ids, images), rtol=0, atol=1e-6)
  assert np.abs(logits - _logits(fcfg, params, ids, images)).max() > 0


def _step_error(cfg, tree, params):
  """sqrt(sum over quantised matrices of rho^2): rho^2 = the variance of a uniform
  rounding error, step^2 / 12 with step = absmax / levels per block, over the mean
  square weight of the matrix (its relative RMS weight error), from the scales alone."""
  q, w, total = flat(tree), flat(params), 0.0
  for module in {p.rsplit("/", 2)[0] for p in q if "/kernel_q/" in p}:
    scale = np.asarray(q[f"{module}/kernel_q/scale"], np.float64)
    kernel = np.asarray(w[f"{module}/kernel"], np.float64)
    block = kernel.shape[-1] // scale.shape[-1]
    rho2 = (block * (scale / LEVELS[cfg.compute.quant.kind]) ** 2 / 12).sum() / (kernel**2).sum()
    matrices = kernel.shape[0] if "/layers/" in module or "/blocks/" in module else 1
    total += matrices * rho2  # a scanned stack: rho^2 is its layers' mean
  return np.sqrt(total)


def test_int8_logits_are_within_the_step_tolerance_and_int4_further(family):
  """Tolerance: each quantised matmul perturbs its output by a relative RMS error rho
  (the weights' rounding error, uncorrelated with the activations: x . dW over x . W),
  rho^2 = (step^2 / 12) / mean(W^2) with step = absmax / 127 per block; to first order
  the M matmuls on the way to a logit add independent errors, which the residual
  streams and norms carry with a gain near 1, so the logits' relative RMS error is
  about sqrt(sum rho^2) (~sqrt(M) rho). We allow twice that (gains above 1 through
  softmax and gating; measured: 0.83x the estimate for the SigLIP family, 0.50x for the
  hybrid at int8, the same at int4). int4's step is 127/7 = 18x int8's: its error must
  be larger, by about that factor (measured 16x and 18x)."""
  fcfg, params, ids, images = _setup(family)
  ref = _logits(fcfg, params, ids, images)
  rel = {}
  for kind in ("int8", "int4"):
    cfg, tree, logits = _quantised(family, kind)
    rel[kind] = np.sqrt(np.mean((logits - ref) ** 2) / np.mean(ref**2))
    tolerance = 2 * _step_error(cfg, tree, params)
    print(f"{family} {kind}: relative RMS logit error {rel[kind]:.4f}, tolerance {tolerance:.4f}")
    if kind == "int8":
      assert 0 < rel[kind] <= tolerance
  assert rel["int4"] > rel["int8"]
  assert 127 / 7 / 2 < rel["int4"] / rel["int8"] < 127 / 7 * 2


def test_out_major_kernels_are_quantised_as_dense_holds_them():
  """The generators' layout (per-layer LLM, kernels [*out, *in]): blocks run along the
  stored kernel's last axis, an input axis, as Dense creates them there; in-major
  params under that config are refused, naming the kernel."""
  layout = dict(scan_layers=False, llm_kernels_out_major=True)
  fcfg = tiny_config("siglip", **layout)
  cfg = tiny_config("siglip", **layout, quant=dict(kind="int4", block=16))
  _, _, ids, images = _setup("siglip")
  params = init_params(fcfg, jax.random.key(1))
  tree = quant_tree.quantize_tree(params, cfg)
  shapes = lambda t: jax.tree.map(lambda v: v.shape, t)
  assert shapes(tree) == shapes(abstract_params(cfg))
  kernel = np.asarray(params["llm"]["layers_1"]["q_proj"]["kernel"])  # [heads, head_dim, D]
  stored = tree["llm"]["layers_1"]["q_proj"]["kernel_q"]
  codes, _, absmax = reference(kernel, "int4", 16)
  assert kernel.shape == (4, 16, 64) and stored["scale"].shape == (4, 16, 4)
  np.testing.assert_array_equal(unpack(np.asarray(stored["codes"]), "int4"), codes)
  np.testing.assert_array_equal(np.asarray(stored["scale"]), absmax.astype(np.float32))
  got = _logits(cfg, tree, ids, images)
  want = _logits(fcfg, quant_tree.dequantize_tree(tree, cfg), ids, images)
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  in_major = init_params(tiny_config("siglip", scan_layers=False), jax.random.key(1))
  with pytest.raises(ValueError, match=r"^llm/layers_0/\w+_proj: kernel .*llm_kernels_out_major"):
    quant_tree.quantize_tree(in_major, cfg)


def test_a_random_init_quantises_the_kernel_a_float_init_draws(family):
  fcfg = tiny_config(family)
  cfg = _cfg(family, kind="int4")
  got = flat(init_params(cfg, jax.random.key(3)))
  want = flat(quant_tree.quantize_tree(init_params(fcfg, jax.random.key(3)), cfg))
  assert got.keys() == want.keys()
  for path, value in got.items():
    # XLA fuses the draw into the absmax at init: scales may differ in the last bit.
    tol = 1e-6 if path.endswith("/scale") else 0
    np.testing.assert_allclose(np.asarray(value), np.asarray(want[path]), rtol=tol, err_msg=path)


# --- QLoRA is this representation -----------------------------------------------------


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_quantize_tree_of_a_qlora_config_is_its_base(kind):
  """lora.base_quant goes through the same path (compute.kernel_quant): the tree
  lora.quantized builds for a QLoRA run, bit for bit, and back to float."""
  cfg = tiny_config("hybrid", lora=dict(rank=4, base_quant=kind, quant_block=16))
  float_cfg = quant_tree.float_config(cfg)
  assert float_cfg.compute.lora.base_quant == "none" and float_cfg.compute.lora.rank == 4
  params = init_params(float_cfg, jax.random.key(0))
  want = flat(lora.quantized(params, cfg))
  got = flat(quant_tree.quantize_tree(params, cfg))
  assert got.keys() == want.keys()
  assert {p.rsplit("/", 2)[0] for p in got if "/kernel_q/" in p} == {
      f"llm/layers/{p}" for p in PROJECTIONS
  }
  for path, value in got.items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(want[path]), path)
  twin = flat(quant_tree.dequantize_tree(quant_tree.quantize_tree(params, cfg), cfg))
  w = np.asarray(flat(params)["llm/layers/q_proj/kernel"])
  _, ref_deq, _ = reference(w, kind, 16)
  np.testing.assert_allclose(np.asarray(twin["llm/layers/q_proj/kernel"]), ref_deq, rtol=2.5e-7)


# --- configuration --------------------------------------------------------------------


def test_quant_fields_are_config_data_overridable_from_the_command_line(monkeypatch):
  argv = [
      "prog",
      f"--config={REPO_ROOT}/configs/tiny.py:hybrid",
      "--config.model.compute.quant.kind=int4",
      "--config.model.compute.quant.block=32",
      "--config.model.compute.quant.targets=('llm/layers*/*_proj', 'vision/sam/*')",
  ]
  monkeypatch.setattr("sys.argv", argv)
  values = flags.FlagValues()
  flag = config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True)
  values(argv)
  cfg = VLMConfig.from_dict(flag.value.model)
  assert cfg.compute.quant == QuantConfig("int4", 32, ("llm/layers*/*_proj", "vision/sam/*"))
  assert cfg.compute.quant.applies("vision/sam/blocks/block_0/mlp/lin1")
  assert not cfg.compute.quant.applies("vision/siglip/blocks/mlp/fc1")
  shipped = load_config("configs/deepseek_vl_7b.py").model.compute.quant.to_dict()
  assert shipped == {"kind": "none", "block": 64, "targets": ("llm/layers*/*_proj",)}
  off = VLMConfig.from_dict(load_config("configs/tiny.py").model).compute
  assert off.quant.kind == "none" and off.kernel_quant("llm/layers/q_proj") is None


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"quant": {"kind": "int2"}}, r"'model\.compute\.quant\.kind'.*'int8', 'int4', 'nf4'"),
        ({"quant": {"kind": "int8", "block": 1}}, r"'model\.compute\.quant\.block': must be >= 2"),
        ({"quant": {"kind": "int4", "block": 33}}, r"'model\.compute\.quant\.block': int4 packs"),
        ({"quant": {"kind": "int8", "targets": ()}}, r"'model\.compute\.quant\.targets'"),
        (
            {"quant": {"kind": "int8"}, "lora": {"rank": 4, "base_quant": "nf4"}},
            r"'model\.compute\.quant\.kind': one representation per kernel",
        ),
        (
            {"quant": {"kind": "int8"}, "lora": {"rank": 4}},
            r"'model\.compute\.quant\.targets': 'llm/layers\*/\*_proj' names kernels",
        ),
    ],
)
def test_bad_quant_configs_are_one_line_naming_the_field(fields, match):
  with pytest.raises(ConfigError, match=match) as e:
    tiny_config("siglip", **fields)
  assert "\n" not in str(e.value)


def test_a_block_that_does_not_divide_a_kernel_names_the_kernel():
  cfg = tiny_config("siglip", quant=dict(kind="int8", block=48))  # 64 and 128 wide axes
  match = (
      r"^llm/layers/\w+_proj: a last axis of \d+ does not split into blocks of 48 .*quant\.block"
  )
  with pytest.raises(ValueError, match=match):
    abstract_params(cfg)
  with pytest.raises(ValueError, match=match):
    quant_tree.quantize_tree(_setup("siglip")[1], cfg)


def test_adapters_and_quantised_kernels_on_different_layers():
  """LoRA on the LLM beside an int8 SigLIP: allowed; a kernel claimed by both (patterns
  that validation cannot compare) is refused when the model is built, naming it."""
  cfg = tiny_config("siglip", lora=dict(rank=4), quant=dict(kind="int8", targets=("vision/*",)))
  paths = flat(abstract_params(cfg))
  assert "llm/layers/q_proj/lora_a" in paths and "llm/layers/q_proj/kernel" in paths
  assert "vision/siglip/blocks/mlp/fc1/kernel_q/codes" in paths
  both = tiny_config("siglip", lora=dict(rank=4), quant=dict(kind="int8", targets=("llm/*/q_*",)))
  with pytest.raises(ConfigError, match=r"llm/layers/q_proj is also adapted"):
    abstract_params(both)


def test_float_config_turns_every_kernel_float():
  cfg = _cfg("siglip", kind="int8")
  plain = quant_tree.float_config(cfg)
  assert plain == dataclasses.replace(
      cfg, compute=dataclasses.replace(cfg.compute, quant=QuantConfig("none", 64, TOWERS))
  )
  assert all(not p.endswith("kernel_q/codes") for p in flat(abstract_params(plain)))
