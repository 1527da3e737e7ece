"""Multi-host start-up: `jax.distributed.initialize` from the config or the environment.

`config.distributed.mode`:
  auto        initialise when the environment or the config describes a multi-process
              job, else run as one process:
                - an explicit coordinator: `distributed.coordinator_address` or
                  JAX_COORDINATOR_ADDRESS (with the process count and id from the
                  config or JAX_NUM_PROCESSES / JAX_PROCESS_ID);
                - SLURM with more than one task (srun sets SLURM_NTASKS, SLURM_PROCID);
                - a multi-worker Cloud TPU slice (TPU_WORKER_HOSTNAMES lists several
                  hosts, or MEGASCALE_COORDINATOR_ADDRESS is set);
              in the last two JAX reads everything from the environment itself.
  initialize  always call `jax.distributed.initialize` (JAX auto-detects TPU pods,
              SLURM, Open MPI and Kubernetes; it fails loudly if it finds nothing)
  none        never (one process, whatever the environment says)

It must run before anything touches a device. Every process then runs the same
program; `jax.process_index() == 0` writes logs, metrics and the config.

`prepare_host()` (also before any device is touched) fits two CPU-host settings to the
machine, unless the user set them: simulated devices get enough XLA:CPU threads, and a
host without a TPU skips libtpu's start-up when libtpu is installed.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import os
import re
from typing import Any, Literal, Mapping, MutableMapping

from dsvl_jax.config.schema import build_dataclass, check

Mode = Literal["auto", "initialize", "none"]  # the module docstring says what each does


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  mode: Mode = "auto"  # auto | initialize | none (module docstring)
  coordinator_address: str = ""  # host:port of process 0; "" = from the environment
  num_processes: int = 0  # 0 = from the environment
  process_id: int = -1  # -1 = from the environment
  local_device_ids: tuple[int, ...] = ()  # () = every local device
  initialization_timeout: int = 300  # seconds to wait for every process to join

  def validate(self) -> "DistributedConfig":
    check(self.num_processes >= 0, "distributed.num_processes", "must be >= 0 (0 = env)")
    check(self.process_id >= -1, "distributed.process_id", "must be >= -1 (-1 = env)")
    if self.coordinator_address:
      check(
          self.num_processes > 0 and 0 <= self.process_id < self.num_processes,
          "distributed.process_id",
          f"an explicit coordinator needs num_processes > 0 "
          f"and 0 <= process_id < num_processes, got {self.process_id} of "
          f"{self.num_processes}",
      )
    return self


def distributed_config(d: Mapping[str, Any] | None) -> DistributedConfig:
  return build_dataclass(DistributedConfig, dict(d or {}), "distributed").validate()


def detected_environment(env: Mapping[str, str] = os.environ) -> str | None:
  """Which multi-process environment `auto` sees (None: a single process)."""
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1"))) > 1:
    return "SLURM"
  if "," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "Cloud TPU"
  return None


def initialize(config: Any, env: Mapping[str, str] = os.environ) -> bool:
  """Joins the multi-process job the config or environment describes; True if it did.

  `config` is the whole run config (its `distributed` block may be absent: defaults).
  """
  cfg = distributed_config(config.get("distributed") if hasattr(config, "get") else None)
  if cfg.mode == "none":
    return False
  source = "config" if cfg.coordinator_address else detected_environment(env)
  if cfg.mode == "auto" and source is None:
    return False
  import jax  # pylint: disable=g-import-not-at-top

  kwargs: dict[str, Any] = {"initialization_timeout": cfg.initialization_timeout}
  if cfg.coordinator_address:
    kwargs.update(
        coordinator_address=cfg.coordinator_address,
        num_processes=cfg.num_processes,
        process_id=cfg.process_id,
    )
  if cfg.local_device_ids:
    kwargs["local_device_ids"] = list(cfg.local_device_ids)
  jax.distributed.initialize(**kwargs)
  logging.info(
      "jax.distributed: process %d of %d (%s), %d local devices of %d",
      jax.process_index(),
      jax.process_count(),
      source or "auto-detected",
      jax.local_device_count(),
      jax.device_count(),
  )
  return True


def default_config():
  """The `config.distributed` block of configs/*.py (fields: DistributedConfig)."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  return ml_collections.ConfigDict(dataclasses.asdict(DistributedConfig()))


# Google's PCI vendor id: every TPU chip a host holds is one such device.
_TPU_VENDOR = "0x1ae0"
_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=(\d+)")
# A collective waits for its last simulated device; on a busy 2-core host that can take
# longer than XLA:CPU's 40 s before it aborts the process.
_COLLECTIVE_TIMEOUTS = (
    "--xla_cpu_collective_call_terminate_timeout_seconds=600",
    "--xla_cpu_collective_timeout_seconds=600",
)


def prepare_host(environ: MutableMapping[str, str] = os.environ) -> list[str]:
  """Sets what a run on this host needs before JAX starts a backend; returns what it set.

  - Simulated CPU devices (`--xla_force_host_platform_device_count=N` in XLA_FLAGS):
    XLA:CPU runs every device's ready thunks on one pool of N threads, and a step whose
    collectives sit in a scanned loop can fill all N with rendezvous whose partners are
    queued behind them: a deadlock, ending in "Termination timeout ... exceeded". With
    PJRT_NPROC = 4 N threads the partners run. Longer collective timeouts too.
  - libtpu installed on a host with no TPU chip (the test requirements install it for
    ahead-of-time compilation): JAX would start the TPU backend, which prints an
    `E0000 ... unexpected worker hostname` error line; JAX_PLATFORMS=cpu skips it, unless
    the host has a GPU (then nothing is changed).
  """
  changed = []
  flags = environ.get("XLA_FLAGS", "")
  simulated = _DEVICE_COUNT.search(flags)
  if simulated and int(simulated.group(1)) > 1:
    if "PJRT_NPROC" not in environ:
      environ["PJRT_NPROC"] = str(4 * int(simulated.group(1)))
      changed.append(f"PJRT_NPROC={environ['PJRT_NPROC']}")
    extra = [f for f in _COLLECTIVE_TIMEOUTS if f.split("=")[0] not in flags]
    if extra:
      environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
      changed.append("XLA_FLAGS+=" + " ".join(extra))
  if (
      "JAX_PLATFORMS" not in environ
      and importlib.util.find_spec("libtpu") is not None
      and not _has_tpu()
      and not _has_gpu()
  ):
    environ["JAX_PLATFORMS"] = "cpu"
    changed.append("JAX_PLATFORMS=cpu")
  return changed


def _has_tpu() -> bool:
  for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor) as f:
        if f.read().strip() == _TPU_VENDOR:
          return True
    except OSError:
      continue
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _has_gpu() -> bool:
  return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"))
