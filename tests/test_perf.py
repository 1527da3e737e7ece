"""Host limits: the accelerator peak table by device_kind, CPU measurements are sane."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import pytest

from dsvl_jax.runtime import perf


@dataclasses.dataclass(frozen=True)
class FakeDevice:
  device_kind: str
  platform: str = "tpu"


@pytest.mark.parametrize(
    "kind,peak",
    [
        ("TPU v4", 275e12),
        ("TPU v5 lite", 197e12),
        ("TPU v5e", 197e12),
        ("TPU v5", 459e12),
        ("TPU v5p", 459e12),
        ("TPU v6 lite", 918e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
    ],
)
def test_peak_table_matches_device_kinds(kind, peak):
  platform = "tpu" if kind.startswith("TPU") else "gpu"
  assert perf.device_peak_flops(FakeDevice(kind, platform)) == peak
  assert perf.device_peak_flops(FakeDevice(kind, platform), dtype=jnp.float32) == peak


@pytest.mark.parametrize("kind", ["TPU v4 lite", "TPU7x", "NVIDIA GeForce RTX 4090", ""])
def test_unknown_accelerators_have_no_peak(kind):
  """None, not a guess: the caller then reports no MFU (v4 lite is not a v4)."""
  assert perf.table_key(kind) is None
  assert perf.device_peak_flops(FakeDevice(kind, "gpu")) is None


def test_processor_name_is_reported():
  name = perf.processor_name()
  assert isinstance(name, str) and name.strip()


def test_cpu_measurements_are_sane():
  """Positive, finite and physically plausible for any CPU (no timing assertion)."""
  cpu = jax.devices("cpu")[0]
  peak = perf.device_peak_flops(cpu, jnp.float32)
  assert math.isfinite(peak) and 1e8 < peak < 1e14
  assert perf.device_peak_flops(cpu, jnp.float32) == peak  # measured once per process
  bw = perf.measure_bandwidth(64 << 20, repeats=2, device=cpu)
  assert math.isfinite(bw) and 1e8 < bw < 1e13
  limits = perf.HostLimits(perf.processor_name(), peak, bw, "float32")
  assert "GFLOP/s" in str(limits) and "GB/s" in str(limits)
