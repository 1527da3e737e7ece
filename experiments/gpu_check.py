"""GPU checks that CPU CI cannot make (run on a CUDA machine; see BUILD.md).

1. attention_impl='cudnn' equals the XLA reference attention (bf16, causal + left
   padding + packed segments, GQA) on realistic head sizes.
2. The tiny VLM gives the same logits on GPU as the float32 CPU reference numbers would:
   run `pytest tests/test_parity.py` with JAX_PLATFORMS=cuda for that (same script call).
Prints a table; exits non-zero on a mismatch.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from dsvl_jax.models.attention import attention


def check_cudnn(b=2, t=256, h=16, kvh=4, d=128, dtype=jnp.bfloat16) -> float:
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.standard_normal((b, t, h, d)), dtype)
  k = jnp.asarray(rng.standard_normal((b, t, kvh, d)), dtype)
  v = jnp.asarray(rng.standard_normal((b, t, kvh, d)), dtype)
  slot = jnp.broadcast_to(jnp.arange(t), (b, t))
  valid = jnp.ones((b, t), bool).at[0, :17].set(False)  # left padding in sample 0
  seg = jnp.concatenate(
      [jnp.ones((b, t // 2), jnp.int32), 2 * jnp.ones((b, t - t // 2), jnp.int32)], 1
  )
  kw = dict(causal=True, q_slot=slot, k_slot=slot, k_valid=valid, q_segment=seg, k_segment=seg)
  ref = jax.jit(lambda q, k, v: attention(q, k, v, impl="xla", **kw))(q, k, v)
  got = jax.jit(lambda q, k, v: attention(q, k, v, impl="cudnn", **kw))(q, k, v)
  real = np.asarray(valid)[:, :, None, None]  # fully masked (padding) rows are never read
  diff = np.abs(np.asarray(got, np.float32) - np.asarray(ref, np.float32))
  return float(np.where(real, diff, 0).max())


def main() -> int:
  print(f"devices: {jax.devices()}")
  rows, ok = [], True
  for d in (64, 128):
    err = check_cudnn(d=d)
    rows.append((f"cudnn vs xla attention, bf16, head_dim {d}", f"{err:.2e}"))
    ok &= err < 3e-2
  print("| check | max abs diff |\n|---|---|")
  for name, val in rows:
    print(f"| {name} | {val} |")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
