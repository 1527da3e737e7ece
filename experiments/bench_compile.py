"""Compile time of the language model vs depth (nn.scan keeps it flat).

  python experiments/bench_compile.py [--batch 2 --seq 128]

Lowers and compiles (never runs) the forward pass and the gradient of a scalar loss for
the tiny LLM and the 1.3B-width LLM at several depths, from abstract parameters
(jax.eval_shape: nothing allocated), and prints a markdown table with the ratio of each
compile time to the 2-layer one.
"""

from __future__ import annotations

import argparse
import time

import jax

from dsvl_jax.config.files import load_config
from dsvl_jax.models import VLMConfig
from dsvl_jax.models.init import lower_llm


def measure(cfg: VLMConfig, num_layers: int, grad: bool, batch: int, seq: int):
  t0 = time.perf_counter()
  lowered = lower_llm(cfg, num_layers, grad, batch, seq)
  t1 = time.perf_counter()
  lowered.compile()
  t2 = time.perf_counter()
  return t1 - t0, t2 - t1, len(lowered.as_text())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seq", type=int, default=128)
  args = parser.parse_args()
  models = [
      ("tiny", "configs/tiny.py", (2, 8, 24)),
      ("1.3B width", "configs/deepseek_vl_1_3b.py", (2, 24)),
  ]
  print(
      f"jax {jax.__version__}, {jax.devices()[0].platform}, batch {args.batch}, "
      f"seq {args.seq}\n"
  )
  print("| model | pass | layers | lower s | compile s | compile / 2-layer | HLO chars |")
  print("|---|---|---|---|---|---|---|")
  for label, path, depths in models:
    cfg = VLMConfig.from_dict(load_config(path).model)
    for grad in (False, True):
      base = None
      for depth in depths:
        lower_s, compile_s, chars = measure(cfg, depth, grad, args.batch, args.seq)
        base = base or compile_s
        print(
            f"| {label} | {'grad' if grad else 'forward'} | {depth} | {lower_s:.2f} | "
            f"{compile_s:.2f} | {compile_s / base:.2f}x | {chars} |",
            flush=True,
        )


if __name__ == "__main__":
  main()
