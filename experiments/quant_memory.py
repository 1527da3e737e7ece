"""Parameter memory of the released models at each weight format, from the real trees.

  python experiments/quant_memory.py [--targets llm,all] [--block 64]

The bytes are summed over `jax.eval_shape` of the model's own init (models/init.py
`abstract_params`) under each config: float32 and bfloat16 parameters, and the int8 /
int4 / nf4 trees of compute.quant (codes plus their float32 scales), so what is counted
is what `dsvl_jax.load` + `<section>.quantize` holds, not a formula. `llm` quantises the
LLM's projections (the default targets; embeddings, LM head, norms, towers and aligner
stay float); `all` adds the vision towers' blocks and the aligner.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from dsvl_jax.config.files import load_config
from dsvl_jax.models import VLMConfig
from dsvl_jax.models.init import abstract_params

TARGETS = {
    "llm": ("llm/layers*/*_proj",),
    "all": ("llm/layers*/*_proj", "vision/*", "aligner/*"),
}
MODELS = {"1.3B": "configs/deepseek_vl_1_3b.py", "7B": "configs/deepseek_vl_7b.py"}


def tree_bytes(cfg: VLMConfig) -> int:
  leaves = jax.tree.leaves(abstract_params(cfg))
  return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves))


def variant(cfg: VLMConfig, kind: str, targets: tuple[str, ...], block: int) -> VLMConfig:
  c = cfg.compute
  if kind in ("float32", "bfloat16"):
    return cfg.replace(compute=dataclasses.replace(c, param_dtype=kind))
  quant = dataclasses.replace(c.quant, kind=kind, block=block, targets=targets)
  return cfg.replace(compute=dataclasses.replace(c, param_dtype="bfloat16", quant=quant))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--targets", default="llm,all")
  ap.add_argument("--block", type=int, default=64)
  args = ap.parse_args()
  kinds = ("float32", "bfloat16", "int8", "int4", "nf4")
  print(
      "GiB of parameters (quantised kinds: codes + float32 scales per block of "
      f"{args.block}; what is not quantised in bfloat16)"
  )
  print("| model | quantised | " + " | ".join(kinds) + " |")
  print("|---|---|" + "---|" * len(kinds))
  for name, spec in MODELS.items():
    cfg = VLMConfig.from_dict(load_config(spec).model)
    for t in [t for t in args.targets.split(",") if t]:
      sizes = [tree_bytes(variant(cfg, k, TARGETS[t], args.block)) / 2**30 for k in kinds]
      print(f"| {name} | {t} | " + " | ".join(f"{s:.2f}" for s in sizes) + " |")


if __name__ == "__main__":
  main()
