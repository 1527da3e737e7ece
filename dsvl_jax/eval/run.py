"""`--config.mode=eval`: evaluate a checkpoint (or a random init) on `config.eval.sets`.

  python -m dsvl_jax.main --config=configs/deepseek_vl_7b.py --config.mode=eval \
      --config.eval.checkpoint=ckpt/7b-chat --config.eval.sets='{"val": "data/val.jsonl"}' \
      --workdir=out/eval

Prints one line per set and writes workdir/eval.json ({set name: metrics}).
"""

from __future__ import annotations

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
from dsvl_jax.eval.evaluator import Evaluator, headline
from dsvl_jax.eval.judge import JudgeError
from dsvl_jax.infer.load import load_model, load_tokenizer


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
  """Every set of config.eval.sets through `Evaluator` (the trainer's eval_every uses the
  same); benchmark sets write predictions and a summary per set into the workdir and
  resume from them."""
  eval_cfg = EvalConfig.from_dict(config.eval if "eval" in config else default_config())
  if not eval_cfg.sets:  # before loading any weights
    raise ConfigError(
        "config field 'eval.sets': no evaluation sets; e.g. "
        '--config.eval.sets=\'{"val": "data/val.jsonl"}\' or '
        '\'{"mmb": "mmbench:data/MMBench_DEV_EN.tsv"}\''
    )
  kinds = [registry.split_spec(spec)[0] for _, spec in eval_cfg.sets]
  if any(k is not None and k not in registry.LIKELIHOOD for k in kinds) and not workdir:
    raise ConfigError("--workdir is required for benchmark sets (predictions, summaries, resuming)")
  cfg, params = load_model(config, eval_cfg, "eval")
  tokenizer = load_tokenizer(eval_cfg, cfg, "eval")
  mesh = None
  if eval_cfg.data_parallel and jax.local_device_count() > 1:
    # Each process splits its batches over its own devices; processes split the items.
    mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("rows",))
  evaluator = Evaluator(cfg, tokenizer, eval_cfg, mesh=mesh)
  t0 = time.perf_counter()
  try:
    results = evaluator(params, workdir)
  except JudgeError as e:  # the answers so far are in the workdir: a rerun resumes
    raise SystemExit(
        f"error: {e}; the answers so far are kept in {workdir}, rerun to resume"
    ) from None
  likelihood = {n: m for n, m in results.items() if "benchmark" not in m}
  if likelihood:
    print(format_table(likelihood))
    print(
        f"({time.perf_counter() - t0:.1f}s; option score: {eval_cfg.normalize} "
        f"log-likelihood{' incl. EOS' if eval_cfg.score_eos else ''})"
    )
  for name, m in results.items():
    if "benchmark" in m:
      print(
          f"{name} ({m['benchmark']}): "
          + ", ".join(f"{k} {v:.4g}" for k, v in headline(m).items())
          + f"; {m['num_items']} items, {m['unparsed']} unparsed, "
          f"{m['generated_now']} generated now"
      )
  if workdir:
    path = pathlib.Path(workdir) / "eval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {path}")
  return results
