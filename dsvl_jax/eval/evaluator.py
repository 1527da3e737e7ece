"""The one evaluation interface: every set of `config.eval.sets`, for one model config.

`--config.mode=eval` calls it once; the trainer calls the same object every
`train.eval_every` steps, so any set a user can evaluate, a public benchmark included,
can run during training:

  evaluator = Evaluator(model_cfg, tokenizer, config.eval)   # sets loaded and checked
  results = evaluator(params, outdir)    # {set name: metrics}
  log(flat_metrics(results))             # {"eval/val/mc_accuracy": 0.61, ...}

A set is an item jsonl or a `textmc` release, scored by option likelihood
(likelihood.py), or '<benchmark>:<path>' of a benchmark answered by generation
(harness.py: predictions and a summary per set in `outdir`). Sets are loaded and
prompts tokenised at construction, so a bad set fails at start-up; one answer
generator serves every set and its compiled functions are reused across calls.
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Any, Mapping

import jax

from dsvl_jax.config.schema import ConfigError
from dsvl_jax.eval.benchmarks import registry
from dsvl_jax.eval.benchmarks.base import BenchItem, Benchmark
from dsvl_jax.eval.eval_config import EvalConfig
from dsvl_jax.eval.generation import AnswerGenerator
from dsvl_jax.eval.judge import Judge
from dsvl_jax.eval.likelihood import LikelihoodSets, SetSource
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.processor.tokenizer import Tokenizer

ITEM_MAX_NEW_TOKENS = 32  # exact-match answers of item-jsonl sets (eval.max_new_tokens=0)

_NOT_HEADLINE = (
    "seconds",
    "num_items",
    "unparsed",
    "fallbacks",
    "judged",
    "generated_now",
    "chance_accuracy",
)


class Evaluator:
  """Evaluates parameters of one model config on fixed sets."""

  def __init__(
      self,
      cfg: VLMConfig,
      tokenizer: Tokenizer,
      eval_cfg: EvalConfig | Any,
      sets: Mapping[str, SetSource] | None = None,
      *,
      mesh: jax.sharding.Mesh | None = None,
      lockstep: bool = False,
  ):
    """eval_cfg: an EvalConfig or `config.eval` (ConfigDict). sets: name -> a spec
    ('<benchmark>:<path>' or an item jsonl path) or a list of items; default
    eval_cfg.sets. mesh: the answer generator's rows are split over its devices.
    lockstep: every process answers every benchmark item (the trainer's parameters
    are sharded across processes), without resuming, process 0 writing; otherwise
    processes split each benchmark's items and a rerun resumes from `outdir`."""
    if not isinstance(eval_cfg, EvalConfig):
      eval_cfg = EvalConfig.from_dict(eval_cfg)
    self.cfg, self.tokenizer, self.eval_cfg, self.lockstep = cfg, tokenizer, eval_cfg, lockstep
    sets = dict(eval_cfg.sets) if sets is None else dict(sets)
    if not sets:
      raise ConfigError("config field 'eval.sets': no evaluation sets configured")
    likelihood: dict[str, SetSource] = {}
    modules: dict[str, Any] = {}  # likelihood sets read from a public release
    self.benchmarks: dict[str, tuple[Benchmark, str, list[BenchItem]]] = {}
    for name, src in sets.items():
      kind, path = registry.split_spec(src) if isinstance(src, str) else (None, src)
      if kind is None:
        likelihood[name] = path
      elif kind in registry.LIKELIHOOD:
        module = registry.get(kind)
        options = registry.load_options(module, name, eval_cfg.options(name))
        likelihood[name] = module.load(path, **{"shots": eval_cfg.few_shot, **options})
        modules[name] = module
      else:
        bench = registry.get(kind)
        options = registry.load_options(bench, name, eval_cfg.options(name))
        items = bench.load(path, **options)[: eval_cfg.max_items or None]
        self.benchmarks[name] = (bench, path, items)
    self.judge = judge_from(eval_cfg)
    needs = [n for n, (b, _, _) in self.benchmarks.items() if getattr(b, "JUDGE", "") == "required"]
    if needs and self.judge is None:
      raise ConfigError(
          f"config field 'eval.judge_url': sets {needs} are graded by an LLM judge; give an "
          "OpenAI-compatible endpoint (eval.judge_url, eval.judge_model, eval.judge_key_env)"
      )
    self.order = list(sets)  # results in the order the sets were given
    self.answerer = (
        AnswerGenerator(
            cfg,
            tokenizer,
            eval_cfg.batch_size,
            eval_cfg.max_new_tokens or ITEM_MAX_NEW_TOKENS,
            eval_cfg.length_bucket,
            mesh=mesh,
            share_prefixes=eval_cfg.share_prefixes,
        )
        if eval_cfg.generate or self.benchmarks
        else None
    )
    self.likelihood = (
        LikelihoodSets(
            cfg,
            tokenizer,
            eval_cfg,
            likelihood,
            self.answerer if eval_cfg.generate else None,
            modules,
        )
        if likelihood
        else None
    )

  def __call__(self, params, outdir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """{set name: metrics}: a likelihood set's as `LikelihoodSets.__call__` describes, a
    benchmark's its summary (harness.run_benchmark). outdir: where benchmark sets write
    predictions and summaries (required when there are any)."""
    if self.benchmarks and outdir is None:
      raise ValueError(f"benchmark sets {sorted(self.benchmarks)} need an output directory")
    if self.answerer is not None:
      self.answerer.set_params(params)
    results = self.likelihood(params) if self.likelihood is not None else {}
    for name, (bench, path, items) in self.benchmarks.items():
      results[name] = self._benchmark(name, bench, path, items, pathlib.Path(outdir))
    return {name: results[name] for name in self.order}

  def _benchmark(self, name, bench, path, items, outdir: pathlib.Path) -> dict[str, Any]:
    from dsvl_jax.eval.harness import run_benchmark  # pylint: disable=g-import-not-at-top

    if self.lockstep:
      split = dict(resume=False, write=jax.process_index() == 0)
    else:
      barrier = None
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

        barrier = functools.partial(multihost_utils.sync_global_devices, "eval predictions")
      split = dict(
          process_index=jax.process_index(), process_count=jax.process_count(), barrier=barrier
      )
    return run_benchmark(
        name,
        bench,
        path,
        self.answerer,
        self.tokenizer,
        self.cfg,
        outdir,
        system_prompt=self.eval_cfg.system_prompt,
        progress=self.eval_cfg.progress,
        items=items,
        max_new_tokens=self.eval_cfg.max_new_tokens,
        judge=self.judge,
        **split,
    )


def judge_from(eval_cfg: EvalConfig) -> Judge | None:
  """The configured judge (eval.judge_url; its key from eval.judge_key_env), or None."""
  if not eval_cfg.judge_url:
    return None
  key = os.environ.get(eval_cfg.judge_key_env, "") if eval_cfg.judge_key_env else ""
  return Judge(
      eval_cfg.judge_url, eval_cfg.judge_model, key, max_tokens_cap=eval_cfg.judge_max_tokens
  )


def evaluate(
    cfg: VLMConfig,
    params,
    tokenizer: Tokenizer,
    eval_cfg: EvalConfig | Any,
    sets: Mapping[str, SetSource] | None = None,
    outdir: str | os.PathLike | None = None,
) -> dict[str, dict[str, Any]]:
  """One-shot: {set name: metrics}; see `Evaluator` (build that to evaluate repeatedly)."""
  return Evaluator(cfg, tokenizer, eval_cfg, sets)(params, outdir)


def headline(metrics: Mapping[str, Any]) -> dict[str, float]:
  """A set's main numbers: a likelihood set's accuracies, a benchmark's top-level
  scores (not per category, counts or timings)."""
  if "benchmark" not in metrics:
    return {k: metrics[k] for k in ("mc_accuracy", "exact_match") if k in metrics}
  return {
      k: v
      for k, v in metrics.items()
      if isinstance(v, float) and "/" not in k and k not in _NOT_HEADLINE
  }


def flat_metrics(
    results: Mapping[str, Mapping[str, Any]], prefix: str = "eval"
) -> dict[str, float]:
  """Scalars for a metrics logger: {"eval/<set>/<metric>[/<type>]": value}."""
  flat: dict[str, float] = {}
  for name, m in results.items():
    for key, value in m.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        flat[f"{prefix}/{name}/{key}"] = float(value)
      elif isinstance(value, Mapping):
        for sub, v in value.items():
          flat[f"{prefix}/{name}/{key}/{sub}"] = float(v)
  return flat
