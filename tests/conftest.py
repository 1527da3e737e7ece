"""Test set-up: 8 simulated CPU devices (for mesh tests) before JAX is imported."""

import os

# 8 devices share 2 cores: a collective can wait long for its last device thread on a
# busy host, and XLA:CPU aborts the process after 40 s of that by default ("Termination
# timeout ... exceeded"; it happened once in a full run). Ten minutes, not 40 s.
CPU_COLLECTIVE_FLAGS = (
    "--xla_cpu_collective_call_terminate_timeout_seconds=600 "
    "--xla_cpu_collective_timeout_seconds=600"
)
# The suite's programs are tiny and run a few times each: most of its time was XLA:CPU
# optimising code (LLVM -O3). At -O0 tests/test_train.py took 164 s instead of 202 s on
# a 2-core Intel host. The semantics are the same; float results may differ in the last
# bit (contraction into FMAs), far inside every tolerance. DSVL_TEST_XLA_OPT_LEVEL=3
# (or any level) runs the suite as users' programs are compiled.
_OPT_LEVEL = os.environ.get("DSVL_TEST_XLA_OPT_LEVEL", "0")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 "
    + CPU_COLLECTIVE_FLAGS
    + f" --xla_backend_optimization_level={_OPT_LEVEL}"
).strip()
# XLA:CPU runs ready thunks of every simulated device on one intra-op pool, as many
# threads as devices by default. A train step on a (1, 2, 4) mesh has collectives in a
# scanned loop and beside it, and in one run in three all 8 threads sat in rendezvous
# (collective-permute and all-gather) whose partners were queued behind them: a
# deadlock (gdb showed it). Four threads per device leaves room for the partners.
os.environ.setdefault("PJRT_NPROC", "32")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# tests/test_aot.py loads libtpu to compile for TPU topologies; without this a second
# process doing the same (another test run, experiments/aot_compile.py) is refused.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

# One persistent compilation cache for the whole run, subprocesses included (they inherit
# the variables): the suite compiles the same tiny programs many times over, from fresh
# jit wrappers (a Trainer per test), in command-line subprocesses and in each process of
# the multi-host test, and a cache hit skips XLA's compilation. DSVL_TEST_COMPILE_CACHE=0
# turns it off (every program compiled afresh).
if (
    os.environ.get("DSVL_TEST_COMPILE_CACHE", "1") != "0"
    and "JAX_COMPILATION_CACHE_DIR" not in os.environ
):
  import atexit  # noqa: E402
  import shutil  # noqa: E402
  import tempfile  # noqa: E402

  _cache_dir = tempfile.mkdtemp(prefix="dsvl_test_jax_cache_")
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import pytest  # noqa: E402

from dsvl_jax.config.files import load_config  # noqa: E402
from dsvl_jax.models import VLMConfig  # noqa: E402


def tiny_config(family: str, **compute) -> VLMConfig:
  model = load_config(f"configs/tiny.py:{family}").model
  model.compute.update(compute)
  return VLMConfig.from_dict(model)


@pytest.fixture(params=["siglip", "hybrid"])
def family(request):
  return request.param


@pytest.fixture(scope="module")
def vl_json(tmp_path_factory):
  """DeepSeek's tokenizer.json laid out like the VL release (image token at 100015)."""
  from tokenizer_files import write_vl_layout

  return write_vl_layout(tmp_path_factory.mktemp("vl"))


@pytest.fixture(scope="module")
def tok(vl_json):
  from tokenizer_files import real_config

  from dsvl_jax.processor.tokenizer import Tokenizer

  return Tokenizer.from_file(vl_json, real_config())
