"""`--config.mode=eval`: evaluate a checkpoint (or a random init) on `config.eval.sets`.

  python -m dsvl_jax.main --config=configs/deepseek_vl_7b.py --config.mode=eval \
      --config.eval.checkpoint=ckpt/7b-chat --config.eval.sets='{"val": "data/val.jsonl"}' \
      --workdir=out/eval

Prints one line per set and writes workdir/eval.json ({set name: metrics}).
"""

from __future__ import annotations

import functools
import json
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from dsvl_jax.config.schema import ConfigError
from dsvl_jax.eval.benchmarks import registry
from dsvl_jax.eval.eval_config import EvalConfig, default_config
from dsvl_jax.infer.load import load_model, load_tokenizer
from dsvl_jax.models.config import VLMConfig
from dsvl_jax.processor.tokenizer import Tokenizer


def format_table(results: dict[str, dict[str, Any]]) -> str:
  lines = [f"{'set':<20} {'items':>6} {'chance':>7} {'mc acc':>7} {'exact':>7}"]
  for name, m in results.items():
    exact = f"{m['exact_match']:7.3f}" if "exact_match" in m else f"{'-':>7}"
    lines.append(
        f"{name:<20} {m['num_items']:>6} {m['chance_accuracy']:7.3f} "
        f"{m['mc_accuracy']:7.3f} {exact}"
    )
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict[str, Any]:
  """Item-jsonl sets are scored by option likelihood (and exact match); benchmark sets
  ('<benchmark>:<path>', eval/benchmarks) run through the generation harness, which
  writes predictions and a summary per set into the workdir and resumes from them."""
  eval_cfg = EvalConfig.from_dict(config.eval if "eval" in config else default_config())
  if not eval_cfg.sets:  # before loading any weights
    raise ConfigError(
        "config field 'eval.sets': no evaluation sets; e.g. "
        '--config.eval.sets=\'{"val": "data/val.jsonl"}\' or '
        '\'{"mmb": "mmbench:data/MMBench_DEV_EN.tsv"}\''
    )
  specs = {name: registry.split_spec(spec) for name, spec in eval_cfg.sets}
  bench_sets = {
      n: s for n, s in specs.items() if s[0] is not None and s[0] not in registry.LIKELIHOOD
  }
  if bench_sets and not workdir:
    raise ConfigError("--workdir is required for benchmark sets (predictions, summaries, resuming)")
  cfg, params = load_model(config, eval_cfg)
  tokenizer = load_tokenizer(eval_cfg, cfg, "eval")
  t0 = time.perf_counter()
  plain: dict[str, Any] = {}
  for n, (kind, p) in specs.items():
    if kind is None:
      plain[n] = p
    elif kind in registry.LIKELIHOOD:
      plain[n] = registry.get(kind).load(p, shots=eval_cfg.few_shot)[: eval_cfg.max_items or None]
  results: dict[str, Any] = {}
  if plain:
    from dsvl_jax.eval.evaluator import Evaluator  # pylint: disable=g-import-not-at-top

    results.update(Evaluator(cfg, tokenizer, eval_cfg, sets=plain)(params))
    print(format_table(results))
    print(
        f"({time.perf_counter() - t0:.1f}s; option score: {eval_cfg.normalize} "
        f"log-likelihood{' incl. EOS' if eval_cfg.score_eos else ''})"
    )
  if bench_sets:
    results.update(run_benchmarks(cfg, params, tokenizer, eval_cfg, bench_sets, workdir))
  if workdir:
    path = pathlib.Path(workdir) / "eval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {path}")
  return results


def run_benchmarks(
    cfg: VLMConfig,
    params,
    tokenizer: Tokenizer,
    eval_cfg: EvalConfig,
    sets: dict[str, tuple[str, str]],
    workdir: str,
) -> dict[str, Any]:
  from dsvl_jax.eval.generation import AnswerGenerator  # pylint: disable=g-import-not-at-top
  from dsvl_jax.eval.harness import run_benchmark  # pylint: disable=g-import-not-at-top

  mesh = None
  if eval_cfg.data_parallel and jax.local_device_count() > 1:
    # Each process splits its batches over its own devices; processes split the items.
    mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("rows",))
  answerer = AnswerGenerator(
      cfg,
      tokenizer,
      eval_cfg.batch_size,
      eval_cfg.max_new_tokens,
      eval_cfg.length_bucket,
      mesh=mesh,
      share_prefixes=eval_cfg.share_prefixes,
  )
  answerer.set_params(params)
  barrier = None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    barrier = functools.partial(multihost_utils.sync_global_devices, "eval predictions")
  out = {}
  for name, (kind, path) in sets.items():
    out[name] = run_benchmark(
        name,
        kind,
        path,
        answerer,
        tokenizer,
        cfg,
        workdir,
        system_prompt=eval_cfg.system_prompt,
        max_items=eval_cfg.max_items,
        progress=eval_cfg.progress,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        barrier=barrier,
    )
    headline = {
        k: v
        for k, v in out[name].items()
        if isinstance(v, float) and "/" not in k and k not in ("seconds", "num_items", "unparsed")
    }
    print(
        f"{name} ({kind}): "
        + ", ".join(f"{k} {v:.4g}" for k, v in headline.items())
        + f"; {out[name]['num_items']} items, {out[name]['unparsed']} unparsed, "
        f"{out[name]['generated_now']} generated now"
    )
  return out
