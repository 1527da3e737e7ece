"""Peak host memory of importing a full-size checkpoint (streaming conversion), float or
quantised (issue 29: a 1.3B int4 import never holds the float32 model).

  python experiments/bench_convert_memory.py [--config configs/deepseek_vl_1_3b.py]
      [--layout original|hf] [--storage bfloat16] [--dtype float32]
      [--quantize none|int8|int4|nf4] [--quant-block 64] [--workdir /tmp/dsvl_mem]

1. Writes a randomly initialised full-size checkpoint in `--layout` (the original
   release's, or transformers'; safetensors, 2 GB shards + index, `--storage` dtype like
   the released files).
2. Runs `python -m convert import [--quantize ...]` on it in a child process and reads
   the child's peak resident set size (getrusage RUSAGE_CHILDREN), beside the bytes of
   the tree it saved (orbax's metadata of the written checkpoint) and the bound we claim,
   saved + baseline + max(reading, saving):

   saved     the output tree: all of it is on the (CPU) device when orbax writes it
   baseline  the peak RSS of a child that imports the converter and starts JAX
   reading   the largest leaf's host copy: each finished leaf is built in numpy (or its
             source tensors, when larger), then copied to the device, and the host copy
             dropped; plus one layer of the largest quantised stack in float32 and its
             source tensor (stacks are quantised one layer at a time)
   saving    orbax's bytes in flight (params_io.save's save_concurrent_gb: its host
             copies of what it writes, at least the largest leaf)

   File pages of the safetensors shards count in RSS while they are mapped. The
   converter maps one tensor at a time (SafetensorsSource.get opens a fresh handle,
   copies the tensor out and unmaps it), so they are a source tensor's bytes, inside
   "reading".
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import subprocess
import sys
import time

import jax
import ml_dtypes
import numpy as np
from flax import traverse_util

from dsvl_jax.checkpoint import params_io
from dsvl_jax.checkpoint.configs import to_hf, to_original
from dsvl_jax.checkpoint.convert import _torch_shapes
from dsvl_jax.checkpoint.mapping import param_specs
from dsvl_jax.checkpoint.safetensors_io import write_safetensors
from dsvl_jax.config.files import load_config
from dsvl_jax.models import VLMConfig, quant_tree
from dsvl_jax.models.init import abstract_params, count_params
from dsvl_jax.runtime.perf import processor_name

REPO = pathlib.Path(__file__).resolve().parent.parent
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def random_tensors(cfg: VLMConfig, layout: str, dtype: np.dtype, seed: int = 0):
  rng = np.random.default_rng(seed)
  shapes = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(abstract_params(cfg)).items()}
  for spec in param_specs(cfg, layout):
    torch_shapes = _torch_shapes(spec, shapes[spec.path])
    for keys in spec.keys:
      for key, shape in zip(keys, torch_shapes):
        yield key, (0.02 * rng.standard_normal(shape, np.float32)).astype(dtype)


def saved_bytes(ckpt: pathlib.Path) -> tuple[int, int]:
  """(bytes, largest leaf's bytes) of the tree orbax saved, from its metadata."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(ckpt / params_io.PARAMS_DIR).item_metadata.tree
  sizes = [math.prod(m.shape) * np.dtype(m.dtype).itemsize for m in jax.tree.leaves(meta)]
  return sum(sizes), max(sizes)


def in_flight(qcfg: VLMConfig, storage: np.dtype, dtype: np.dtype) -> dict[str, int]:
  """{term: bytes} of the bound's in-flight terms (module docstring)."""
  float_tree = traverse_util.flatten_dict(abstract_params(quant_tree.float_config(qcfg)), sep="/")
  stored = traverse_util.flatten_dict(abstract_params(qcfg), sep="/")
  nbytes = lambda a: math.prod(a.shape) * np.dtype(a.dtype).itemsize
  largest = max(nbytes(a) for a in stored.values())
  source = max(math.prod(a.shape) for a in float_tree.values()) * storage.itemsize
  layer = max(
      (math.prod(a.shape[1:]) for p, a in float_tree.items() if p + "_q/codes" in stored),
      default=0,
  )
  return {
      "reading: the largest leaf's host copy (or source)": max(largest, source),
      "reading: one layer of a quantised stack, float32 + source": layer
      * (dtype.itemsize + storage.itemsize),
      "saving: orbax's bytes in flight (save_concurrent_gb)": max(
          params_io.SAVE_CONCURRENT_GB, math.ceil(largest / 1e9)
      )
      * 10**9,
  }


def child_peak(args: list[str]) -> int:
  """Peak RSS (bytes) of `python args` in a fresh child (a process of its own, so that
  RUSAGE_CHILDREN reads this one alone)."""
  code = (
      "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
      "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
  )
  out = subprocess.run(
      [sys.executable, "-c", code, *[sys.executable, *args]],
      check=True,
      cwd=REPO,
      capture_output=True,
      text=True,
  )
  return int(out.stdout.split()[-1]) * 1024  # KiB on Linux


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/deepseek_vl_1_3b.py")
  parser.add_argument("--layout", default="original", choices=("original", "hf"))
  parser.add_argument("--storage", default="bfloat16", choices=tuple(DTYPES))
  parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES))
  parser.add_argument("--quantize", default="none", choices=("none", "int8", "int4", "nf4"))
  parser.add_argument("--quant-block", type=int, default=64)
  parser.add_argument("--workdir", default="/tmp/dsvl_mem")
  parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint")
  args = parser.parse_args()
  storage, dtype = DTYPES[args.storage], DTYPES[args.dtype]

  cfg = VLMConfig.from_dict(load_config(args.config).model)
  qcfg = cfg
  if args.quantize != "none":
    qcfg = quant_tree.with_quant(cfg, args.quantize, args.quant_block)
  work = pathlib.Path(args.workdir)
  shutil.rmtree(work, ignore_errors=True)
  src, dst = work / args.layout, work / "ours"
  src.mkdir(parents=True)
  t0 = time.perf_counter()
  files = write_safetensors(random_tensors(cfg, args.layout, storage), src, 2 * 10**9)
  config = to_hf if args.layout == "hf" else to_original
  (src / "config.json").write_text(json.dumps(config(cfg, args.storage), indent=2))
  gen_s = time.perf_counter() - t0

  baseline = child_peak(
      ["-c", "import jax, convert.__main__; jax.devices(); jax.numpy.zeros(1).block_until_ready()"]
  )
  t0 = time.perf_counter()
  command = ["-m", "convert", "import", "--src", str(src), "--dst", str(dst)]
  command += ["--dtype", args.dtype, "--quantize", args.quantize]
  command += ["--quant-block", str(args.quant_block), "--quiet"]
  peak = child_peak(command)
  import_s = time.perf_counter() - t0
  out_bytes, _ = saved_bytes(dst)
  terms = in_flight(qcfg, storage, dtype)
  reading = sum(v for k, v in terms.items() if k.startswith("reading"))
  saving = sum(v for k, v in terms.items() if k.startswith("saving"))
  bound = out_bytes + baseline + max(reading, saving)
  n = count_params(abstract_params(cfg))
  float32_bytes = n * 4
  shards = sum(f.endswith(".safetensors") for f in files)
  what = (
      args.dtype
      if args.quantize == "none"
      else f"{args.quantize} (block {args.quant_block}), rest {args.dtype}"
  )
  print(f"\nprocessor: {processor_name()}")
  print(
      "\n| model | layout, stored as | imported as | saved bytes | bound | peak RSS | "
      "peak - saved | peak / float32 model | import s |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  print(
      f"| {pathlib.Path(args.config).stem} | {args.layout}, {args.storage}, {shards} shards | "
      f"{what} | {out_bytes / 1e9:.2f} GB | {bound / 1e9:.2f} GB | {peak / 1e9:.2f} GB | "
      f"{(peak - out_bytes) / 1e9:.2f} GB | {peak / float32_bytes:.2f}x of "
      f"{float32_bytes / 1e9:.2f} GB | {import_s:.0f} |"
  )
  print("\nThe bound, term by term:\n\n| term | GB |\n|---|---|")
  print(f"| saved bytes (the output tree) | {out_bytes / 1e9:.3f} |")
  for term, size in terms.items():
    print(f"| {term} | {size / 1e9:.3f} |")
  print(f"| process baseline (peak RSS of a child that starts JAX) | {baseline / 1e9:.3f} |")
  print(f"| **bound**: saved + baseline + max(reading, saving) | **{bound / 1e9:.3f}** |")
  print(f"\n(generating the random checkpoint took {gen_s:.0f}s; {n:,} parameters)")
  if not args.keep:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
