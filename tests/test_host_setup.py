"""What `distributed.prepare_host` sets before JAX starts, and a user's command line on
this CPU host: 8 simulated devices train on a (1, 8, 1) mesh with no PJRT_NPROC set by
the user, and no libtpu error line is printed although libtpu is installed."""

import importlib.util
import os
import pathlib
import subprocess
import sys

from dsvl_jax.runtime import distributed

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_simulated_devices_get_threads_and_collective_timeouts():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  changed = distributed.prepare_host(env)
  assert env["PJRT_NPROC"] == "32"
  assert "--xla_cpu_collective_call_terminate_timeout_seconds=600" in env["XLA_FLAGS"]
  assert "--xla_cpu_collective_timeout_seconds=600" in env["XLA_FLAGS"]
  assert env["XLA_FLAGS"].startswith("--xla_force_host_platform_device_count=8")
  assert changed[0] == "PJRT_NPROC=32"


def test_what_the_user_set_is_kept():
  flags = (
      "--xla_force_host_platform_device_count=4 "
      "--xla_cpu_collective_call_terminate_timeout_seconds=30 "
      "--xla_cpu_collective_timeout_seconds=30"
  )
  env = {"XLA_FLAGS": flags, "PJRT_NPROC": "6", "JAX_PLATFORMS": "cpu,tpu"}
  assert distributed.prepare_host(env) == []
  assert env == {"XLA_FLAGS": flags, "PJRT_NPROC": "6", "JAX_PLATFORMS": "cpu,tpu"}
  one = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
  assert distributed.prepare_host(one) == [] and "PJRT_NPROC" not in one


def test_libtpu_without_a_tpu_runs_on_the_cpu_backend():
  assert importlib.util.find_spec("libtpu") is not None, "the test requirements install it"
  assert not distributed._has_tpu() and not distributed._has_gpu()  # this host
  env = {}
  assert distributed.prepare_host(env) == ["JAX_PLATFORMS=cpu"]
  assert env == {"JAX_PLATFORMS": "cpu"}


def test_a_user_run_on_8_simulated_devices_needs_no_settings_and_prints_no_tpu_error(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "JAX_PLATFORMS")}
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "dsvl_jax.main",
          "--config=configs/tiny.py",
          "--config.mode=train",
          f"--workdir={tmp_path / 'run'}",
          "--verbosity=0",
          "--config.train.steps=2",
          "--config.train.progress=False",
          "--config.data.global_batch_size=8",
          "--config.mesh.shape=(1,8,1)",
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "host set-up: PJRT_NPROC=32" in out.stderr
  assert "host set-up: JAX_PLATFORMS=cpu" in out.stderr
  assert "'fsdp': 8" in out.stderr + out.stdout  # the mesh really is (1, 8, 1)
  assert "E0000" not in out.stderr and "libtpu" not in out.stderr, out.stderr[-3000:]
