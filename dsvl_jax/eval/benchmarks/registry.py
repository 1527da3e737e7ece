"""Benchmark name -> its module (imported on use: MMMU's pyarrow only when asked for)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping

from dsvl_jax.config.schema import ConfigError
from dsvl_jax.eval.benchmarks.base import Benchmark, LikelihoodBenchmark

MODULES = {
    "mmbench": "dsvl_jax.eval.benchmarks.mmbench",  # MMBench EN/CN dev TSV, CircularEval
    "seedbench": "dsvl_jax.eval.benchmarks.seedbench",  # SEED-Bench image part
    "pope": "dsvl_jax.eval.benchmarks.pope",  # POPE random / popular / adversarial
    "scienceqa": "dsvl_jax.eval.benchmarks.scienceqa",  # ScienceQA-IMG
    "mmmu": "dsvl_jax.eval.benchmarks.mmmu",  # MMMU dev / validation parquet
    "ocrbench": "dsvl_jax.eval.benchmarks.ocrbench",  # OCRBench
    "cmmmu": "dsvl_jax.eval.benchmarks.cmmmu",  # CMMMU dev / val
    "mathvista": "dsvl_jax.eval.benchmarks.mathvista",  # MathVista testmini
    "mmvet": "dsvl_jax.eval.benchmarks.mmvet",  # MM-Vet, graded by an LLM judge
    "textmc": "dsvl_jax.eval.benchmarks.textmc",  # text MC by likelihood: either of
    "mmlu": "dsvl_jax.eval.benchmarks.mmlu",  # MMLU's CSV release (hendrycks/test)
    "hellaswag": "dsvl_jax.eval.benchmarks.hellaswag",  # HellaSwag rows (Rowan/hellaswag)
}
LIKELIHOOD = ("textmc", "mmlu", "hellaswag")  # scored by option likelihood, not generation


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


def load_options(module, set_name: str, options: Mapping[str, Any]) -> dict[str, Any]:
  """`options` (eval.set_options[set_name]) checked against the keyword parameters of
  the module's `load` (a one-line ConfigError naming the accepted ones)."""
  params = inspect.signature(module.load).parameters
  accepted = [n for n, p in list(params.items())[1:] if p.kind is p.POSITIONAL_OR_KEYWORD]
  unknown = sorted(set(options) - set(accepted))
  if unknown:
    raise ConfigError(
        f"config field 'eval.set_options.{set_name}': {module.NAME} has no option {unknown}; "
        f"its options: {accepted or 'none'}"
    )
  return dict(options)
