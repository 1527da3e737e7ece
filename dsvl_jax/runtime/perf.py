"""What the hardware can do: peak matmul FLOP/s and streaming bandwidth, for MFU and bounds.

Accelerators: `DEVICE_PEAK_FLOPS`, the vendors' published dense bf16 peak per chip,
matched from `device.device_kind`. CPUs: no table can know a host (this project's
CI hosts range from AVX2-only EPYCs to AVX-512-bf16 Xeons, 4x apart), so the peak is
measured at run time with a jitted square matmul, and benchmarks name the processor.

  device_peak_flops()        FLOP/s of jax.devices()[0] (table, or measured on CPU)
  host_limits()              processor name, measured matmul peak and read bandwidth
"""

from __future__ import annotations

import dataclasses
import functools
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense (no 2:4 sparsity) bf16 peak per chip, FLOP/s. Sources: Cloud TPU system
# architecture pages (v4 275 TF, v5e 197 TF, v5p 459 TF, v6e/Trillium 918 TF); NVIDIA
# data sheets, which print the sparse figure, halved here (A100 312 TF, all variants;
# H100 SXM 1979/2 = 989 TF, PCIe 1513/2 = 756 TF, NVL 1671/2 = 835 TF; H200 SXM is the
# H100 SXM die, 989 TF, H200 NVL 835 TF).
DEVICE_PEAK_FLOPS: dict[str, float] = {
    "tpu v4": 275e12,
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v6e": 918e12,
    "a100": 312e12,
    "h100 sxm": 989e12,
    "h100 pcie": 756e12,
    "h100 nvl": 835e12,
    "h200": 989e12,
    "h200 nvl": 835e12,
}

# device_kind strings -> table keys. TPUs report "TPU v5 lite" (v5e), "TPU v5" (v5p),
# "TPU v6 lite" (v6e); "TPU v4 lite" (v4i) is another chip and must not match v4.
_TPU_KINDS = {
    "tpu v4": "tpu v4",
    "tpu v5 lite": "tpu v5e",
    "tpu v5e": "tpu v5e",
    "tpu v5": "tpu v5p",
    "tpu v5p": "tpu v5p",
    "tpu v6 lite": "tpu v6e",
    "tpu v6e": "tpu v6e",
}

_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx")


def table_key(device_kind: str) -> str | None:
  """The DEVICE_PEAK_FLOPS key of a device_kind, or None when the chip is not listed.

  GPUs report e.g. "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H200",
  "NVIDIA A100-SXM4-40GB".
  """
  kind = " ".join(device_kind.lower().split())
  if kind.startswith("tpu"):
    return _TPU_KINDS.get(kind)
  for chip in ("h200", "h100"):
    if chip in kind:
      if "nvl" in kind:
        return f"{chip} nvl"
      if chip == "h100":
        return "h100 pcie" if "pcie" in kind else "h100 sxm"
      return chip
  return "a100" if "a100" in kind else None


def processor_name() -> str:
  """The CPU model plus the ISA extensions that decide XLA:CPU's matmul speed."""
  name, flags = "", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
          name = value.strip()
        elif key == "flags" and not flags:
          flags = set(value.split())
        if name and flags:
          break
  except OSError:
    pass
  name = name or platform.processor() or platform.machine() or "unknown processor"
  isa = [
      f
      for f in _ISA_FLAGS
      if f in flags or (f == "amx" and any(g.startswith("amx") for g in flags))
  ]
  return f"{name} ({', '.join(isa)})" if isa else name


def _best_time(fn, args, repeats: int, budget_s: float = 1.0) -> float:
  """Best of `repeats` timings after a warm-up; stops early (after two) past budget_s."""
  jax.block_until_ready(fn(*args))  # compile and warm up
  best, start = float("inf"), time.perf_counter()
  for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
    if i >= 1 and time.perf_counter() - start > budget_s:
      break
  return best


def measure_matmul_peak(
    dtype=jnp.float32, n: int = 2048, repeats: int = 5, device: jax.Device | None = None
) -> float:
  """FLOP/s of a jitted [n, n] @ [n, n] matmul in `dtype` (best of `repeats`).

  At most about 1.5 s (17 GFLOP a run at n=2048; a slow host stops after fewer
  repeats). On accelerators n=2048 is too small to reach the peak; use the table there.
  """
  device = device or jax.devices()[0]
  rng = np.random.default_rng(0)
  a, b = (
      jax.device_put(jnp.asarray(rng.standard_normal((n, n), np.float32), dtype), device)
      for _ in range(2)
  )
  return 2 * n**3 / _best_time(jax.jit(jnp.matmul), (a, b), repeats)


def measure_bandwidth(
    nbytes: int = 512 << 20, repeats: int = 5, device: jax.Device | None = None
) -> float:
  """Bytes/s of a streaming read: a float32 matrix-vector product over `nbytes`.

  This is what bounds decoding (every weight read once per token). The matrix (512 MiB
  by default) must be far larger than the last-level cache.
  """
  device = device or jax.devices()[0]
  cols = 4096
  rows = max(nbytes // (4 * cols), 1)
  with jax.default_device(device):
    m = jax.jit(lambda: jnp.ones((rows, cols), jnp.float32))()
    v = jnp.ones((cols,), jnp.float32)
  t = _best_time(jax.jit(jnp.matmul), (m, v), repeats)
  del m
  return rows * cols * 4 / t


@functools.lru_cache(maxsize=None)
def _measured_peak(device: jax.Device, dtype_name: str) -> float:
  return measure_matmul_peak(jnp.dtype(dtype_name), device=device)


def device_peak_flops(device: jax.Device | None = None, dtype=jnp.bfloat16) -> float | None:
  """Peak matmul FLOP/s of one device, or None for an accelerator not in the table.

  Accelerators: the table's dense bf16 peak whatever `dtype` is (MFU is quoted
  against it, as MaxText and Levanter do). CPU: measured in `dtype` once per process.
  """
  device = device or jax.devices()[0]
  if device.platform == "cpu":
    return _measured_peak(device, jnp.dtype(dtype).name)
  key = table_key(device.device_kind)
  return DEVICE_PEAK_FLOPS[key] if key else None


@dataclasses.dataclass(frozen=True)
class HostLimits:
  """What a benchmark's bounds are computed from, measured on this host."""

  processor: str
  peak_flops: float  # matmul FLOP/s in `dtype`
  bandwidth: float  # streaming-read bytes/s
  dtype: str

  def __str__(self) -> str:
    return (
        f"{self.processor}: {self.peak_flops / 1e9:.0f} GFLOP/s {self.dtype} matmul, "
        f"{self.bandwidth / 1e9:.1f} GB/s streaming read (measured)"
    )


def host_limits(dtype=jnp.float32) -> HostLimits:
  """Measures the default device's matmul peak and read bandwidth (~1-2 s on CPU)."""
  return HostLimits(
      processor_name(), measure_matmul_peak(dtype), measure_bandwidth(), jnp.dtype(dtype).name
  )


__all__ = [
    "DEVICE_PEAK_FLOPS",
    "HostLimits",
    "device_peak_flops",
    "host_limits",
    "measure_bandwidth",
    "measure_matmul_peak",
    "processor_name",
    "table_key",
]
