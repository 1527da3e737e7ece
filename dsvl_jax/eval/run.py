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

from dsvl_jax.config_schema import ConfigError
from dsvl_jax.data.encoding import TokenLayout, make_tokenizer
from dsvl_jax.data.tokenizer import EOS_TOKEN, Tokenizer
from dsvl_jax.eval.eval_config import EvalConfig, default_config
from dsvl_jax.eval.evaluator import evaluate
from dsvl_jax.models.config import VLMConfig


def load_model(config: ml_collections.ConfigDict, eval_cfg: EvalConfig) -> tuple[VLMConfig, Any]:
  """eval.checkpoint through dsvl_jax.load, or a random init of config.model (config.seed)."""
  if eval_cfg.checkpoint:
    import dsvl_jax  # pylint: disable=g-import-not-at-top
    loaded = dsvl_jax.load(eval_cfg.checkpoint, dtype=eval_cfg.dtype)
    return loaded.config, loaded.params
  from dsvl_jax.models.init import init_params  # pylint: disable=g-import-not-at-top
  cfg = VLMConfig.from_dict(config.model)
  return cfg, init_params(cfg, jax.random.key(config.seed))


def load_tokenizer(eval_cfg: EvalConfig, cfg: VLMConfig) -> Tokenizer:
  """eval.tokenizer, else the checkpoint directory's own files."""
  spec = eval_cfg.tokenizer or eval_cfg.checkpoint
  if not spec:
    raise ConfigError("config field 'eval.tokenizer': a tokenizer.json / .model / "
                      "'builtin:bytes' is needed (or an eval.checkpoint holding one)")
  tokenizer = make_tokenizer(spec, TokenLayout.of(cfg))
  for text, want in ((EOS_TOKEN, cfg.eos_token_id), (tokenizer.image_token, cfg.image_token_id)):
    got = tokenizer.encode(text, add_bos=False)
    if got != [want]:  # the template and the image blocks rely on both
      raise ConfigError(f"config field 'eval.tokenizer': {spec!r} encodes {text!r} to {got}, "
                        f"the model config needs [{want}]; use the checkpoint's own tokenizer")
  return tokenizer


def format_table(results: dict[str, dict[str, Any]]) -> str:
  lines = [f"{'set':<20} {'items':>6} {'chance':>7} {'mc acc':>7} {'exact':>7}"]
  for name, m in results.items():
    exact = f"{m['exact_match']:7.3f}" if "exact_match" in m else f"{'-':>7}"
    lines.append(f"{name:<20} {m['num_items']:>6} {m['chance_accuracy']:7.3f} "
                 f"{m['mc_accuracy']:7.3f} {exact}")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str | None = None) -> dict[str, Any]:
  eval_cfg = EvalConfig.from_dict(config.eval if "eval" in config else default_config())
  if not eval_cfg.sets:  # before loading any weights
    raise ConfigError("config field 'eval.sets': no evaluation sets; e.g. "
                      "--config.eval.sets='{\"val\": \"data/val.jsonl\"}'")
  cfg, params = load_model(config, eval_cfg)
  tokenizer = load_tokenizer(eval_cfg, cfg)
  t0 = time.perf_counter()
  results = evaluate(cfg, params, tokenizer, eval_cfg)
  print(format_table(results))
  print(f"({time.perf_counter() - t0:.1f}s; option score: {eval_cfg.normalize} log-likelihood"
        f"{' incl. EOS' if eval_cfg.score_eos else ''})")
  if workdir:
    path = pathlib.Path(workdir) / "eval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {path}")
  return results
