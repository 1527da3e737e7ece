"""Compile a stage config's real sharded train step for a TPU slice, on this CPU host.

  python experiments/aot_compile.py --config=configs/deepseek_vl_7b.py:stage2 \
      --topology=v5p:4x4x4 [--modality=multimodal|text|both] [--step_time=2.0] \
      [--config.train.grad_accum_steps=9 ...]

Needs libtpu (requirements-test.txt); no TPU and no allocation: the step is lowered from
ShapeDtypeStructs on the slice's abstract devices (dsvl_jax/train/aot.py). Prints the
trainer's start-up memory report, then per chip: arguments, outputs, temporaries and
their total against the chip's HBM, XLA's FLOPs beside the MFU formula's, and the MFU a
given step time would mean.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<file>.py[:arg]")
_TOPOLOGY = flags.DEFINE_string("topology", "v5p:2x2x2", "TPU slice, e.g. v5p:4x4x4, v5e:16x16")
_MODALITY = flags.DEFINE_enum(
    "modality", "multimodal", ["multimodal", "text", "both"], "which step program to compile"
)
_STEP_TIME = flags.DEFINE_float("step_time", 0.0, "seconds per step to quote an MFU for")


def main(argv):
  del argv
  from dsvl_jax.train import aot  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if not config.data.get("tokenizer"):
    config.data.tokenizer = "builtin:bytes"  # shapes only: no tokenizer is read
  modalities = ("multimodal", "text") if _MODALITY.value == "both" else (_MODALITY.value,)
  c = config.model.compute
  path = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--config=")), "")
  print(
      f"{path}: compute {c.dtype} (params "
      f"{c.param_dtype}), attention {c.attention_impl}, remat {c.remat_policy}; global "
      f"batch {config.data.global_batch_size} x {config.data.seq_len}, "
      f"{config.train.grad_accum_steps} micro-batches; mesh {tuple(config.mesh.shape)}"
  )
  import jax  # pylint: disable=g-import-not-at-top

  for i, modality in enumerate(modalities):
    try:
      r = aot.compile_step(config, _TOPOLOGY.value, modality)
    except jax.errors.JaxRuntimeError as e:  # the compiler's own verdict, in its words
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      print(f"{_TOPOLOGY.value}, {modality} step: does not fit: {str(e).splitlines()[0]}")
      continue
    if i == 0:
      print(r.report)
    rows = config.data.global_batch_size // (r.mesh["data"] * r.mesh["fsdp"])
    print(f"per-chip batch: {rows} rows, {rows // config.train.grad_accum_steps} per micro-batch")
    print(r.table(_STEP_TIME.value or None))
    print()


if __name__ == "__main__":
  # Before the flags load the config file, which may import JAX (absl and ml_collections
  # do not).
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile for TPU; run nothing anywhere
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # beside tests or other compiles
  flags.mark_flags_as_required(["config"])
  app.run(main)
