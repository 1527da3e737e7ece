"""Peak host memory of importing a full-size checkpoint (issue: streaming conversion).

  python experiments/bench_convert_memory.py [--config configs/deepseek_vl_1_3b.py]
      [--storage bfloat16] [--dtype float32] [--workdir /tmp/dsvl_mem]

1. Writes a randomly initialised full-size checkpoint in the transformers layout
   (safetensors, 2 GB shards + index, `--storage` dtype like the released files).
2. Runs `python -m convert import` on it in a child process and reads the child's peak
   resident set size (getrusage RUSAGE_CHILDREN), next to the parameter bytes.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
from flax import traverse_util

from dsvl_jax.checkpoint.configs import to_hf
from dsvl_jax.checkpoint.convert import _torch_shapes
from dsvl_jax.checkpoint.mapping import param_specs
from dsvl_jax.checkpoint.safetensors_io import write_safetensors
from dsvl_jax.config.files import load_config
from dsvl_jax.models import VLMConfig
from dsvl_jax.models.init import abstract_params, count_params


def random_tensors(cfg: VLMConfig, dtype: np.dtype, seed: int = 0):
  rng = np.random.default_rng(seed)
  shapes = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(abstract_params(cfg)).items()}
  for spec in param_specs(cfg, "hf"):
    torch_shapes = _torch_shapes(spec, shapes[spec.path])
    for keys in spec.keys:
      for key, shape in zip(keys, torch_shapes):
        yield key, (0.02 * rng.standard_normal(shape, np.float32)).astype(dtype)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/deepseek_vl_1_3b.py")
  parser.add_argument("--storage", default="bfloat16", choices=("float32", "bfloat16"))
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--workdir", default="/tmp/dsvl_mem")
  parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint")
  args = parser.parse_args()
  import ml_dtypes  # pylint: disable=g-import-not-at-top

  storage = np.dtype(ml_dtypes.bfloat16) if args.storage == "bfloat16" else np.dtype(np.float32)

  cfg = VLMConfig.from_dict(load_config(args.config).model)
  work = pathlib.Path(args.workdir)
  shutil.rmtree(work, ignore_errors=True)
  src, dst = work / "hf", work / "ours"
  src.mkdir(parents=True)
  t0 = time.perf_counter()
  files = write_safetensors(random_tensors(cfg, storage), src, 2 * 10**9)
  (src / "config.json").write_text(json.dumps(to_hf(cfg, args.storage), indent=2))
  gen_s = time.perf_counter() - t0

  t0 = time.perf_counter()
  subprocess.run(
      [
          sys.executable,
          "-m",
          "convert",
          "import",
          "--src",
          str(src),
          "--dst",
          str(dst),
          "--dtype",
          args.dtype,
          "--quiet",
      ],
      check=True,
      cwd=pathlib.Path(__file__).resolve().parent.parent,
  )
  import_s = time.perf_counter() - t0
  peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
  n = count_params(abstract_params(cfg))
  param_bytes = n * np.dtype(args.dtype if args.dtype == "float32" else ml_dtypes.bfloat16).itemsize
  print(
      "\n| model | stored as | imported as | parameters | parameter bytes | peak RSS | "
      "peak / parameter bytes | import s |"
  )
  print("|---|---|---|---|---|---|---|---|")
  print(
      f"| {pathlib.Path(args.config).stem} | {args.storage}, {sum(f.endswith('.safetensors') for f in files)} shards | "
      f"{args.dtype} | {n:,} | {param_bytes / 1e9:.2f} GB | {peak / 1e9:.2f} GB | "
      f"{peak / param_bytes:.2f}x | {import_s:.0f} |"
  )
  print(f"(generating the random checkpoint took {gen_s:.0f}s)")
  if not args.keep:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
