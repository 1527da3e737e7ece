"""Benchmark name -> its module (imported on use: MMMU's pyarrow only when asked for)."""

from __future__ import annotations

import importlib

from dsvl_jax.eval.benchmarks.base import Benchmark, LikelihoodBenchmark

MODULES = {
    "mmbench": "dsvl_jax.eval.benchmarks.mmbench",  # MMBench EN/CN dev TSV, CircularEval
    "seedbench": "dsvl_jax.eval.benchmarks.seedbench",  # SEED-Bench image part
    "pope": "dsvl_jax.eval.benchmarks.pope",  # POPE random / popular / adversarial
    "scienceqa": "dsvl_jax.eval.benchmarks.scienceqa",  # ScienceQA-IMG
    "mmmu": "dsvl_jax.eval.benchmarks.mmmu",  # MMMU dev / validation parquet
    "ocrbench": "dsvl_jax.eval.benchmarks.ocrbench",  # OCRBench
    "textmc": "dsvl_jax.eval.benchmarks.textmc",  # text MC by likelihood (MMLU, HellaSwag)
}
LIKELIHOOD = ("textmc",)  # scored by option likelihood, not generation


def get(name: str) -> Benchmark | LikelihoodBenchmark:
  """The module of benchmark `name`, checked against its protocol (base.py)."""
  if name not in MODULES:
    raise ValueError(f"unknown benchmark {name!r}; known: {sorted(MODULES)}")
  module = importlib.import_module(MODULES[name])
  protocol = LikelihoodBenchmark if name in LIKELIHOOD else Benchmark
  if not isinstance(module, protocol):
    raise TypeError(f"{MODULES[name]} does not provide every member of {protocol.__name__}")
  return module


def split_spec(spec: str) -> tuple[str | None, str]:
  """'mmbench:/data/MMBench_DEV_EN.tsv' -> ('mmbench', path); a plain path (an item jsonl,
  BUILD.md "Evaluation") -> (None, path)."""
  head, sep, rest = spec.partition(":")
  if sep and head in MODULES:
    return head, rest
  return None, spec
