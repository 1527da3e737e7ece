"""The float32 islands of bfloat16 compute, each against a float64 NumPy reference.

With `compute.dtype='bfloat16'` the code keeps some work in float32 (layers.py, attention.py,
rope.py say where). A whole-model bf16 vs fp32 comparison cannot tell whether it does:
bf16 noise of ~1e-2 hides it. Each test here feeds inputs on which doing that work in
bf16 fails by a wide margin: large magnitudes, long rows of near-equal logits, positions
in the thousands.
"""

import jax
import jax.numpy as jnp
import numpy as np

from dsvl_jax.models import layers
from dsvl_jax.models.attention import attention
from dsvl_jax.models.config import ComputeConfig
from dsvl_jax.models.rope import apply_rope, rope_cos_sin

BF16 = jnp.bfloat16
COMPUTE = ComputeConfig(dtype="bfloat16", param_dtype="float32")


def _bf16(x):
  return np.asarray(x, np.float32).astype(BF16)


def _f64(x):
  return np.asarray(x).astype(np.float64)


def assert_rounded_from(out, ref, atol=0.0):
  """`out` (bf16) is `ref` (float64) rounded: within half a bf16 ulp, plus `atol`.

  Correct rounding is exactly 0.5 ulp; 0.51 leaves room for float32's own rounding.
  """
  out, ref = _f64(out), _f64(ref)
  assert out.shape == ref.shape
  ulp = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(ref), 1e-30))) - 7)  # 8 significant bits
  worst = (np.maximum(np.abs(out - ref) - atol, 0) / ulp).max()
  print(f"worst error {worst:.3f} bf16 ulp (+ atol {atol:g})")  # pytest -s
  assert worst <= 0.51, f"{worst:.3g} bf16 ulp from the float64 result"


def test_rms_norm_statistics_are_float32():
  """Rows from 1e-2 to 1e4 in magnitude: float32 statistics leave only the output's
  rounding (0.5 ulp); bf16 ones add their own rounding to every element of a row."""
  rng = np.random.default_rng(0)
  x = _bf16(rng.standard_normal((32, 512)) * 10.0 ** rng.uniform(-2, 4, (32, 1)))
  norm = layers.RMSNorm(COMPUTE, eps=1e-6)
  out = norm.apply(norm.init(jax.random.key(0), x), x)  # scale = 1: no rounding of its own
  assert out.dtype == BF16
  x64 = _f64(x)
  assert_rounded_from(out, x64 / np.sqrt(np.mean(x64**2, -1, keepdims=True) + 1e-6))


def test_layer_norm_statistics_are_float32_and_two_pass():
  """A large common offset: a bf16 mean is off by up to half its ulp (2 at 768), i.e.
  6% of the spread here; E[x^2] - E[x]^2 in float32 loses all of a unit variance at 1e4."""
  rng = np.random.default_rng(1)
  norm = layers.layer_norm(COMPUTE, eps=1e-6)
  for x, atol in (
      (_bf16(768 + 32 * rng.standard_normal((32, 256))), 0.0),
      ((1e4 + rng.standard_normal((32, 256))).astype(np.float32), 3e-3),
  ):
    out = norm.apply(norm.init(jax.random.key(0), x), x)  # scale 1, bias 0
    assert out.dtype == BF16
    x64 = _f64(x)
    centred = x64 - x64.mean(-1, keepdims=True)
    # atol: a float32 mean near 1e4 is itself off by about its ulp there, 1e-3
    assert_rounded_from(out, centred / np.sqrt(np.mean(centred**2, -1, keepdims=True) + 1e-6), atol)


def test_attention_logits_and_softmax_are_float32():
  """2048 keys whose logits are 128 + r, r in [-1, 1]: bf16 (ulp 0.5-1 at 128) rounds r
  to a few levels, which moves each probability by up to e^0.5."""
  rng = np.random.default_rng(2)
  b, tq, tk, h, kvh, d = 1, 4, 2048, 4, 2, 64  # grouped: 2 query heads per kv head
  q = np.zeros((b, tq, h, d), np.float32)
  k = np.zeros((b, tk, kvh, d), np.float32)
  q[..., 0], k[..., 0] = 64, 16  # the common part: 64 * 16 / sqrt(64) = 128
  q[..., 1], k[..., 1] = 8, rng.uniform(-1, 1, (b, tk, kvh))  # the spread: 8 * r / 8 = r
  q, k, v = _bf16(q), _bf16(k), _bf16(rng.standard_normal((b, tk, kvh, d)))
  out = attention(q, k, v)  # scale 1/sqrt(64)
  assert out.dtype == BF16

  q64, k64, v64 = _f64(q).reshape(b, tq, kvh, h // kvh, d), _f64(k), _f64(v)
  logits = np.einsum("bqkgd,bskd->bkgqs", q64, k64) / np.sqrt(d)
  assert 126 < logits.min() and logits.max() < 130  # near-equal: no key dominates
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  ref = np.einsum("bkgqs,bskd->bqkgd", probs, v64).reshape(b, tq, h, d)
  err = np.abs(_f64(out) - ref).max() / np.abs(ref).max()
  print(f"attention: relative error {err:.2e}")  # pytest -s
  # bf16 probabilities, value matmul and output round at ~2^-9 each: 3e-3 measured
  assert err < 1e-2, f"relative error {err:.3g}"


def test_rope_angles_are_float32_at_large_positions():
  """Positions up to 16383 (the real models' limit): bf16 holds integers exactly only to
  256, so a bf16 angle is off by up to 64 radians there; float32's is off by ~1e-3."""
  positions = jnp.array([[0, 1, 255, 257, 1000, 2049, 4095, 4097, 8191, 12345, 16383]])
  head_dim, theta = 128, 10000.0
  cos, sin = rope_cos_sin(positions, head_dim, theta, BF16)
  assert cos.dtype == sin.dtype == BF16
  inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)
  angles = _f64(positions)[..., None] * inv_freq
  angles = np.concatenate([angles, angles], -1)  # rotate-half layout
  # bf16 rounding of values in [-1, 1] is <= 2^-9; the float32 angle adds <= 1e-3
  np.testing.assert_allclose(_f64(cos), np.cos(angles), rtol=0, atol=3e-3)
  np.testing.assert_allclose(_f64(sin), np.sin(angles), rtol=0, atol=3e-3)

  x = _bf16(np.random.default_rng(3).standard_normal((1, positions.shape[1], 2, head_dim)))
  out = apply_rope(x, cos, sin)
  x64, half = _f64(x), head_dim // 2
  rotated = np.concatenate([-x64[..., half:], x64[..., :half]], -1)
  ref = x64 * np.cos(angles)[:, :, None] + rotated * np.sin(angles)[:, :, None]
  err = np.abs(_f64(out) - ref).max() / np.abs(ref).max()
  print(f"rope: relative error {err:.2e}")  # pytest -s
  assert err < 1e-2, f"relative error {err:.3g}"
